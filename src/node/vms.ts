/**
 * VMs on a running node: the cluster half of `src/vm/`. Every node runs a
 * reconciler over the VMs the replicated state places on it and reports
 * their actual state through Raft; the leader also places new VMs and
 * handles the VMs of nodes it has lost.
 *
 * Owns: {@link VmNode}, {@link VmCapacity}. Imports config types, the
 * backends, reconciler, placement and spec rules of `src/vm/`, the state
 * machine's types, the consensus port and the generated VM messages.
 *
 * - The reconciler starts once this node has caught up with the log (a
 *   leader is known and everything committed is applied): before that the
 *   state may not list VMs this node runs, and a VM recorded under the data
 *   directory is left alone rather than stopped.
 * - Reports go to the leader in order, batched, retried with backoff until
 *   one is committed; a report from a node a VM is no longer placed on
 *   changes nothing (src/state/vms.ts).
 * - On the leader, a member not heard from for `[vm] node_lost_after_ms`, or
 *   a node that left, is lost: each VM on it whose restart policy is
 *   `on-failure` or `always`, and that is not pinned (`node_id`), is placed
 *   on another node that fits; every other one is marked LOST (left placed
 *   where it was, if that node is still a member, so it is taken up again
 *   when the node comes back).
 * - Placements and the proposals that follow them are serialized on the
 *   leader, so two creates never count the same free room.
 *
 * @module
 */

