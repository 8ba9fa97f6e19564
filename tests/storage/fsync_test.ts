/**
 * What a save costs in fsyncs, counted with strace on a real process
 * (tests/fixtures/storage_fsyncs.ts): an append is synced before `save()`
 * returns, every time; a save that only moves the commit index is not (the
 * storage contract allows it, as etcd's MustSync does), so a follower that
 * learns a commit index pays no fsync for it.
 */

import { assert } from "../assert.ts";
import { tempDir } from "./helpers.ts";

const fixture = new URL("../fixtures/storage_fsyncs.ts", import.meta.url).pathname;
const SAVES = 100;

/** Runs the fixture under strace; returns the fsync and fdatasync calls it made. */
async function fsyncsOf(mode: "commit" | "append"): Promise<number> {
  using dir = tempDir();
  const trace = `${dir.path}/strace.out`;
  const out = await new Deno.Command("strace", {
    args: [
      "-f",
      "-e",
      "trace=fsync,fdatasync",
      "-o",
      trace,
      Deno.execPath(),
      "run",
      "-A",
      fixture,
      `${dir.path}/raft.db`,
      mode,
      String(SAVES),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `strace ${mode}: ${stderr}`);
  const lines = (await Deno.readTextFile(trace)).split("\n");
  return lines.filter((l) => /\b(fsync|fdatasync)\(/.test(l)).length;
}

Deno.test("an append is fsynced every time; a save that only moves the commit index is not", async () => {
  const appends = await fsyncsOf("append");
  const commits = await fsyncsOf("commit");
  assert(appends >= SAVES, `${SAVES} appends made ${appends} fsyncs`);
  // Creating the file, the first save (entries, term and vote) and closing
  // sync a dozen times, whatever the count (12 here for 5, 100 or 200 saves).
  assert(commits <= 20, `${SAVES} commit-only saves made ${commits} fsyncs`);
});
