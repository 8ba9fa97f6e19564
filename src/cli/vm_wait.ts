/**
 * Waiting for a VM to reach the state an operator asked for, by following
 * the cluster's VM events (`VmService.WatchEvents`), with a progress line for
 * each state it passes through.
 *
 * Owns: {@link waitForVm}, {@link resumingWatch} (a watch that survives a
 * leader change, for `vm watch` too), {@link verdictOf} (pure: what one event means for
 * a wait), {@link seconds}. Imports the generated VM messages, the typed
 * client's types and this folder's VM formatting.
 *
 * A watch answers first with the VM as it is (EXISTING), then each change in
 * Raft order. A Start or Stop shows in that order as a SPEC_CHANGED event,
 * and only what comes after it tells how the change went: the state a
 * failed VM had before it was started again is not the outcome of the start.
 * So for start and stop the watch is opened first, the change is made once
 * the watch has answered, and states count from the change on.
 *
 * A STOPPED or FAILED state ends a wait for "running" only once the VM was
 * seen STARTING or RUNNING after the change: a node's report of the state
 * before the change may be committed after it.
 *
 * A watch the node cannot serve for a moment (UNAVAILABLE: no leader
 * confirmed its read in time; DEADLINE_EXCEEDED: the node ended a long
 * call) is opened again from the last revision seen, so a leader change
 * during a boot does not lose the wait.
 *
 * @module
 */

import { Code, RpcError } from "../rpc/errors.ts";
import type { Client } from "../rpc/services.ts";
import {
  type Vm,
  VmDesiredState,
  type VmEvent,
  VmEventKind,
  type VmService,
  VmState,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import { vmStateLine } from "./vm_show.ts";

/** What a wait waits for: the VM running (create, start) or not (stop). */
export type VmGoal = "running" | "stopped";

/** What one event means for a wait: the goal reached, missed, or not yet known. */
export type Verdict = "reached" | "failed" | undefined;

/**
 * What `event`, seen after the operator's change, says about a wait for
 * `goal`. A SPEC_CHANGED event carries the state from before the change took
 * effect: it can show the goal already met (a start of a running VM), never
 * a failure but LOST. Every other event shows the state as it now is.
 */
export function verdictOf(goal: VmGoal, event: VmEvent): Verdict {
  if (event.kind === VmEventKind.DELETED) return "failed";
  const state = event.vm?.status?.state ?? VmState.UNSPECIFIED;
  if (state === VmState.LOST) return "failed";
  const reached = goal === "running" ? state === VmState.RUNNING : state === VmState.STOPPED;
  if (reached) return "reached";
  if (event.kind === VmEventKind.SPEC_CHANGED) return undefined;
  return state === VmState.FAILED || state === VmState.STOPPED ? "failed" : undefined;
}

/** `2.4 s`. */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** How a wait ended. */
export interface WaitOutcome {
  /** `interrupted`: the caller's {@link WaitOptions.signal} ended the wait. */
  readonly outcome: "reached" | "failed" | "timeout" | "interrupted";
  /** The VM as last seen; undefined if the watch never answered. */
  readonly vm: Vm | undefined;
  /** From `startedAt` to the end of the wait. */
  readonly elapsedMs: number;
}

/** Options of {@link waitForVm}. */
export interface WaitOptions {
  readonly client: Client<typeof VmService>;
  readonly name: string;
  readonly goal: VmGoal;
  /**
   * Start or Stop: made once the watch has answered, and states count from
   * the change on. Without it (after a Create), every state seen counts.
   * Its error is thrown as it is.
   */
  readonly change?: () => Promise<unknown>;
  readonly timeoutMs: number;
  /** `performance.now()` when the command began, for the elapsed times. */
  readonly startedAt: number;
  /** Told each state the VM passes through, as one line. */
  readonly progress: (line: string) => void;
  /** Ends the wait early (outcome `interrupted`). */
  readonly signal?: AbortSignal;
}

/**
 * Follows VM `name` until it reaches `goal`, ends otherwise (FAILED, a
 * STOPPED that was not asked for, LOST, deleted), or `timeoutMs` passes.
 */
export async function waitForVm(o: WaitOptions): Promise<WaitOutcome> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, o.timeoutMs);
  const interrupt = () => abort.abort();
  o.signal?.addEventListener("abort", interrupt);
  const stream = vmEvents(o.client, o.name, abort.signal)[Symbol.asyncIterator]();
  let vm: Vm | undefined;
  let said = "";
  const elapsed = () => performance.now() - o.startedAt;
  const show = (v: Vm) => {
    const line = vmStateLine(v);
    if (line !== said) o.progress(`  ${seconds(elapsed()).padStart(7)}  ${line}`);
    said = line;
  };
  const end = (outcome: WaitOutcome["outcome"]): WaitOutcome => ({
    outcome: o.signal?.aborted ? "interrupted" : outcome,
    vm,
    elapsedMs: elapsed(),
  });
  const wanted = o.goal === "running" ? VmDesiredState.RUNNING : VmDesiredState.STOPPED;
  try {
    // Without a change to make, the VM is new: what the watch shows first counts.
    let armed = o.change === undefined;
    let changed = o.change === undefined;
    let begun = false;
    for (;;) {
      let next: IteratorResult<VmEvent>;
      try {
        next = await stream.next();
      } catch (e) {
        if (timedOut || o.signal?.aborted) return end("timeout");
        throw e;
      }
      if (next.done) return end(timedOut ? "timeout" : "failed");
      const event = next.value;
      if (event.vm) vm = event.vm;
      if (!changed) {
        // The watch runs: what happens from here on is seen.
        changed = true;
        if (event.vm) show(event.vm);
        await o.change!();
        continue;
      }
      const spec = event.kind === VmEventKind.SPEC_CHANGED;
      // The change shows as a spec change to the desired state asked for.
      if (!armed && spec && event.vm?.spec?.desiredState === wanted) armed = true;
      if (event.vm && !spec) show(event.vm);
      const state = event.vm?.status?.state;
      if (armed && !spec && (state === VmState.STARTING || state === VmState.RUNNING)) {
        begun = true;
      }
      let verdict = armed ? verdictOf(o.goal, event) : undefined;
      // A state the node reported before it saw the start can be committed after it (its
      // report was on its way to the leader): STOPPED or FAILED count once the VM was seen
      // starting.
      if (
        verdict === "failed" && o.goal === "running" && !begun &&
        event.kind === VmEventKind.STATUS_CHANGED &&
        (state === VmState.STOPPED || state === VmState.FAILED)
      ) verdict = undefined;
      if (verdict !== undefined) {
        if (event.vm) show(event.vm);
        return end(verdict);
      }
    }
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", interrupt);
    abort.abort();
    await stream.return?.(undefined).catch(() => {});
  }
}

