/**
 * A reference model of the log as digests: what a file must hold after the
 * writes a crashed writer reported (tests/fixtures/storage_writer.ts). Kept
 * deliberately naive (arrays, filters) so it is easy to check by eye.
 */

import { digest, type LogState } from "../fixtures/storage_log_state.ts";
import type { WriterOp } from "../fixtures/storage_writer.ts";

/** The state of a new, empty log. */
export const EMPTY_LOG: LogState = {
  first: 1,
  startTerm: 0,
  last: 0,
  entries: [],
  hardState: [0, 0, 0],
  snapshot: [0, 0, [], [], digest(new Uint8Array())],
};

/** The state after `op` is applied to `state`. */
export function applyOp(state: LogState, op: WriterOp): LogState {
  let { first, startTerm, last, entries, hardState, snapshot } = state;
  const termAt = (index: number) =>
    index === first - 1 ? startTerm : entries.find((e) => e[0] === index)![1];

  if ("createSnapshot" in op) {
    const { index, keep, voters, learners, digest } = op.createSnapshot;
    snapshot = [index, termAt(index), voters, learners, digest];
    const start = Math.max(first - 1, index - keep);
    startTerm = termAt(start);
    first = start + 1;
    entries = entries.filter((e) => e[0] > start);
    return { first, startTerm, last, entries, hardState, snapshot };
  }

  const update = op.save;
  if (update.snapshot !== undefined) {
    const [index, term] = update.snapshot;
    const agrees = index <= last && termAt(index) === term;
    entries = agrees ? entries.filter((e) => e[0] > index) : [];
    if (!agrees) last = index;
    first = index + 1;
    startTerm = term;
    snapshot = update.snapshot;
  }
  if (update.entries.length > 0) {
    const from = update.entries[0]![0];
    entries = [...entries.filter((e) => e[0] < from), ...update.entries];
    last = update.entries.at(-1)![0];
  }
  if (update.hardState !== undefined) hardState = update.hardState;
  return { first, startTerm, last, entries, hardState, snapshot };
}

/** What a writer's stdout says: the writes it acknowledged, and the one in flight when it died. */
export interface WriterReport {
  readonly acked: readonly WriterOp[];
  /** A write it started (`try`) and did not acknowledge: it may or may not be in the file. */
  readonly pending: WriterOp | undefined;
  readonly opened: boolean;
}

/** Parses a writer's stdout; a last line cut off by the kill is ignored. */
export function parseWriterOutput(stdout: string): WriterReport {
  const lines = stdout.split("\n");
  lines.pop(); // empty after the last newline, or a line the kill cut off
  const acked: WriterOp[] = [];
  let pending: WriterOp | undefined;
  let opened = false;
  for (const line of lines) {
    if (line === "open") {
      opened = true;
    } else if (line.startsWith("try ")) {
      if (pending !== undefined) throw new Error(`write ${pending.n} was never acknowledged`);
      pending = JSON.parse(line.slice(4));
    } else if (line.startsWith("ack ")) {
      if (pending === undefined || pending.n !== Number(line.slice(4))) {
        throw new Error(`"${line}" acknowledges a write that was not started`);
      }
      acked.push(pending);
      pending = undefined;
    } else {
      throw new Error(`unexpected line from the writer: ${line.slice(0, 200)}`);
    }
  }
  return { acked, pending, opened };
}

/** The first way `actual` differs from `expected`, in words; undefined if they are equal. */
export function difference(actual: LogState, expected: LogState): string | undefined {
  for (const key of ["first", "startTerm", "last", "hardState", "snapshot"] as const) {
    const [a, e] = [JSON.stringify(actual[key]), JSON.stringify(expected[key])];
    if (a !== e) return `${key} is ${a}, expected ${e}`;
  }
  const n = Math.max(actual.entries.length, expected.entries.length);
  for (let i = 0; i < n; i++) {
    const [a, e] = [JSON.stringify(actual.entries[i]), JSON.stringify(expected.entries[i])];
    if (a !== e) return `entry #${i} (from the first index) is ${a}, expected ${e}`;
  }
  return undefined;
}
