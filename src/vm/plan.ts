/**
 * The reconciler's plan: a pure function from what should be (the VMs
 * placed on this node), what is (what the backends last observed) and what
 * is in progress to the actions that make reality match, in the shape of
 * etcd's Raft `Ready`: the plan decides, the executor (reconciler.ts) does
 * the I/O.
 *
 * Owns: {@link planVms}, the action, actual-state and retry types, and the
 * restart and backoff rules. Imports the generated VM types and spec.ts;
 * no I/O, no clock (time comes in as `nowMs`), no randomness.
 *
 * Rules, per VM:
 * - A VM recorded on disk by an earlier agent is adopted before anything
 *   else happens to it, so a running VM is never started a second time.
 * - Desired running: start it when absent; after it ends, start it again if
 *   its restart policy says so (`always`: any exit; `on-failure`: a failure;
 *   `never`: no), no earlier than the backoff allows. A newer `generation`
 *   (the operator asked for it again) starts it whatever the policy.
 * - Desired stopped: stop it (kill if `forceStop`).
 * - Not desired here any more: stop it, then forget its record and directory.
 * - At most `maxInProgress` actions run at once; adopts first, then stops and
 *   kills, then forgets, then starts, each by name.
 * - A report is emitted whenever the state the cluster should see changes;
 *   a VM that ended and is started again in the same round is reported as it
 *   ended (with the reason) before it is reported STARTING.
 *
 * @module
 */

