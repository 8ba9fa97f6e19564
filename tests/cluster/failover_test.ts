/**
 * Three agents as processes on loopback form a cluster, over Iroh, over
 * gRPC, and in dual mode with `raft_transport = "adaptive"`. While clients
 * read and write through all three nodes, the leader is killed with SIGKILL
 * (and restarted), and later a leader is frozen with SIGSTOP past the
 * election timeout and resumed. A new leader takes over each time, the old
 * one steps down, and the clients' history is linearizable, with every
 * acknowledged write still there at the end.
 */

import { assert, assertEquals } from "../assert.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { RaftRole } from "../../src/rpc/gen/blixard/v1/status_pb.ts";
import { checkHistory } from "../support/linearizability.ts";
import { registerModel } from "../support/register_model.ts";
import { eventually } from "../wait.ts";
import { type ClusterSpec, TestCluster } from "./helpers.ts";
import { clientLoop, HistoryRecorder, saveHistory } from "./history.ts";

const KEYS = ["a", "b", "c"];
const CLIENTS = 4;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A read retried while the node cannot serve it yet (a restarted node
 * catching up, no leader confirmed in time on a loaded machine), as a client
 * would; the interval recorded spans the attempts, so the check stays sound.
 */
async function readRetrying<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await read();
    } catch (e) {
      const retry = e instanceof RpcError &&
        (e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED);
      if (!retry || attempt === 10) throw e;
      await sleep(200);
    }
  }
}

const SETUPS: readonly [string, ClusterSpec][] = [
  ["iroh", { size: 3, mode: "iroh" }],
  ["grpc", { size: 3, mode: "grpc" }],
  ["dual, adaptive Raft", { size: 3, mode: "dual", raftTransport: "adaptive" }],
];

for (const [name, spec] of SETUPS) {
  Deno.test({
    name:
      `[${name}] the leader is killed, then another frozen past the election timeout: a new leader each time, and the history is linearizable`,
    fn: async () => {
      await using cluster = await TestCluster.start({ ...spec, tickMs: 20 });
      const first = await cluster.waitForLeader();
      const recorder = new HistoryRecorder();
      let stopping = false;
      const clients = Array.from(
        { length: CLIENTS },
        (_, i) => clientLoop(cluster, i, KEYS, recorder, () => stopping),
      );
      try {
        await sleep(800);

        // SIGKILL the leader: the others elect another; the killed one restarts and rejoins.
        await cluster.signal(first, "SIGKILL");
        const second = await cluster.waitForLeader([first]);
        assert(second !== first);
        await sleep(500);
        await cluster.startNode(first);

        await sleep(800);

        // SIGSTOP the leader past the election timeout (20 ms ticks, 10 to 20 ticks).
        const frozen = await cluster.waitForLeader();
        await cluster.signal(frozen, "SIGSTOP");
        const third = await cluster.waitForLeader([frozen]);
        assert(third !== frozen);
        await sleep(300);
        await cluster.signal(frozen, "SIGCONT");
        // Resumed, it hears of the newer term and steps down.
        await eventually(
          `node ${frozen} steps down after it is resumed`,
          async () => {
            const s = await cluster.node(frozen).clients.status.getRaftStatus({}, {
              deadlineMs: 500,
            })
              .catch(() => null);
            return s !== null && s.role !== RaftRole.LEADER && s.leaderId !== 0n;
          },
          10_000,
        );
        await sleep(800);
      } finally {
        stopping = true;
        await Promise.all(clients);
      }

      // Every acknowledged write is there: read every key through every node at the end.
      await cluster.waitForLeader();
      for (const key of KEYS) {
        for (const node of cluster.nodes) {
          await recorder.run(99 + node.id, { op: "get", key }, async () => {
            const res = await readRetrying(() =>
              node.clients.metadata.get({ key }, { deadlineMs: 5_000 })
            );
            return res.found && res.entry
              ? { kind: "found", value: res.entry.value, revision: Number(res.entry.revision) }
              : { kind: "not_found" };
          });
        }
      }
      const history = recorder.history();
      const finalReads = history.filter((op) => op.clientId >= 99);
      assertEquals(
        finalReads.length,
        KEYS.length * cluster.nodes.length,
        "every final read answered",
      );
      assert(recorder.stats.ok > 20, `only ${recorder.stats.ok} operations completed`);
      const verdict = checkHistory(registerModel, history, { timeoutMs: 60_000 });
      if (verdict.result !== "ok") {
        const saved = await saveHistory(history);
        assertEquals(verdict.result, "ok", `${verdict.explanation}\nhistory saved to ${saved}`);
      }
      const s = recorder.stats;
      console.log(
        `[${name}] history of ${history.length} operations linearizable: ${s.ok} ok, ` +
          `${s.unknown} unknown outcome, ${s.failedReads} failed reads, ${s.refused} refused`,
      );
    },
  });
}