/** Whether a watch that failed with `e` may be opened again from where it was. */
export function resumableWatchError(e: unknown): boolean {
  return e instanceof RpcError &&
    (e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED);
}

/** The events of VM `name`, the existing state first, reopened after a resumable failure. */
function vmEvents(
  client: Client<typeof VmService>,
  name: string,
  signal: AbortSignal,
): AsyncGenerator<VmEvent> {
  // Not faster than twice a second, however fast the node refuses.
  return resumingWatch(client, { name, includeExisting: true }, signal, { minIntervalMs: 500 });
}

/** What {@link resumingWatch} asks: the WatchEvents request's fields. */
export interface WatchRequest {
  readonly name: string;
  readonly nodeId?: bigint;
  readonly includeExisting: boolean;
  readonly fromRevision?: bigint;
}

/**
 * The events `request` asks for, the watch opened again from the last
 * revision seen when it fails with a {@link resumableWatchError}, at most
 * once per `minIntervalMs` (a node that refuses at once is not hammered);
 * `onResume` hears each such failure. Ends when the node ends the watch
 * normally; throws any other error, and any error once `signal` is aborted.
 */
export async function* resumingWatch(
  client: Client<typeof VmService>,
  request: WatchRequest,
  signal: AbortSignal,
  options: { minIntervalMs: number; onResume?: (e: RpcError) => void },
): AsyncGenerator<VmEvent> {
  let current = request;
  for (;;) {
    const openedAt = performance.now();
    try {
      for await (const event of client.watchEvents(current, { signal })) {
        if (event.index > (current.fromRevision ?? 0n)) {
          current = { ...current, includeExisting: false, fromRevision: event.index };
        }
        yield event;
      }
      return;
    } catch (e) {
      if (signal.aborted || !resumableWatchError(e)) throw e;
      options.onResume?.(e as RpcError);
      const waitMs = Math.max(100, options.minIntervalMs - (performance.now() - openedAt));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, waitMs);
        signal.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        }
      });
      if (signal.aborted) throw e;
    }
  }
}