import { VmDesiredState, type VmSpec, VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { DEFAULT_STOP_TIMEOUT_MS, restartPolicyOf, stopTimeoutMsOf } from "./spec.ts";

/** A VM this node should run, as the cluster state says. */
export interface DesiredVm {
  readonly spec: VmSpec;
  /**
   * Grows whenever the operator changes the VM's desired state (the cluster
   * half uses twice the Raft index of that change, plus one when the agent
   * restarts a VM it stopped itself on its way down). A VM that ended is started
   * again for a newer generation whatever its restart policy says.
   */
  readonly generation: number;
  /** Stop by killing, not by asking the guest (StopVmRequest.force). */
  readonly forceStop?: boolean;
}

/** What the executor knows of a VM. */
export type ActualVm =
  /** A record left by an earlier agent, not adopted yet; `error` if adopting it failed. */
  | { readonly kind: "recorded"; readonly error?: string }
  /** Its process runs; `sinceMs` is when this agent first saw it running. */
  | { readonly kind: "running"; readonly generation: number; readonly sinceMs: number }
  /** It ended as asked, or cleanly on its own (exit code 0, guest power-off). */
  | { readonly kind: "stopped"; readonly generation: number; readonly reason: string }
  /** It crashed, was killed by someone else, vanished, or could not start. */
  | { readonly kind: "failed"; readonly generation: number; readonly reason: string };

/** The kinds of action that take time (everything but `report`). */
export type WorkKind = "adopt" | "start" | "stop" | "kill" | "forget";

/** What the executor should do. */
export type VmAction =
  | { readonly kind: "adopt"; readonly name: string }
  | {
    readonly kind: "start";
    readonly name: string;
    readonly spec: VmSpec;
    readonly generation: number;
  }
  | { readonly kind: "stop"; readonly name: string; readonly timeoutMs: number }
  | { readonly kind: "kill"; readonly name: string }
  /** Remove the VM's record and directory: it is not desired here and has ended. */
  | { readonly kind: "forget"; readonly name: string }
  /** Tell the cluster the VM's actual state. */
  | { readonly kind: "report"; readonly name: string } & ReportedState;

/** The actual state as the cluster sees it. */
export interface ReportedState {
  readonly state: VmState;
  /** Why it stopped or failed; empty otherwise. */
  readonly reason: string;
}

/** Backoff of one VM's restarts (and of re-adopting a record that failed to adopt). */
export interface RetryState {
  /** Attempts made since the VM last ran stably. */
  readonly attempts: number;
  /** When the last attempt was made. */
  readonly lastAttemptMs: number;
}

/** Bounds and timings of the plan. */
export interface PlanLimits {
  /** Most work actions in progress at once. */
  readonly maxInProgress: number;
  /** Wait before the second attempt; doubles per attempt. */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** A VM that has run this long has its backoff reset. */
  readonly stableAfterMs: number;
}

/** The defaults of {@link PlanLimits}. */
export const DEFAULT_PLAN_LIMITS: PlanLimits = Object.freeze({
  maxInProgress: 4,
  backoffBaseMs: 1000,
  backoffMaxMs: 5 * 60_000,
  stableAfterMs: 60_000,
});

/** Everything the plan looks at. */
export interface PlanInput {
  /** The VMs placed on this node (names unique). */
  readonly desired: readonly DesiredVm[];
  /** What the executor knows, by name; a name missing here has nothing on this node. */
  readonly actual: ReadonlyMap<string, ActualVm>;
  /** Work actions running now, by name. */
  readonly inProgress: ReadonlyMap<string, WorkKind>;
  readonly retries: ReadonlyMap<string, RetryState>;
  /** What was last reported, by name. */
  readonly reported: ReadonlyMap<string, ReportedState>;
  readonly nowMs: number;
  readonly limits?: Partial<PlanLimits>;
}

/** What the plan decided. */
export interface Plan {
  /** Work actions (bounded) and reports, in the order to run them. */
  readonly actions: readonly VmAction[];
  /** The retry state to keep for the next plan. */
  readonly retries: ReadonlyMap<string, RetryState>;
  /** The earliest time a waiting restart becomes due; plan again then. */
  readonly wakeAtMs: number | undefined;
}

/** The wait before attempt `attempts + 1`: none for the first retry, then base, 2×base, … max. */
export function backoffMs(attempts: number, limits: PlanLimits): number {
  if (attempts <= 0) return 0;
  return Math.min(limits.backoffMaxMs, limits.backoffBaseMs * 2 ** (attempts - 1));
}

const PRIORITY: Readonly<Record<WorkKind, number>> = {
  adopt: 0,
  stop: 1,
  kill: 1,
  forget: 2,
  start: 3,
};

type Work = Exclude<VmAction, { kind: "report" }>;

/** A work action the plan would like to run, and what admitting it does to the retry state. */
interface Candidate {
  readonly action: Work;
  /** The retry state once the action is admitted; `null` clears it; absent leaves it. */
  readonly retry?: RetryState | null;
}

/** One VM's decision: the state to show if nothing is admitted, and the work wanted. */
interface Decision {
  readonly status?: ReportedState;
  readonly candidate?: Candidate;
  /** Change to the retry state whatever is admitted (`null` clears it). */
  readonly retry?: RetryState | null;
  /** When a waiting attempt becomes due. */
  readonly wakeAtMs?: number;
}

/**
 * Plans one round. Deterministic: the same input gives the same output.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { VmDesiredState, VmSpecSchema } from "../rpc/gen/blixard/v1/vm_pb.ts";
 * import { planVms } from "./plan.ts";
 *
 * const spec = create(VmSpecSchema, {
 *   name: "web", vcpus: 1, memoryMib: 256n, backend: "process",
 *   desiredState: VmDesiredState.RUNNING,
 * });
 * const plan = planVms({
 *   desired: [{ spec, generation: 1 }],
 *   actual: new Map(), inProgress: new Map(), retries: new Map(), reported: new Map(),
 *   nowMs: 0,
 * });
 * plan.actions.map((a) => a.kind); // ["start", "report"] (the report says STARTING)
 * ```
 */
export function planVms(input: PlanInput): Plan {
  const limits: PlanLimits = { ...DEFAULT_PLAN_LIMITS, ...input.limits };
  const desired = new Map(input.desired.map((d) => [d.spec.name, d]));
  const names = [...new Set([...desired.keys(), ...input.actual.keys()])].sort();
  const retries = new Map(input.retries);
  const decisions = new Map<string, Decision>();
  let wakeAtMs: number | undefined;
  for (const name of names) {
    const d = decide(name, desired.get(name), input, limits);
    decisions.set(name, d);
    if (d.retry === null) retries.delete(name);
    else if (d.retry !== undefined) retries.set(name, d.retry);
    if (d.wakeAtMs !== undefined && (wakeAtMs === undefined || d.wakeAtMs < wakeAtMs)) {
      wakeAtMs = d.wakeAtMs;
    }
  }
  // Names no longer anywhere keep no retry state.
  for (const name of retries.keys()) if (!decisions.has(name)) retries.delete(name);

  const free = Math.max(0, limits.maxInProgress - input.inProgress.size);
  const admitted = [...decisions.values()]
    .flatMap((d) => d.candidate === undefined ? [] : [d.candidate])
    .sort((a, b) =>
      PRIORITY[a.action.kind] - PRIORITY[b.action.kind] ||
      (a.action.name < b.action.name ? -1 : 1)
    )
    .slice(0, free);
  const running = new Set<string>();
  for (const c of admitted) {
    running.add(c.action.name);
    if (c.retry === null) retries.delete(c.action.name);
    else if (c.retry !== undefined) retries.set(c.action.name, c.retry);
  }

  const reports: VmAction[] = [];
  for (const [name, d] of decisions) {
    if (!desired.has(name)) continue;
    let last = input.reported.get(name);
    const emit = (s: ReportedState) => {
      if (last === undefined || last.state !== s.state || last.reason !== s.reason) {
        reports.push({ kind: "report", name, ...s });
        last = s;
      }
    };
    const kind = d.candidate?.action.kind;
    if (running.has(name) && kind !== undefined && isBusyKind(kind)) {
      // A VM that ended and starts again: the cluster hears how it ended first.
      const ended = d.status?.state === VmState.FAILED || d.status?.state === VmState.STOPPED;
      if (kind === "start" && ended) emit(d.status!);
      emit(busyStatus(kind));
    } else if (d.status !== undefined) {
      emit(d.status);
    }
  }
  return { actions: [...admitted.map((c) => c.action), ...reports], retries, wakeAtMs };
}

function isBusyKind(kind: WorkKind): kind is "start" | "stop" | "kill" {
  return kind === "start" || kind === "stop" || kind === "kill";
}

function busyStatus(kind: "start" | "stop" | "kill"): ReportedState {
  return { state: kind === "start" ? VmState.STARTING : VmState.STOPPING, reason: "" };
}

/** When attempt `attempts + 1` may happen, given the retry state. */
function dueAtMs(retry: RetryState | undefined, limits: PlanLimits): number {
  return retry === undefined ? -Infinity : retry.lastAttemptMs + backoffMs(retry.attempts, limits);
}

function nextAttempt(retry: RetryState | undefined, nowMs: number): RetryState {
  return { attempts: (retry?.attempts ?? 0) + 1, lastAttemptMs: nowMs };
}

/** Decides one VM. */
function decide(
  name: string,
  want: DesiredVm | undefined,
  input: PlanInput,
  limits: PlanLimits,
): Decision {
  const have = input.actual.get(name);
  const busy = input.inProgress.get(name);
  const retry = input.retries.get(name);
  const now = input.nowMs;
  if (busy !== undefined) {
    return isBusyKind(busy) ? { status: busyStatus(busy) } : {};
  }
  if (have?.kind === "recorded") {
    // Nothing else may happen to a recorded VM before it is adopted: it may be running.
    if (have.error === undefined) return { candidate: { action: { kind: "adopt", name } } };
    const status: ReportedState = { state: VmState.FAILED, reason: have.error };
    const at = dueAtMs(retry, limits);
    if (now < at) return { status, wakeAtMs: at };
    return {
      status,
      candidate: { action: { kind: "adopt", name }, retry: nextAttempt(retry, now) },
    };
  }
  if (want === undefined) {
    if (have === undefined) return { retry: null };
    return {
      retry: null,
      candidate: {
        action: have.kind === "running"
          ? { kind: "stop", name, timeoutMs: DEFAULT_STOP_TIMEOUT_MS }
          : { kind: "forget", name },
      },
    };
  }
  if (want.spec.desiredState === VmDesiredState.STOPPED) {
    if (have?.kind !== "running") {
      return { retry: null, status: { state: VmState.STOPPED, reason: have?.reason ?? "" } };
    }
    return {
      retry: null,
      status: { state: VmState.RUNNING, reason: "" },
      candidate: {
        action: want.forceStop
          ? { kind: "kill", name }
          : { kind: "stop", name, timeoutMs: stopTimeoutMsOf(want.spec) },
      },
    };
  }
  const start: Work = { kind: "start", name, spec: want.spec, generation: want.generation };
  if (have === undefined) {
    return { status: { state: VmState.PENDING, reason: "" }, candidate: { action: start } };
  }
  if (have.kind === "running") {
    const stable = retry !== undefined && now - have.sinceMs >= limits.stableAfterMs;
    return { status: { state: VmState.RUNNING, reason: "" }, retry: stable ? null : undefined };
  }
  const status: ReportedState = {
    state: have.kind === "failed" ? VmState.FAILED : VmState.STOPPED,
    reason: have.reason,
  };
  if (have.generation < want.generation) {
    // The operator asked again since this run began: a fresh start and a fresh backoff.
    return { status, candidate: { action: start, retry: null } };
  }
  const policy = restartPolicyOf(want.spec);
  if (!(policy === "always" || (policy === "on-failure" && have.kind === "failed"))) {
    return { status };
  }
  const at = dueAtMs(retry, limits);
  if (now < at) return { status, wakeAtMs: at };
  return { status, candidate: { action: start, retry: nextAttempt(retry, now) } };
}
