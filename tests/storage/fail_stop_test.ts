/**
 * Fail-stop on a real disk failure: the Raft log fills a 1 MiB tmpfs until
 * SQLite reports SQLITE_FULL (tests/fixtures/storage_filler.ts), then a new
 * process opens the file on the still-full disk. The tmpfs is mounted in a
 * private mount namespace (`unshare -m`), which needs root; elsewhere the
 * test is ignored and says so.
 */

import { assert, assertEquals } from "../assert.ts";
import type { LogState } from "../fixtures/storage_log_state.ts";

const filler = new URL("../fixtures/storage_filler.ts", import.meta.url).pathname;

async function canMountPrivateTmpfs(): Promise<boolean> {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return false;
  const dir = Deno.makeTempDirSync();
  try {
    const probe = new Deno.Command("unshare", {
      args: ["-m", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
      stdout: "null",
      stderr: "null",
    });
    return (await probe.output()).success;
  } catch {
    return false; // no unshare
  } finally {
    Deno.removeSync(dir);
  }
}

const mountable = await canMountPrivateTmpfs();

Deno.test({
  name: mountable
    ? "a log whose disk fills mid-write fails stop, and the file opens with everything acknowledged"
    : "a log whose disk fills mid-write fails stop (ignored: needs root and unshare to mount a private tmpfs)",
  ignore: !mountable,
  async fn() {
    const mount = Deno.makeTempDirSync({ prefix: "blixard-full-disk-" });
    try {
      // One namespace for both processes: the tmpfs, and what is on it, goes
      // when the shell exits.
      const script = `mount -t tmpfs -o size=1m tmpfs "$1" || exit 3
        "$2" run -A "$3" fill "$1/raft.db" || exit 4
        echo "files $(ls "$1" | tr '\\n' ' ')"
        "$2" run -A "$3" read "$1/raft.db" || exit 5`;
      const out = await new Deno.Command("unshare", {
        args: ["-m", "sh", "-c", script, "sh", mount, Deno.execPath(), filler],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const report = `exit ${out.code}\nstdout:\n${stdout.slice(-3000)}\nstderr:\n${
        new TextDecoder().decode(out.stderr)
      }`;
      assert(out.success, report);

      const lines = stdout.trimEnd().split("\n");
      const field = (tag: string) =>
        lines.filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(tag.length + 1));
      const tries = field("try").map((l) => JSON.parse(l));
      const acked = new Set(field("ack").map(Number));
      assert(acked.size >= 10, `only ${acked.size} saves fit before the disk filled\n${report}`);

      const [failure] = field("failed").map((l) => JSON.parse(l));
      assertEquals(failure.code, "STORAGE_FAILURE", report);
      assert(failure.message.includes("raft.db"), `names the file: ${failure.message}`);
      assert(/\bsave\b/.test(failure.message), `names the operation: ${failure.message}`);
      assert(failure.message.includes("SQLITE_FULL"), `says why: ${failure.message}`);

      const refusals = field("refused").map((l) => JSON.parse(l));
      assertEquals(field("accepted"), [], "the log accepted a call after the failure");
      assertEquals(refusals.length, 3);
      for (const r of refusals) {
        assertEquals(r.code, "STORAGE_FAILURE");
        assert(/earlier save failed/.test(r.message), `says it failed earlier: ${r.message}`);
      }

      assertEquals(field("integrity"), ["ok"], report);
      const state: LogState = JSON.parse(field("state")[0]!);
      // The failed save may or may not have reached the file; every
      // acknowledged one must have, unchanged.
      const lastAcked = Math.max(...acked);
      const failedIndex = lastAcked + 1;
      assert(
        state.last === lastAcked || state.last === failedIndex,
        `last index ${state.last}, acknowledged up to ${lastAcked}`,
      );
      for (const t of tries.filter((t) => t.index <= state.last)) {
        assertEquals(state.entries[t.index - 1], [t.index, 1, 0, t.digest], `entry ${t.index}`);
      }
      assertEquals(state.hardState, [1, 1, tries[state.last - 1].commit]);
    } finally {
      Deno.removeSync(mount);
    }
  },
});
