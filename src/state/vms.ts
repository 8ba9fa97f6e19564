/**
 * The VMs of the replicated cluster state: their specs and where they are
 * placed (changed only by commands in the Raft log), their actual state as
 * their nodes report it, and the recent history of changes that
 * WatchEvents replays.
 *
 * Owns: {@link VmTable}, the VM commands' rules, {@link VM_EVENT_HISTORY}.
 * Pure: imports the generated messages, `@bufbuild/protobuf` and the spec
 * validation of `src/vm/spec.ts` (itself pure); no I/O, no clock (times come
 * in the commands), so every node that applies the same entries holds the
 * same VMs and the same history.
 *
 * Rules (docs/vm.md, "In the cluster"):
 * - Create: a name must be new; the spec must validate; the VM is placed on
 *   the node the proposer chose, PENDING, desired state RUNNING unless
 *   STOPPED was asked.
 * - Start and Stop set the desired state and a new generation (the log
 *   index), so a VM that ended is started again for a newer Start.
 * - Delete removes the VM; its node then stops it and forgets it.
 * - A report changes the actual state only if it comes from the node the VM
 *   is placed on (a late report from a node it moved away from changes
 *   nothing).
 * - A place command acts only if the VM is still on the node it names as
 *   `from`: to another node, it moves the VM there (PENDING); to the same
 *   node, it marks the VM LOST and leaves it placed there, so the node takes
 *   it up again if it comes back; to node 0, it marks it LOST and unplaced.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Vm,
  VmDesiredState,
  type VmEvent,
  VmEventKind,
  VmEventSchema,
  VmSchema,
  type VmSpec,
  VmSpecSchema,
  VmState,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import { type VmRecord, VmRecordSchema } from "../rpc/gen/blixard/v1/state_pb.ts";
import { vmSpecIssues } from "../vm/spec.ts";

/** How many recent VM events the state keeps for WatchEvents to resume from. */
export const VM_EVENT_HISTORY = 10_000;

/** Most VMs the cluster holds. */
export const MAX_VMS = 10_000;

/**
 * A VM command of the Raft log. Times are the proposer's wall clock, ms.
 * Operator commands carry a request id, as metadata writes do.
 */
export type VmCommand =
  & (
    | {
      readonly kind: "vm_create";
      readonly spec: VmSpec;
      readonly nodeId: number;
      readonly atMs: number;
    }
    | {
      readonly kind: "vm_desired";
      readonly name: string;
      readonly desiredState: VmDesiredState;
      readonly force: boolean;
      readonly atMs: number;
    }
    | { readonly kind: "vm_delete"; readonly name: string; readonly atMs: number }
    | {
      readonly kind: "vm_report";
      readonly name: string;
      readonly nodeId: number;
      readonly state: VmState;
      readonly reason: string;
      readonly atMs: number;
    }
    | {
      readonly kind: "vm_place";
      readonly name: string;
      readonly fromNodeId: number;
      readonly nodeId: number;
      readonly reason: string;
      readonly atMs: number;
    }
  )
  & { readonly requestId?: string };

/** What applying a VM command did. */
export type VmApplyResult =
  | { readonly ok: true; readonly kind: "vm"; readonly vm: Vm }
  | { readonly ok: true; readonly kind: "vm_deleted" }
  | { readonly ok: true; readonly kind: "vm_unchanged" }
  | {
    readonly ok: false;
    readonly code: "INVALID_ARGUMENT" | "NOT_FOUND" | "ALREADY_EXISTS" | "RESOURCE_EXHAUSTED";
    readonly message: string;
  };

/** The VMs and their recent events. */
export class VmTable {
  readonly #vms = new Map<string, VmRecord>();
  /** Oldest first; at most {@link VM_EVENT_HISTORY} and a half (trimmed in halves). */
  #events: VmEvent[] = [];
  /** The index of the newest event dropped from the history; 0 when none was. */
  #droppedThrough = 0;

