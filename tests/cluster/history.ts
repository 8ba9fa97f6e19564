/**
 * Client histories of the metadata namespace recorded against real
 * clusters, for the linearizability checker: sequential clients issuing
 * put, get, delete and compare-and-set on a few keys, every written value
 * unique, every write with its own request id.
 */

import {
  type RegisterInput,
  type RegisterOperation,
  type RegisterOutput,
  UNKNOWN,
} from "../support/register_model.ts";
import type { TestCluster } from "./helpers.ts";
import { unknownOutcome } from "./helpers.ts";
import { RpcError } from "../../src/rpc/errors.ts";

/** Records operations as they call and return, on one clock. */
export class HistoryRecorder {
  readonly operations: RegisterOperation[] = [];
  /** Writes whose outcome is unknown, with their index in `operations`. */
  #unknownWrites: number[] = [];
  stats = { ok: 0, unknown: 0, failedReads: 0, refused: 0 };

  /** Runs one operation of `clientId` and records it; never throws. */
  async run(
    clientId: number,
    input: RegisterInput,
    call: () => Promise<RegisterOutput>,
  ): Promise<void> {
    const start = performance.now();
    try {
      const output = await call();
      this.operations.push({ clientId, input, output, call: start, return: performance.now() });
      this.stats.ok++;
    } catch (e) {
      if (input.op === "get") {
        this.stats.failedReads++;
        return; // A failed read changed nothing.
      }
      if (!unknownOutcome(e)) {
        // Refused before it could apply (ABORTED: another entry took its place).
        this.stats.refused++;
        if (!(e instanceof RpcError)) throw e;
        return;
      }
      this.#unknownWrites.push(this.operations.length);
      this.operations.push({ clientId, input, output: UNKNOWN, call: start, return: Infinity });
      this.stats.unknown++;
    }
  }

  /**
   * The history, with each unknown write's revision filled in where a read
   * showed the value it wrote (values are unique, so a read names its write).
   */
  history(): RegisterOperation[] {
    const revisionOf = new Map<string, number>();
    for (const op of this.operations) {
      if (op.output.kind === "found") revisionOf.set(op.output.value, op.output.revision);
    }
    return this.operations.map((op, i) => {
      if (!this.#unknownWrites.includes(i)) return op;
      const input = op.input;
      if (input.op !== "put" && input.op !== "cas") return op;
      const revision = revisionOf.get(input.value);
      return revision === undefined ? op : { ...op, input: { ...input, revision } };
    });
  }
}

/**
 * One client's loop until `stop()` says so: random operations on `keys`
 * against random running nodes of `cluster`.
 */
export async function clientLoop(
  cluster: TestCluster,
  clientId: number,
  keys: readonly string[],
  recorder: HistoryRecorder,
  stop: () => boolean,
  deadlineMs = 2_000,
): Promise<void> {
  let seq = 0;
  const revisions = new Map<string, bigint>();
  while (!stop()) {
    const up = cluster.nodes.filter((n) => n.process);
    const node = up[Math.floor(Math.random() * up.length)];
    if (!node) break;
    const m = node.clients.metadata;
    const key = keys[Math.floor(Math.random() * keys.length)]!;
    const value = `c${clientId}-${seq++}`;
    const requestId = `${clientId}-${seq}-${crypto.randomUUID().slice(0, 8)}`;
    const o = { deadlineMs };
    const r = Math.random();
    if (r < 0.35) {
      await recorder.run(clientId, { op: "get", key }, async () => {
        const res = await m.get({ key }, o);
        if (!res.found || !res.entry) return { kind: "not_found" };
        revisions.set(key, res.entry.revision);
        return { kind: "found", value: res.entry.value, revision: Number(res.entry.revision) };
      });
    } else if (r < 0.7) {
      await recorder.run(clientId, { op: "put", key, value }, async () => {
        const res = await m.put({ key, value, requestId }, o);
        return { kind: "put", revision: Number(res.revision) };
      });
    } else if (r < 0.85) {
      const expectedRevision = Number(revisions.get(key) ?? 0n);
      await recorder.run(
        clientId,
        { op: "cas", key, expectedRevision, value },
        async () => {
          const res = await m.compareAndSet(
            { key, expectedRevision: BigInt(expectedRevision), value, requestId },
            o,
          );
          return { kind: "cas", ok: res.succeeded, revision: Number(res.revision) };
        },
      );
    } else {
      await recorder.run(clientId, { op: "delete", key }, async () => {
        const res = await m.delete({ key, requestId }, o);
        return { kind: "deleted", existed: res.existed };
      });
    }
  }
}

/**
 * Writes `history` as JSON to a new temporary file (an unknown outcome's
 * `return = Infinity` as null) and returns its path, so that a history the
 * checker could not pass can be checked again offline.
 */
export async function saveHistory(history: readonly RegisterOperation[]): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "blixard-history-", suffix: ".json" });
  await Deno.writeTextFile(
    path,
    JSON.stringify(history.map((op) => op.return === Infinity ? { ...op, return: null } : op)),
  );
  return path;
}