import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { AgentConfig } from "../config/mod.ts";
import { ConsensusError } from "../consensus/driver.ts";
import {
  type ReportVmStatusRequestSchema,
  VmDesiredState,
  type VmSpec,
  VmSpecSchema,
  VmState,
  type VmStatusReport,
  VmStatusReportSchema,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import type { ConsensusPort } from "../services/consensus_port.ts";
import type { ClusterState } from "../state/cluster_state.ts";
import type { Logger } from "../util/log.ts";
import type { VmBackend } from "../vm/backend.ts";
import type { DesiredVm } from "../vm/plan.ts";
import { PlacementError, type PlacementNode, placeVm } from "../vm/placement.ts";
import { ProcessBackend } from "../vm/process.ts";
import { QemuBackend } from "../vm/qemu.ts";
import { systemClock, type VmClock, VmReconciler, type VmStatusChange } from "../vm/reconciler.ts";
import { restartPolicyOf } from "../vm/spec.ts";
import { VM_PATH } from "../vm/supervisor.ts";

/** What a node offers to VMs, as its member record announces it. */
export interface VmCapacity {
  readonly vcpus: number;
  readonly memoryMib: number;
  /** The backends that can run here (a configured `qemu` whose binary is missing is left out). */
  readonly backends: readonly string[];
}

/** Options of {@link VmNode.open}. */
export interface VmNodeOptions {
  readonly config: AgentConfig;
  readonly port: ConsensusPort;
  /** The applied state machine; undefined before consensus runs. */
  readonly state: () => ClusterState | undefined;
  /**
   * Sends this node's reports to `leader` (Vm.ReportStatus); null when the
   * leader cannot be reached.
   */
  readonly sendReports: (
    leader: number,
    request: MessageInitShape<typeof ReportVmStatusRequestSchema>,
  ) => Promise<unknown> | null;
  /** When the last Raft message from a node arrived (`Date.now()` ms). */
  readonly lastHeardMs: (nodeId: number) => number | undefined;
  readonly logger: Logger;
  readonly clock?: VmClock;
  /** How often the node looks at the state for changes (default 50 ms). */
  readonly pollMs?: number;
}

/** Most reports in one Vm.ReportStatus call. */
export const MAX_REPORTS_PER_CALL = 256;
/** Reports kept while the leader cannot be reached; past this, only the latest of each VM. */
const MAX_PENDING_REPORTS = 10_000;
/** How often the leader looks for lost nodes, ms. */
const LOST_CHECK_MS = 1_000;
const REPORT_BACKOFF_MIN_MS = 200;
const REPORT_BACKOFF_MAX_MS = 5_000;
/**
 * How long a create that fits nowhere waits while members have not announced
 * what they offer (right after a cluster starts), ms; and how often it looks.
 */
const ANNOUNCE_WAIT_MS = 5_000;
const ANNOUNCE_POLL_MS = 50;

/** The VMs of this node, and on the leader, of the cluster. */
export class VmNode {
  readonly capacity: VmCapacity;
  readonly #o: VmNodeOptions;
  readonly #id: number;
  readonly #log: Logger;
  readonly #clock: VmClock;
  readonly #reconciler: VmReconciler;
  readonly #pollMs: number;
  #seen: { state: ClusterState; revision: number } | undefined;
  #running = false;
  #closed = false;
  #timer: (() => void) | undefined;
  #lastLostCheckMs = 0;
  #leaderSinceMs: number | undefined;
  readonly #waiters = new Set<() => void>();
  #reports: VmStatusChange[] = [];
  #sending = false;
  #backoffMs = 0;
  #placing: Promise<unknown> = Promise.resolve();
  /** What this node last made its reconciler run. */
  #lastDesired: readonly DesiredVm[] = [];
  /** VMs the agent stopped when it last stopped (on_agent_stop = stop), with their generation then. */
  #stoppedByAgent: ReadonlyMap<string, number> = new Map();

  private constructor(
    o: VmNodeOptions,
    capacity: VmCapacity,
    backends: readonly VmBackend[],
  ) {
    this.#o = o;
    this.#id = o.config.node.id;
    this.#log = o.logger.child("vm");
    this.#clock = o.clock ?? systemClock;
    this.#pollMs = o.pollMs ?? 50;
    this.capacity = capacity;
    this.#reconciler = new VmReconciler({
      dataDir: o.config.node.dataDir,
      backends,
      clock: this.#clock,
      onChange: (change) => this.#queueReport(change),
      logger: o.logger,
    });
  }

  /**
   * Builds the backends `[vm] backends` names (leaving out `qemu` when its
   * binary cannot be found, with a warning) and reads the VMs recorded under
   * the data directory by an earlier run.
   */
  static async open(o: VmNodeOptions): Promise<VmNode> {
    const vm = o.config.vm;
    const log = o.logger.child("vm");
    const dataDir = o.config.node.dataDir;
    const backends: VmBackend[] = [];
    for (const name of vm.backends) {
      if (name === "process") {
        backends.push(new ProcessBackend({ dataDir, logger: o.logger }));
        continue;
      }
      const qemu = await findExecutable(vm.qemuBinary);
      if (qemu === undefined) {
        log.warn("the qemu backend is off: its binary is not found; no qemu VM is placed here", {
          qemu_binary: vm.qemuBinary,
          fix: "apt-get install qemu-system-x86, or set [vm] qemu_binary",
        });
        continue;
      }
      backends.push(new QemuBackend({ dataDir, qemu, accel: vm.accel, logger: o.logger }));
    }
    const capacity: VmCapacity = {
      vcpus: vm.vcpus ?? navigator.hardwareConcurrency,
      memoryMib: vm.memoryMib ?? Math.floor(Deno.systemMemoryInfo().total / (1 << 20)),
      backends: backends.map((b) => b.name),
    };
    const node = new VmNode(o, capacity, backends);
    await node.#reconciler.open();
    node.#stoppedByAgent = await readStoppedByAgent(dataDir, log);
    return node;
  }

  /** Starts watching the state (and, once caught up, reconciling). */
  start(): void {
    this.#schedule();
  }

  /**
   * Stops reconciling and reporting. With `[vm] on_agent_stop = "leave"` the
   * VMs keep running (they outlive the agent); with `"stop"` they are first
   * stopped as a Stop would, waiting at most `withinMs`, and recorded so the
   * next start starts them again.
   */
  async close(withinMs = 0): Promise<void> {
    this.#closed = true;
    this.#timer?.();
    for (const wake of this.#waiters) wake();
    if (this.#o.config.vm.onAgentStop === "stop" && this.#running) await this.#stopAll(withinMs);
    await this.#reconciler.close();
  }

  async #stopAll(withinMs: number): Promise<void> {
    const running = this.#lastDesired.filter((d) => d.spec.desiredState !== VmDesiredState.STOPPED);
    if (running.length === 0) return;
    this.#reconciler.setDesired(this.#lastDesired.map((d) => ({
      ...d,
      spec: create(VmSpecSchema, { ...d.spec, desiredState: VmDesiredState.STOPPED }),
    })));
    const stopped = (async () => {
      await this.#reconciler.reconcile();
      await this.#reconciler.idle();
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = await Promise.race([
      stopped.then(() => false),
      new Promise<boolean>((r) => timer = setTimeout(() => r(true), withinMs)),
    ]);
    clearTimeout(timer);
    if (late) this.#log.warn("VMs still stopping when the agent stopped", { within_ms: withinMs });
    const record: Record<string, number> = {};
    for (const d of running) record[d.spec.name] = Math.floor(d.generation / 2);
    await Deno.writeTextFile(
      join(this.#o.config.node.dataDir, STOPPED_BY_AGENT_FILE),
      JSON.stringify(record),
    ).catch((e) => this.#log.error("cannot record the VMs the agent stopped", { error: e }));
    this.#log.info("stopped this node's VMs (vm.on_agent_stop = stop)", {
      vms: Object.keys(record).join(","),
    });
  }

  /**
   * Resolves once the VMs change after `revision` (a VM event index), or the
   * state is replaced by a snapshot, or `signal` aborts, or the node closes.
   */
  changed(revision: number, signal: AbortSignal): Promise<void> {
    const s = this.#o.state();
    if (this.#closed || signal.aborted || (s && s.vmRevision > revision)) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.#waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /**
   * Creates a VM on the leader: places it and proposes it, serialized with
   * other placements. While no node fits and some member has not announced
   * what it offers yet (a cluster that just started), it waits for them, up
   * to {@link ANNOUNCE_WAIT_MS} and `deadline` (`Date.now()` ms), rather than
   * refuse a create that fits once they have.
   *
   * @throws {ConsensusError} NOT_LEADER on another node.
   * @throws {PlacementError} when no node can take it.
   */
  async create(spec: VmSpec, deadline = Infinity): ReturnType<ConsensusPort["propose"]> {
    const waitUntil = this.#clock.now() + ANNOUNCE_WAIT_MS;
    for (;;) {
      try {
        return await this.#serialized(() => {
          const state = this.#leaderState();
          const nodeId = this.#place(state, spec);
          return this.#o.port.propose({
            kind: "vm_create",
            spec,
            nodeId,
            atMs: this.#clock.now(),
          });
        });
      } catch (e) {
        const wait = e instanceof PlacementError && this.#unannounced().length > 0 &&
          this.#clock.now() + ANNOUNCE_POLL_MS < waitUntil &&
          Date.now() + ANNOUNCE_POLL_MS < deadline && !this.#closed;
        if (!wait) throw e;
        await new Promise<void>((resolve) => this.#clock.after(ANNOUNCE_POLL_MS, resolve));
      }
    }
  }

  /**
   * Members (voters and learners) that have not announced what they offer:
   * no record, or one without capacity (a record written from the config's
   * peers has addresses only; an announced one has at least 1 vcpu).
   */
  #unannounced(): number[] {
    const state = this.#o.state();
    const status = this.#o.port.status();
    return [...status.voters, ...status.learners].filter((id) => !state?.member(id)?.vcpus);
  }

  /**
   * Sets a VM's desired state on the leader. Starting a VM that is LOST, or
   * not placed, places it anew first.
   *
   * @throws {ConsensusError} NOT_LEADER on another node.
   * @throws {PlacementError} when a VM to start has nowhere to go.
   */
  setDesired(
    name: string,
    desiredState: VmDesiredState,
    force: boolean,
  ): ReturnType<ConsensusPort["propose"]> {
    return this.#serialized(async () => {
      const state = this.#leaderState();
      const record = state.vm(name);
      const status = record?.vm?.status;
      if (
        record && status && desiredState === VmDesiredState.RUNNING &&
        (status.state === VmState.LOST || status.nodeId === 0n)
      ) {
        const from = Number(status.nodeId);
        const to = this.#place(state, record.vm!.spec!);
        // Back on its own node, the VM needs no move: that node reports it again.
        if (to !== from) {
          await this.#o.port.propose({
            kind: "vm_place",
            name,
            fromNodeId: from,
            nodeId: to,
            reason: `started again: placed on node ${to}`,
            atMs: this.#clock.now(),
          });
        }
      }
      return this.#o.port.propose({
        kind: "vm_desired",
        name,
        desiredState,
        force,
        atMs: this.#clock.now(),
      });
    });
  }

  /** Proposes node `nodeId`'s reports (on the leader; NOT_LEADER elsewhere). */
  async applyReports(nodeId: number, reports: readonly VmStatusReport[]): Promise<void> {
    await Promise.all(reports.map((r) =>
      this.#o.port.propose({
        kind: "vm_report",
        name: r.name,
        nodeId,
        state: r.state,
        reason: r.exitReason,
        atMs: r.at ? timestampMs(r.at) : this.#clock.now(),
      })
    ));
  }

  /** The nodes as placement sees them now (this node must lead for `alive` to mean anything). */
  placementNodes(state: ClusterState): PlacementNode[] {
    const status = this.#o.port.status();
    const now = this.#clock.now();
    const allocated = new Map<number, { vcpus: number; memoryMib: bigint }>();
    for (const r of state.vms()) {
      const id = Number(r.vm?.status?.nodeId ?? 0n);
      const a = allocated.get(id) ?? { vcpus: 0, memoryMib: 0n };
      allocated.set(id, {
        vcpus: a.vcpus + (r.vm?.spec?.vcpus ?? 0),
        memoryMib: a.memoryMib + (r.vm?.spec?.memoryMib ?? 0n),
      });
    }
    return [...status.voters, ...status.learners].sort((a, b) => a - b).map((id) => {
      const record = state.member(id);
      const a = allocated.get(id) ?? { vcpus: 0, memoryMib: 0n };
      return {
        nodeId: BigInt(id),
        vcpus: record?.vcpus ?? 0,
        memoryMib: record?.memoryMib ?? 0n,
        allocatedVcpus: a.vcpus,
        allocatedMemoryMib: a.memoryMib,
        alive: id === this.#id || this.#silentForMs(id, now) <= this.#o.config.vm.nodeLostAfterMs,
        backends: record?.backends ?? [],
      };
    });
  }

  #leaderState(): ClusterState {
    const port = this.#o.port;
    const state = this.#o.state();
    if (port.leader() !== this.#id || state === undefined) {
      throw new ConsensusError("NOT_LEADER", `node ${this.#id} is not the leader`, port.leader());
    }
    return state;
  }

  #place(state: ClusterState, spec: VmSpec, excluding?: number): number {
    const nodes = this.placementNodes(state).filter((n) => Number(n.nodeId) !== excluding);
    return Number(placeVm(spec, nodes));
  }

  #serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#placing.then(fn);
    this.#placing = run.catch(() => {});
    return run;
  }

  /** How long since node `id` was last heard from, counting from when this node began to lead. */
  #silentForMs(id: number, now: number): number {
    const since = Math.max(this.#o.lastHeardMs(id) ?? 0, this.#leaderSinceMs ?? now);
    return now - since;
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = this.#clock.after(this.#pollMs, () => {
      try {
        this.#poll();
      } catch (e) {
        this.#log.error("watching the VM state failed", { error: e });
      }
      this.#schedule();
    });
  }

  #poll(): void {
    const state = this.#o.state();
    if (state === undefined) return;
    const status = this.#o.port.status();
    if (!this.#running) {
      // Caught up: a leader is known and everything committed is applied.
      if (status.leader === 0 || state.appliedIndex < status.commit) return;
      this.#running = true;
      this.#seen = undefined;
      this.#reconciler.run();
    }
    const revision = state.vmRevision;
    if (this.#seen?.state !== state || this.#seen.revision !== revision) {
      this.#seen = { state, revision };
      const desired = this.#lastDesired = this.#desired(state, status);
      this.#reconciler.setDesired(desired);
      this.#resyncReports(state, desired);
      for (const wake of [...this.#waiters]) wake();
    }
    if (status.leader !== this.#id) {
      this.#leaderSinceMs = undefined;
      return;
    }
    const now = this.#clock.now();
    this.#leaderSinceMs ??= now;
    if (now - this.#lastLostCheckMs >= LOST_CHECK_MS) {
      this.#lastLostCheckMs = now;
      this.#handleLostNodes(state, now);
    }
  }

  /** The VMs placed on this node; none once this node is no longer a member. */
  #desired(
    state: ClusterState,
    status: ReturnType<ConsensusPort["status"]>,
  ): DesiredVm[] {
    if (!status.voters.includes(this.#id) && !status.learners.includes(this.#id)) return [];
    const desired: DesiredVm[] = [];
    for (const r of state.vms()) {
      if (r.vm?.status?.nodeId !== BigInt(this.#id) || !r.vm.spec) continue;
      desired.push({
        spec: r.vm.spec,
        // Twice the Raft index of the last Start or Stop; one more for a VM the agent
        // stopped when it last stopped, so the plan sees a newer generation and starts it.
        generation: 2 * Number(r.generation) +
          (this.#stoppedByAgent.get(r.vm.spec.name) === Number(r.generation) ? 1 : 0),
        ...(r.forceStop ? { forceStop: true } : {}),
      });
    }
    return desired;
  }

  /**
   * Reports again each VM whose recorded state is not what this node last
   * reported and has no report on the way (the leader marked it LOST while
   * this node was cut off, or a report was lost).
   */
  #resyncReports(state: ClusterState, desired: readonly DesiredVm[]): void {
    if (this.#sending || this.#reports.length > 0) return;
    for (const d of desired) {
      const mine = this.#reconciler.reported.get(d.spec.name);
      const recorded = state.vm(d.spec.name)?.vm?.status;
      if (
        mine && recorded && (mine.state !== recorded.state || mine.reason !== recorded.exitReason)
      ) {
        this.#reconciler.resync(d.spec.name);
      }
    }
  }

  #handleLostNodes(state: ClusterState, now: number): void {
    const status = this.#o.port.status();
    const members = new Set([...status.voters, ...status.learners]);
    const lostAfterMs = this.#o.config.vm.nodeLostAfterMs;
    for (const r of state.vms()) {
      const vm = r.vm;
      const from = Number(vm?.status?.nodeId ?? 0n);
      if (!vm?.spec || from === 0 || from === this.#id) continue;
      const member = members.has(from);
      const silentMs = member ? this.#silentForMs(from, now) : Infinity;
      if (member && (silentMs <= lostAfterMs || vm.status!.state === VmState.LOST)) continue;
      const why = member
        ? `node ${from} not heard from for ${Math.round(silentMs / 1000)} s`
        : `node ${from} left the cluster`;
      this.#relocate(vm.spec, from, member, why).catch((e) =>
        this.#log.warn("cannot handle a VM of a lost node", { vm: vm.spec!.name, error: e })
      );
    }
  }

  /** Moves a lost node's VM where its policy says so, else marks it LOST. */
  #relocate(spec: VmSpec, from: number, member: boolean, why: string): Promise<unknown> {
    return this.#serialized(async () => {
      const state = this.#leaderState();
      const current = state.vm(spec.name)?.vm?.status;
      if (Number(current?.nodeId ?? 0n) !== from) return; // moved meanwhile
      const stay = member ? from : 0;
      let to = stay;
      let reason: string;
      const policy = restartPolicyOf(spec);
      if (policy === "never") {
        reason = `${why}; restart policy "never" keeps it there`;
      } else if (spec.nodeId !== 0n) {
        reason = `${why}; it is pinned to that node (node_id)`;
      } else {
        try {
          to = this.#place(state, spec, from);
          reason = `${why}: moved to node ${to} (restart policy "${policy}")`;
        } catch (e) {
          if (!(e instanceof PlacementError)) throw e;
          reason = `${why}; no other node can take it: ${e.message}`;
        }
      }
      this.#log.warn("VM of a lost node", { vm: spec.name, from, to, reason });
      await this.#o.port.propose({
        kind: "vm_place",
        name: spec.name,
        fromNodeId: from,
        nodeId: to,
        reason,
        atMs: this.#clock.now(),
      });
    });
  }

  #queueReport(change: VmStatusChange): void {
    this.#reports.push(change);
    if (this.#reports.length > MAX_PENDING_REPORTS) {
      // The leader is long out of reach: only the latest state of each VM still matters.
      const latest = new Map(this.#reports.map((r) => [r.name, r]));
      this.#reports = [...latest.values()];
    }
    this.#flush();
  }

  #flush(): void {
    if (this.#sending || this.#closed || this.#reports.length === 0) return;
    this.#sending = true;
    const batch = this.#reports.slice(0, MAX_REPORTS_PER_CALL);
    this.#send(batch).then(
      () => {
        this.#reports.splice(0, batch.length);
        this.#backoffMs = 0;
        this.#sending = false;
        this.#flush();
      },
      (e) => {
        this.#backoffMs = Math.min(
          REPORT_BACKOFF_MAX_MS,
          Math.max(REPORT_BACKOFF_MIN_MS, this.#backoffMs * 2),
        );
        this.#log.debug("reporting VM states failed; retrying", {
          error: e,
          retry_ms: this.#backoffMs,
        });
        this.#clock.after(this.#backoffMs, () => {
          this.#sending = false;
          this.#flush();
        });
      },
    );
  }

  async #send(batch: readonly VmStatusChange[]): Promise<void> {
    const reports = batch.map((c) =>
      create(VmStatusReportSchema, {
        name: c.name,
        state: c.state,
        exitReason: c.reason,
        at: timestampFromMs(c.atMs),
      })
    );
    const leader = this.#o.port.leader();
    if (leader === 0) throw new Error("no leader known");
    if (leader === this.#id) return await this.applyReports(this.#id, reports);
    const sent = this.#o.sendReports(leader, { nodeId: BigInt(this.#id), reports });
    if (sent === null) throw new Error(`cannot reach the leader, node ${leader}`);
    await sent;
  }
}

/** Under the data directory: the VMs a graceful stop stopped, by name, with their generation. */
const STOPPED_BY_AGENT_FILE = "vms-stopped-by-agent.json";

/** Reads and removes what the last graceful stop recorded; empty when nothing was. */
async function readStoppedByAgent(dataDir: string, log: Logger): Promise<Map<string, number>> {
  const path = join(dataDir, STOPPED_BY_AGENT_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return new Map();
  }
  await Deno.remove(path).catch(() => {});
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    return new Map(
      Object.entries(parsed).filter((e): e is [string, number] => typeof e[1] === "number"),
    );
  } catch (e) {
    log.warn("cannot read the VMs the agent stopped last time; none is restarted", {
      file: path,
      error: e,
    });
    return new Map();
  }
}

/** `name` as an executable: a path as given, else the first match on PATH. */
async function findExecutable(name: string): Promise<string | undefined> {
  const candidates = name.includes("/")
    ? [name]
    : [...new Set([...(Deno.env.get("PATH") ?? "").split(":"), ...VM_PATH.split(":")])]
      .filter((d) => d !== "")
      .map((d) => join(d, name));
  for (const path of candidates) {
    const info = await Deno.stat(path).catch(() => undefined);
    if (info?.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
  }
  return undefined;
}