  /** Applies one VM command at log `index`. */
  apply(index: number, c: VmCommand): VmApplyResult {
    switch (c.kind) {
      case "vm_create":
        return this.#create(index, c);
      case "vm_desired": {
        const r = this.#vms.get(c.name);
        if (!r) return notFound(c.name);
        const spec = create(VmSpecSchema, { ...r.vm!.spec!, desiredState: c.desiredState });
        const next = this.#put(c.name, {
          vm: { ...r.vm!, spec },
          generation: BigInt(index),
          forceStop: c.desiredState === VmDesiredState.STOPPED && c.force,
        });
        this.#event(index, c.atMs, VmEventKind.SPEC_CHANGED, next.vm!);
        return { ok: true, kind: "vm", vm: next.vm! };
      }
      case "vm_delete": {
        const r = this.#vms.get(c.name);
        if (!r) return notFound(c.name);
        this.#vms.delete(c.name);
        this.#event(index, c.atMs, VmEventKind.DELETED, r.vm!);
        return { ok: true, kind: "vm_deleted" };
      }
      case "vm_report": {
        const r = this.#vms.get(c.name);
        const status = r?.vm?.status;
        if (!r || !status || Number(status.nodeId) !== c.nodeId) {
          return { ok: true, kind: "vm_unchanged" };
        }
        if (status.state === c.state && status.exitReason === c.reason) {
          return { ok: true, kind: "vm_unchanged" };
        }
        const at = timestampFromMs(c.atMs);
        const next = this.#put(c.name, {
          ...r,
          vm: {
            ...r.vm!,
            status: {
              ...status,
              state: c.state,
              exitReason: c.reason,
              stateChangedAt: at,
              ...(c.state === VmState.RUNNING && status.state !== VmState.RUNNING
                ? { startedAt: at }
                : {}),
            },
          },
        });
        this.#event(index, c.atMs, VmEventKind.STATUS_CHANGED, next.vm!);
        return { ok: true, kind: "vm", vm: next.vm! };
      }
      case "vm_place": {
        const r = this.#vms.get(c.name);
        const status = r?.vm?.status;
        if (!r || !status || Number(status.nodeId) !== c.fromNodeId) {
          return { ok: true, kind: "vm_unchanged" };
        }
        const lost = c.nodeId === 0 || c.nodeId === c.fromNodeId;
        if (lost && c.nodeId !== 0 && status.state === VmState.LOST) {
          return { ok: true, kind: "vm_unchanged" };
        }
        const next = this.#put(c.name, {
          ...r,
          vm: {
            ...r.vm!,
            status: {
              ...status,
              nodeId: BigInt(c.nodeId),
              state: lost ? VmState.LOST : VmState.PENDING,
              exitReason: c.reason,
              stateChangedAt: timestampFromMs(c.atMs),
            },
          },
        });
        this.#event(index, c.atMs, VmEventKind.STATUS_CHANGED, next.vm!);
        return { ok: true, kind: "vm", vm: next.vm! };
      }
    }
  }

  #create(index: number, c: Extract<VmCommand, { kind: "vm_create" }>): VmApplyResult {
    const issues = vmSpecIssues(c.spec);
    if (issues.length > 0) {
      return {
        ok: false,
        code: "INVALID_ARGUMENT",
        message: `vm ${JSON.stringify(c.spec.name)}: ${
          issues.map((i) => `${i.field}: ${i.message}`).join("; ")
        }`,
      };
    }
    if (this.#vms.has(c.spec.name)) {
      return { ok: false, code: "ALREADY_EXISTS", message: `vm "${c.spec.name}" already exists` };
    }
    if (this.#vms.size >= MAX_VMS) {
      return {
        ok: false,
        code: "RESOURCE_EXHAUSTED",
        message: `the cluster holds ${MAX_VMS} VMs already`,
      };
    }
    const at = timestampFromMs(c.atMs);
    const spec = create(VmSpecSchema, {
      ...c.spec,
      desiredState: c.spec.desiredState === VmDesiredState.STOPPED
        ? VmDesiredState.STOPPED
        : VmDesiredState.RUNNING,
    });
    const vm = create(VmSchema, {
      spec,
      status: {
        state: VmState.PENDING,
        nodeId: BigInt(c.nodeId),
        createdAt: at,
        stateChangedAt: at,
      },
    });
    this.#put(c.spec.name, { vm, generation: BigInt(index), forceStop: false });
    this.#event(index, c.atMs, VmEventKind.CREATED, vm);
    return { ok: true, kind: "vm", vm };
  }

  #put(name: string, r: Omit<VmRecord, "$typeName">): VmRecord {
    const record = create(VmRecordSchema, r);
    this.#vms.set(name, record);
    return record;
  }

  #event(index: number, atMs: number, kind: VmEventKind, vm: Vm): void {
    this.#events.push(
      create(VmEventSchema, { kind, vm, time: timestampFromMs(atMs), index: BigInt(index) }),
    );
    if (this.#events.length > VM_EVENT_HISTORY + VM_EVENT_HISTORY / 2) {
      // Trimmed in halves, so trimming costs nothing per event on average.
      const drop = this.#events.length - VM_EVENT_HISTORY;
      this.#droppedThrough = Number(this.#events[drop - 1]!.index);
      this.#events = this.#events.slice(drop);
    }
  }

  /** The VM named `name`. */
  get(name: string): VmRecord | undefined {
    return this.#vms.get(name);
  }

  /** Every VM, by name. */
  list(): VmRecord[] {
    return [...this.#vms.keys()].sort().map((n) => this.#vms.get(n)!);
  }

  /** The index of the newest VM event (0 before the first): it grows with every VM change. */
  get revision(): number {
    const last = this.#events.at(-1);
    return last ? Number(last.index) : this.#droppedThrough;
  }

  /** How many VMs. */
  get size(): number {
    return this.#vms.size;
  }

  /**
   * The events after `revision` (a log index), oldest first; null when the
   * history no longer reaches back that far (the caller must start over).
   */
  eventsAfter(revision: number): VmEvent[] | null {
    if (revision < this.#droppedThrough) return null;
    // Events are in index order: find the first one after `revision`.
    let lo = 0;
    let hi = this.#events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (Number(this.#events[mid]!.index) > revision) hi = mid;
      else lo = mid + 1;
    }
    return this.#events.slice(lo);
  }

  /** The records, the events and how far events were dropped, for a snapshot. */
  snapshot(): { vms: VmRecord[]; events: VmEvent[]; droppedThrough: number } {
    return { vms: this.list(), events: [...this.#events], droppedThrough: this.#droppedThrough };
  }

  /** Restores what {@link snapshot} gave. */
  static restore(
    vms: readonly VmRecord[],
    events: readonly VmEvent[],
    droppedThrough: number,
  ): VmTable {
    const t = new VmTable();
    for (const r of vms) t.#vms.set(r.vm!.spec!.name, r);
    t.#events = [...events];
    t.#droppedThrough = droppedThrough;
    return t;
  }
}

function notFound(name: string): VmApplyResult {
  return { ok: false, code: "NOT_FOUND", message: `vm "${name}" does not exist` };
}

/** A command's time as a Timestamp. */
export function timestampOf(ms: number): Timestamp {
  return timestampFromMs(ms);
}

/** A Timestamp as ms. */
export function msOf(t: Timestamp | undefined): number {
  return t ? timestampMs(t) : 0;
}
