/**
 * What `blixard migrate` reads from a node's own `/metrics` and `/readyz`
 * while it watches a stage, and the verdict on it: no Prometheus needed.
 *
 * Owns: {@link parseExposition} (the Prometheus text format, the subset
 * prom-client writes), {@link readingOf}, {@link judge}. Pure. Imports the
 * stage definitions.
 *
 * @module
 */

import type { TransportName } from "../names.ts";
import type { Stage, StageLimits } from "./migrate_stages.ts";

/** One sample of the exposition: `name{labels} value`. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A line that is not the text format; `line` is from 1. */
export class ExpositionError extends Error {
  override readonly name = "ExpositionError";
  readonly code = "bad_exposition";
  readonly line: number;
  constructor(line: number, message: string) {
    super(`/metrics line ${line}: ${message}`);
    this.line = line;
  }
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

/**
 * The samples of a Prometheus text exposition (`# HELP`/`# TYPE` lines and
 * blank lines skipped).
 * @throws {ExpositionError} on a line that is not a sample.
 *
 * @example
 * ```ts
 * import { parseExposition } from "./migrate_health.ts";
 * const [s] = parseExposition('blixard_rpc_fallbacks_total{service="health",from="iroh",to="grpc"} 3\n');
 * console.log(s!.labels.from, s!.value); // iroh 3
 * ```
 */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new ExpositionError(i + 1, `not a sample: ${line.slice(0, 120)}`);
    const value = valueOf(m[3]!);
    if (value === undefined) throw new ExpositionError(i + 1, `value "${m[3]}" is not a number`);
    out.push({ name: m[1]!, labels: labelsOf(m[2] ?? "", i + 1), value });
  }
  return out;
}

/**
 * A sample's value. Go's ParseFloat, which Prometheus uses, takes NaN and
 * Inf in any case, and prom-client writes NaN as "Nan".
 */
function valueOf(text: string): number | undefined {
  if (/^nan$/i.test(text)) return NaN;
  const inf = /^([+-]?)inf(inity)?$/i.exec(text);
  if (inf) return inf[1] === "-" ? -Infinity : Infinity;
  const n = Number(text);
  return text.trim() === "" || Number.isNaN(n) ? undefined : n;
}

function labelsOf(braces: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  const inner = braces.slice(1, -1);
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < inner.length) {
    const at = LABEL.lastIndex;
    const m = LABEL.exec(inner);
    if (!m) throw new ExpositionError(line, `bad labels at "${inner.slice(at, at + 40)}"`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    if (m[3] === "") break;
  }
  return labels;
}

/** The codes with which a node says it failed a call (not that the call was wrong). */
export const FAILURE_CODES: readonly string[] = [
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "INTERNAL",
  "UNKNOWN",
  "DATA_LOSS",
];

/** What one scrape says about the stage's criteria. */
export interface Reading {
  /** `process_start_time_seconds`: a change means the node restarted. */
  readonly startTimeSeconds: number;
  readonly hasLeader: boolean;
  /** Transports whose listener serves (`blixard_listener_up == 1`). */
  readonly listeners: readonly TransportName[];
  /** All calls the node answered, and those with a {@link FAILURE_CODES} code. */
  readonly rpcCalls: number;
  readonly rpcErrors: number;
  readonly fallbacks: number;
  readonly leaderChanges: number;
  /** Raft messages sent, by the transport that carried them. */
  readonly raftSent: Readonly<Record<TransportName, number>>;
}

