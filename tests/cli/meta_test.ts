/**
 * `blixard meta` against a real 3-node cluster (three `blixard node`
 * processes on loopback): writes through a follower, reads through another
 * node over gRPC and Iroh, compare-and-set, delete, list, request ids, and
 * every `--json` document checked against docs/cli.md.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { clusterFiles, startCluster, type TestCluster, type TestNode } from "./cluster_helpers.ts";
import { blixard, blixardJson as json } from "./helpers.ts";

const viaAddr = (n: TestNode) => ["--addr", n.addr];

Deno.test("meta: a cluster's metadata written and read through any member, as an operator scripts it", async (t) => {
  await using c = await clusterFiles([1, 2, 3]);
  const leader = c.node(await startCluster(c, [1, 2, 3]));
  const [f1, f2] = [...c.nodes.values()].filter((n) => n !== leader);
  const viaTicket = (n: TestNode) => ["--ticket", n.ticket, "--key", c.opKey];
  let blue = "";

  await t.step(
    "a put through a follower is read through the other follower and the leader, over gRPC and Iroh",
    async () => {
      const put = await json("meta put", [
        "meta",
        "put",
        "color",
        "blue",
        ...viaAddr(f1!),
        "--json",
      ]);
      blue = put.revision as string;
      assertMatch(blue, /^[1-9]\d*$/);
      const human = await blixard(["meta", "get", "color", ...viaAddr(f2!)]);
      assertEquals([human.code, human.stdout], [0, `color = "blue" (revision ${blue})\n`]);
      const viaIroh = await json("meta get", [
        "meta",
        "get",
        "color",
        ...viaTicket(leader),
        "--json",
      ]);
      assertEquals(viaIroh, {
        found: true,
        entry: { key: "color", value: "blue", revision: blue },
      });
    },
  );

  await t.step(
    "cas sets at the expected revision; at another it writes nothing, says the current one and exits 1",
    async () => {
      const set = await json("meta cas", [
        "meta",
        "cas",
        "color",
        "--expect",
        blue,
        "green",
        ...viaAddr(f2!),
        "--json",
      ]);
      assertEquals(set.succeeded, true);
      const green = set.revision as string;
      assert(BigInt(green) > BigInt(blue), `${green} after ${blue}`);

      const stale = await blixard([
        "meta",
        "cas",
        "color",
        "--expect",
        blue,
        "red",
        ...viaAddr(f1!),
      ]);
      assertEquals(stale.code, 1, stale.stderr);
      assertEquals(stale.stdout, "");
      assertEquals(
        stale.stderr,
        `blixard: meta cas: color is at revision ${green} (--expect ${blue}): nothing was written\n`,
      );
      const staleJson = await json(
        "meta cas",
        ["meta", "cas", "color", "--expect", blue, "red", ...viaTicket(f1!), "--json"],
        1,
      );
      assertEquals(staleJson, { succeeded: false, revision: green });

      // Expecting 0: only a missing key is set.
      const created = await blixard([
        "meta",
        "cas",
        "shape",
        "--expect",
        "0",
        "round",
        ...viaAddr(f1!),
      ]);
      assertEquals(created.code, 0, created.stderr);
      const again = await blixard([
        "meta",
        "cas",
        "shape",
        "--expect",
        "0",
        "square",
        ...viaAddr(f1!),
      ]);
      assertEquals(again.code, 1);
      assertMatch(again.stderr, /shape is at revision \d+ \(--expect 0\): nothing was written/);

      const now = await json("meta get", ["meta", "get", "color", ...viaAddr(leader), "--json"]);
      assertEquals(now.entry, { key: "color", value: "green", revision: green });
    },
  );

  await t.step(
    "a write retried with the same request id is answered with the first result and applied once",
    async () => {
      const first = await json("meta put", [
        "meta",
        "put",
        "size",
        "small",
        "--request-id",
        "resize-1",
        ...viaAddr(f1!),
        "--json",
      ]);
      const retry = await json("meta put", [
        "meta",
        "put",
        "size",
        "large",
        "--request-id",
        "resize-1",
        ...viaAddr(f2!),
        "--json",
      ]);
      assertEquals(retry, first);
      const size = await json("meta get", ["meta", "get", "size", ...viaAddr(leader), "--json"]);
      assertEquals(size.entry, { key: "size", value: "small", revision: first.revision });

      // Without --request-id, --verbose says which id was sent, and retrying with it is safe.
      const sent = await blixard(["meta", "put", "mood", "calm", "--verbose", ...viaAddr(f2!)]);
      assertEquals(sent.code, 0, sent.stderr);
      const id = /^request id: (\S+)$/m.exec(sent.stderr)?.[1];
      assert(id, `no request id on stderr: ${sent.stderr}`);
      const retried = await blixard([
        "meta",
        "put",
        "mood",
        "angry",
        "--request-id",
        id,
        ...viaAddr(f1!),
      ]);
      assertEquals(retried.stdout, sent.stdout);
    },
  );

  await t.step(
    "del removes a key, deleting it again succeeds, and get of it then exits 1",
    async () => {
      assertEquals(
        await json("meta del", ["meta", "del", "color", ...viaAddr(f1!), "--json"]),
        { existed: true },
      );
      const twice = await blixard(["meta", "del", "color", ...viaAddr(f2!)]);
      assertEquals([twice.code, twice.stdout], [0, "color: did not exist; nothing deleted\n"]);
      const gone = await blixard(["meta", "get", "color", ...viaAddr(f2!)]);
      assertEquals([gone.code, gone.stdout, gone.stderr], [
        1,
        "",
        'blixard: meta get: "color" not found\n',
      ]);
      assertEquals(
        await json("meta get", ["meta", "get", "color", ...viaTicket(f2!), "--json"], 1),
        { found: false },
      );
    },
  );

  await t.step(
    "values from stdin and from a file are stored as they are; list shows a prefix in key order",
    async () => {
      const text = 'two lines,\n"quoted" and ünïcode\n';
      const fromStdin = await blixard(["meta", "put", "app/b", "-", ...viaAddr(f1!)], {
        stdin: text,
      });
      assertEquals(fromStdin.code, 0, fromStdin.stderr);
      const file = `${c.dir}/value.txt`;
      await Deno.writeTextFile(file, "from a file");
      const fromFile = await blixard([
        "meta",
        "put",
        "app/a",
        "--value-file",
        file,
        ...viaAddr(f2!),
      ]);
      assertEquals(fromFile.code, 0, fromFile.stderr);

      const list = await blixard(["meta", "list", "app/", ...viaAddr(leader)]);
      assertEquals(list.code, 0, list.stderr);
      const lines = list.stdout.trimEnd().split("\n");
      assertEquals(lines.length, 2, list.stdout);
      assertMatch(lines[0]!, /^app\/a = "from a file" \(revision \d+\)$/);
      assertEquals(
        lines[1]!.slice(0, lines[1]!.indexOf(" (revision")),
        `app/b = ${JSON.stringify(text)}`,
      );

      const all = await json("meta list", ["meta", "list", ...viaTicket(f1!), "--json"]);
      assertEquals(
        (all.entries as { key: string }[]).map((e) => e.key),
        ["app/a", "app/b", "mood", "shape", "size"],
      );
      assertEquals(all.truncated, false);
      const cut = await json("meta list", [
        "meta",
        "list",
        "app/",
        "--limit",
        "1",
        ...viaAddr(f2!),
        "--json",
      ]);
      assertEquals((cut.entries as { value: string }[]).map((e) => e.value), ["from a file"]);
      assertEquals(cut.truncated, true);
      const cutHuman = await blixard(["meta", "list", "app/", "--limit", "1", ...viaAddr(f2!)]);
      assertMatch(
        cutHuman.stderr,
        /more keys starting with "app\/" than the 1 shown: raise --limit/,
      );
    },
  );

  await t.step(
    "a write no quorum can commit fails with exit 1 and names the request id to retry with",
    async () => {
      await stopAllBut(c, f1!);
      const r = await blixard([
        "meta",
        "put",
        "lonely",
        "yes",
        "--verbose",
        "--timeout",
        "1500",
        ...viaAddr(f1!),
      ]);
      assertEquals(r.code, 1, r.stderr);
      const id = /^request id: (\S+)$/m.exec(r.stderr)?.[1];
      assert(id, r.stderr);
      assert(r.stderr.includes(`run the same command with --request-id ${id}`), r.stderr);
    },
  );
});

/** Stops every node of `c` but `keep`. */
async function stopAllBut(c: TestCluster, keep: TestNode): Promise<void> {
  await Promise.all([...c.nodes.keys()].filter((id) => id !== keep.id).map((id) => c.stop(id)));
}
