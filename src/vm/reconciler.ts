/**
 * The reconciler: a thin executor of the plan (plan.ts) over the backends.
 * Each round it inspects the VMs it runs, plans, reports state changes
 * through a callback (the cluster half turns them into Raft proposals), and
 * starts the planned actions, at most `maxInProgress` at a time. After an
 * agent restart it first adopts every VM recorded in `<data_dir>/vms/*`
 * (`vm.json`), so none is started twice, and reports one that ended while
 * the agent was down with how it ended.
 *
 * Owns: {@link VmReconciler}, {@link VmClock}, {@link systemClock},
 * {@link VmStatusChange}. Imports backend.ts, plan.ts, supervisor.ts and
 * util/log.ts; time only through the injected clock.
 *
 * @module
 */

import type { VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { type VmBackend, VmBackendError, type VmHandle, type VmObservation } from "./backend.ts";
import {
  type ActualVm,
  type DesiredVm,
  type Plan,
  type PlanLimits,
  planVms,
  type ReportedState,
  type RetryState,
  type VmAction,
  type WorkKind,
} from "./plan.ts";
import { listRecords, readRecord, removeVmDir, vmDir } from "./supervisor.ts";

/** Time as the reconciler sees it. `realScheduler` of src/consensus/scheduler.ts fits. */
export interface VmClock {
  /** Milliseconds; reports carry it as `atMs`, so a wall clock gives timestamps. */
  now(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

/** The wall clock and the event loop's timers (which do not keep the process alive). */
export const systemClock: VmClock = {
  now: () => Date.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    Deno.unrefTimer(t as unknown as number);
    return () => clearTimeout(t);
  },
};

/** A change of a VM's actual state, for the cluster. */
export interface VmStatusChange {
  readonly name: string;
  readonly state: VmState;
  /** Why it stopped or failed; empty otherwise. */
  readonly reason: string;
  /** The clock's time of the change. */
  readonly atMs: number;
}

/** Options of {@link VmReconciler}. */
export interface ReconcilerOptions {
  /** The agent's data directory (`<data_dir>/vms/` holds the VMs). */
  readonly dataDir: string;
  /** The backends, by their `name`; the reconciler closes them in {@link VmReconciler.close}. */
  readonly backends: readonly VmBackend[];
  readonly clock: VmClock;
  /** Called for every change of a desired VM's actual state. */
  readonly onChange: (change: VmStatusChange) => void;
  readonly limits?: Partial<PlanLimits>;
  /** How often {@link VmReconciler.run} inspects the VMs (default 2000 ms). */
  readonly pollIntervalMs?: number;
  readonly logger?: Logger;
}

/** Makes this node's VMs match the desired state. */
export class VmReconciler {
  readonly #dataDir: string;
  readonly #backends: ReadonlyMap<string, VmBackend>;
  readonly #clock: VmClock;
  readonly #onChange: (change: VmStatusChange) => void;
  readonly #limits: Partial<PlanLimits>;
  readonly #pollIntervalMs: number;
  readonly #log: Logger;
  #desired: readonly DesiredVm[] = [];
  readonly #actual = new Map<string, ActualVm>();
  readonly #handles = new Map<string, VmHandle>();
  readonly #inProgress = new Map<string, WorkKind>();
  readonly #tasks = new Set<Promise<void>>();
  #retries: ReadonlyMap<string, RetryState> = new Map();
  readonly #reported = new Map<string, ReportedState>();
  #round: Promise<unknown> = Promise.resolve();
  #looping = false;
  #cancelTimer: (() => void) | undefined;
  #timerAtMs = Infinity;

  constructor(options: ReconcilerOptions) {
    this.#dataDir = options.dataDir;
    this.#backends = new Map(options.backends.map((b) => [b.name, b]));
    this.#clock = options.clock;
    this.#onChange = options.onChange;
    this.#limits = options.limits ?? {};
    this.#pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.#log = (options.logger ?? silentLogger).child("vm");
  }

  /**
   * Reads the VMs recorded under `<data_dir>/vms/`: each is adopted before
   * anything else is done to it. Call once, before the first round.
   */
  async open(): Promise<void> {
    const found = await listRecords(this.#dataDir);
    for (const h of found.handles) this.#actual.set(h.name, { kind: "recorded" });
    for (const { name, error } of found.errors) {
      this.#actual.set(name, { kind: "recorded", error: `cannot adopt: ${error.message}` });
      this.#log.error("cannot read a VM record", { vm: name, error });
    }
    if (found.handles.length + found.errors.length > 0) {
      this.#log.info("found VMs of an earlier run", {
        vms: [...found.handles.map((h) => h.name), ...found.errors.map((e) => e.name)].join(","),
      });
    }
  }

  /** The VMs placed on this node, as the cluster state says; takes effect at the next round. */
  setDesired(desired: readonly DesiredVm[]): void {
    this.#desired = desired;
    this.#wake(0);
  }

  /** What was last reported, by VM name. */
  get reported(): ReadonlyMap<string, ReportedState> {
    return this.#reported;
  }

  /**
   * Forgets what was last reported of `name`, so the next round reports its
   * state again: for when the cluster's record of it differs (a report lost,
   * or the leader marked it LOST while this node was cut off).
   */
  resync(name: string): void {
    if (this.#reported.delete(name)) this.#wake(0);
  }

  /** The handle of a VM this reconciler started or adopted. */
  handle(name: string): VmHandle | undefined {
    return this.#handles.get(name);
  }

  /**
   * One round: inspect, plan, report, start the planned actions (without
   * waiting for them: see {@link idle}). Rounds never overlap.
   */
  reconcile(): Promise<Plan> {
    const round = this.#round.then(() => this.#reconcileNow());
    this.#round = round.catch(() => {});
    return round;
  }

  async #reconcileNow(): Promise<Plan> {
    await Promise.all(
      [...this.#actual].filter(([name, a]) => a.kind === "running" && !this.#inProgress.has(name))
        .map(([name]) => this.#observe(name)),
    );
    const plan = planVms({
      desired: this.#desired,
      actual: this.#actual,
      inProgress: this.#inProgress,
      retries: this.#retries,
      reported: this.#reported,
      nowMs: this.#clock.now(),
      limits: this.#limits,
    });
    this.#retries = plan.retries;
    for (const action of plan.actions) {
      if (action.kind === "report") this.#report(action);
      else this.#launch(action);
    }
    if (plan.wakeAtMs !== undefined) this.#wake(Math.max(0, plan.wakeAtMs - this.#clock.now()));
    return plan;
  }

  async #observe(name: string): Promise<void> {
    const handle = this.#handles.get(name);
    const backend = handle && this.#backends.get(handle.backend);
    if (handle === undefined || backend === undefined) return;
    try {
      this.#record(name, handle.generation, await backend.inspect(handle));
    } catch (e) {
      this.#log.warn("cannot inspect a VM", { vm: name, error: e });
    }
  }

  /** Waits until no action is in progress. */
  async idle(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }

  /** Runs rounds every `pollIntervalMs`, and soon after every change, until {@link close}. */
  run(): void {
    this.#looping = true;
    this.#wake(0);
  }

  /** Stops the rounds, waits for the actions in progress, and closes the backends. VMs keep running. */
  async close(): Promise<void> {
    this.#looping = false;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    await this.#round;
    await this.idle();
    await Promise.all([...this.#backends.values()].map((b) => b.close()));
  }

  #wake(delayMs: number): void {
    if (!this.#looping) return;
    const at = this.#clock.now() + delayMs;
    if (this.#cancelTimer !== undefined && this.#timerAtMs <= at) return;
    this.#cancelTimer?.();
    this.#timerAtMs = at;
    this.#cancelTimer = this.#clock.after(delayMs, () => {
      this.#cancelTimer = undefined;
      this.#timerAtMs = Infinity;
      this.reconcile()
        .catch((e) => this.#log.error("reconcile round failed", { error: e }))
        .finally(() => this.#wake(this.#pollIntervalMs));
    });
  }

  #report(action: Extract<VmAction, { kind: "report" }>): void {
    const { name, state, reason } = action;
    this.#reported.set(name, { state, reason });
    try {
      this.#onChange({ name, state, reason, atMs: this.#clock.now() });
    } catch (e) {
      this.#log.error("onChange threw", { vm: name, error: e });
    }
  }

  #launch(action: Exclude<VmAction, { kind: "report" }>): void {
    this.#inProgress.set(action.name, action.kind);
    this.#log.info(action.kind, { vm: action.name });
    const task = this.#execute(action)
      .catch((e) => this.#log.error(`${action.kind} failed`, { vm: action.name, error: e }))
      .finally(() => {
        this.#inProgress.delete(action.name);
        this.#tasks.delete(task);
        this.#wake(0);
      });
    this.#tasks.add(task);
  }

  async #execute(action: Exclude<VmAction, { kind: "report" }>): Promise<void> {
    const name = action.name;
    switch (action.kind) {
      case "adopt":
        return this.#adopt(name);
      case "start": {
        const backend = this.#backends.get(action.spec.backend);
        if (backend === undefined) {
          this.#actual.set(name, {
            kind: "failed",
            generation: action.generation,
            reason: `start failed: this node has no ${JSON.stringify(action.spec.backend)} backend`,
          });
          return;
        }
        try {
          const handle = await backend.start(action.spec, { generation: action.generation });
          this.#handles.set(name, handle);
          this.#actual.set(name, {
            kind: "running",
            generation: action.generation,
            sinceMs: this.#clock.now(),
          });
        } catch (e) {
          if (e instanceof VmBackendError && e.code === "ALREADY_RUNNING") {
            // Its recorded process runs: adopt it rather than start a second one.
            this.#actual.set(name, { kind: "recorded" });
            return;
          }
          this.#handles.delete(name);
          this.#actual.set(name, {
            kind: "failed",
            generation: action.generation,
            reason: `start failed: ${(e as Error).message}`,
          });
        }
        return;
      }
      case "stop":
      case "kill": {
        const handle = this.#handles.get(name);
        const backend = handle && this.#backends.get(handle.backend);
        if (handle === undefined || backend === undefined) {
          this.#actual.delete(name);
          return;
        }
        const seen = action.kind === "stop"
          ? await backend.stop(handle, action.timeoutMs)
          : await backend.kill(handle);
        this.#record(name, handle.generation, seen);
        return;
      }
      case "forget":
        await removeVmDir(vmDir(this.#dataDir, name));
        this.#actual.delete(name);
        this.#handles.delete(name);
        this.#reported.delete(name);
        return;
    }
  }

  async #adopt(name: string): Promise<void> {
    let handle: VmHandle | undefined;
    try {
      handle = await readRecord(vmDir(this.#dataDir, name));
    } catch (e) {
      this.#actual.set(name, { kind: "recorded", error: `cannot adopt: ${(e as Error).message}` });
      return;
    }
    if (handle === undefined) {
      this.#actual.delete(name); // the record is gone: nothing of it is left here
      return;
    }
    const backend = this.#backends.get(handle.backend);
    if (backend === undefined) {
      this.#actual.set(name, {
        kind: "recorded",
        error: `cannot adopt: this node has no ${JSON.stringify(handle.backend)} backend`,
      });
      return;
    }
    const seen = await backend.adopt(handle);
    this.#handles.set(name, handle);
    this.#record(
      name,
      handle.generation,
      seen.kind === "running"
        ? seen
        : { ...seen, reason: `ended while the agent was not running: ${seen.reason}` },
    );
    this.#log.info("adopted", { vm: name, pid: handle.pid, seen: seen.kind });
  }

  #record(name: string, generation: number, seen: VmObservation): void {
    const before = this.#actual.get(name);
    switch (seen.kind) {
      case "running":
        this.#actual.set(name, {
          kind: "running",
          generation,
          sinceMs: before?.kind === "running" ? before.sinceMs : this.#clock.now(),
        });
        return;
      case "stopped":
        this.#actual.set(name, { kind: "stopped", generation, reason: seen.reason });
        return;
      case "exited":
      case "vanished":
        if (before?.kind === "running") {
          this.#log.warn("VM ended", { vm: name, reason: seen.reason });
        }
        this.#actual.set(name, { kind: "failed", generation, reason: seen.reason });
        return;
    }
  }
}