/** The {@link Reading} of a scrape's samples. */
export function readingOf(samples: readonly Sample[]): Reading {
  const sum = (
    name: string,
    where: (l: Readonly<Record<string, string>>) => boolean = () => true,
  ) => samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
  const one = (name: string) => samples.find((s) => s.name === name)?.value ?? NaN;
  const transports: TransportName[] = ["grpc", "iroh"];
  return {
    startTimeSeconds: one("process_start_time_seconds"),
    hasLeader: one("blixard_raft_has_leader") === 1,
    listeners: transports.filter((t) => sum("blixard_listener_up", (l) => l.transport === t) === 1),
    rpcCalls: sum("blixard_rpc_server_requests_total"),
    rpcErrors: sum(
      "blixard_rpc_server_requests_total",
      (l) => FAILURE_CODES.includes(l.code ?? ""),
    ),
    fallbacks: sum("blixard_rpc_fallbacks_total"),
    leaderChanges: sum("blixard_raft_leader_changes_total"),
    raftSent: {
      grpc: sum("blixard_raft_outbox_sent_by_transport_total", (l) => l.transport === "grpc"),
      iroh: sum("blixard_raft_outbox_sent_by_transport_total", (l) => l.transport === "iroh"),
    },
  };
}

/** How far the counters moved since the watch began. */
export interface WatchTotals {
  readonly rpcCalls: number;
  readonly rpcErrors: number;
  readonly fallbacks: number;
  readonly leaderChanges: number;
}

/** The verdict on one moment of the watch. */
export type Verdict =
  | { readonly ok: true; readonly totals: WatchTotals }
  | { readonly ok: false; readonly totals: WatchTotals; readonly reason: string };

/**
 * Whether the node still meets `stage`'s criteria: `/readyz` answered 200
 * (`ready.body` gives the reason when not), the same process runs, a leader
 * is known, exactly the stage's listeners serve, Raft left only by the
 * stage's transports since the `previous` reading, and the counters rose no
 * more than `limits` since `baseline`. Without a `previous` reading (the
 * first of the watch) the Raft check waits: messages a transport took up
 * before the switch may still be counted as they leave.
 */
export function judge(
  stage: Stage,
  limits: StageLimits,
  baseline: Reading,
  now: Reading,
  ready: { readonly ok: boolean; readonly body: string },
  previous: Reading | null,
): Verdict {
  const totals: WatchTotals = {
    rpcCalls: now.rpcCalls - baseline.rpcCalls,
    rpcErrors: now.rpcErrors - baseline.rpcErrors,
    fallbacks: now.fallbacks - baseline.fallbacks,
    leaderChanges: now.leaderChanges - baseline.leaderChanges,
  };
  const fail = (reason: string): Verdict => ({ ok: false, totals, reason });
  if (now.startTimeSeconds !== baseline.startTimeSeconds) {
    return fail("the node restarted during the watch (process_start_time_seconds changed)");
  }
  if (!ready.ok) {
    const failed = ready.body.split("\n").filter((l) => l.startsWith("[-]"));
    return fail(`/readyz is not 200: ${failed.map((l) => l.slice(3)).join("; ") || ready.body}`);
  }
  if (!now.hasLeader) return fail("no leader known (blixard_raft_has_leader = 0)");
  if (now.listeners.join() !== stage.listeners.join()) {
    return fail(
      `listeners serving: ${now.listeners.join(" and ") || "none"}; stage ${stage.name} serves on ${
        stage.listeners.join(" and ")
      }`,
    );
  }
  for (const t of ["grpc", "iroh"] as const) {
    const sent = previous === null ? 0 : now.raftSent[t] - previous.raftSent[t];
    if (sent > 0 && !stage.raftOver.includes(t)) {
      return fail(`${sent} Raft message(s) left over ${t}, which stage ${stage.name} does not use`);
    }
  }
  const over = (what: string, n: number, limit: number) =>
    n > limit ? fail(`${what} rose by ${n} (limit ${limit})`) : null;
  return over(
    "RPC errors (calls answered " + FAILURE_CODES.join("|") + ")",
    totals.rpcErrors,
    limits.rpcErrors,
  ) ??
    over("transport fallbacks (blixard_rpc_fallbacks_total)", totals.fallbacks, limits.fallbacks) ??
    over(
      "leader changes (blixard_raft_leader_changes_total)",
      totals.leaderChanges,
      limits.leaderChanges,
    ) ??
    { ok: true, totals };
}
