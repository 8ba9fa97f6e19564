/**
 * The Vm service (proto/blixard/v1/vm.proto): changes to VMs committed
 * through Raft on the leader (a follower forwards them), linearizable reads
 * on any node, the event stream, and the nodes' status reports.
 *
 * Owns: {@link vmService}, {@link VmPort}. Imports `rpc/` types, the
 * generated messages, the state machine's types, spec validation and
 * placement errors of `src/vm/`, and the consensus port.
 *
 * @module
 */

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, RpcError } from "../rpc/errors.ts";
import {
  type Vm as VmMessage,
  VmDesiredState,
  type VmEvent,
  VmEventKind,
  VmEventSchema,
  VmSchema,
  type VmService,
  type VmSpec,
  VmSpecSchema,
  type VmStatusReport,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import { type Client, type PeerInfo, type ServiceImpl, Vm } from "../rpc/services.ts";
import type { ApplyResult, ClusterState } from "../state/cluster_state.ts";
import { VM_EVENT_HISTORY } from "../state/vms.ts";
import { PlacementError } from "../vm/placement.ts";
import { VM_SPEC_LIMITS, vmSpecIssues } from "../vm/spec.ts";
import {
  applyResultOrThrow,
  type ConsensusPort,
  deadlineOf,
  type LeaderClients,
  onLeader,
  toRpcError,
} from "./consensus_port.ts";

/** What the Vm service needs of the node's VM half (src/node/vms.ts). */
export interface VmPort {
  /**
   * Places and proposes a new VM (leader only: NOT_LEADER elsewhere); waits up
   * to `deadline` (`Date.now()` ms) for members that have not announced yet.
   */
  create(spec: VmSpec, deadline?: number): Promise<ApplyResult>;
  /** Sets a VM's desired state (leader only). */
  setDesired(name: string, desired: VmDesiredState, force: boolean): Promise<ApplyResult>;
  /** Proposes a node's reports (leader only). */
  applyReports(nodeId: number, reports: readonly VmStatusReport[]): Promise<void>;
  /** Resolves once the VMs change after `revision`, or `signal` aborts. */
  changed(revision: number, signal: AbortSignal): Promise<void>;
}

/** What the Vm service is given. */
export interface VmServiceOptions {
  readonly port: ConsensusPort;
  readonly leaders: LeaderClients;
  /** The node's VM half; undefined until it runs (calls then get UNAVAILABLE). */
  readonly vms: () => VmPort | undefined;
  /** The applied state machine of this node. */
  readonly state: () => ClusterState | undefined;
  /** Whether `peer` is node `nodeId` itself; null when it is, else why not. */
  readonly authorizeNode: (peer: PeerInfo, nodeId: number) => { reason: string } | null;
}

type VmClient = Client<typeof VmService>;
/** What Create, Start and Stop answer. */
type VmAnswer = { vm?: VmMessage };

/** Most VMs in one List answer. */
export const MAX_LIST_PAGE = 1000;
/** An answer stops before it passes this many bytes. */
const MAX_LIST_BYTES = 4 * 1024 * 1024;
/** Most reports in one ReportStatus call. */
export const MAX_REPORTS = 256;

/** The Vm implementation over consensus and the node's VMs. */
export function vmService(o: VmServiceOptions): ServiceImpl<typeof VmService> {
  const { port } = o;
  const vms = (what: string): VmPort => {
    const v = o.vms();
    if (!v) throw new RpcError(Code.UNAVAILABLE, `${what}: VMs are not running on this node yet`);
    return v;
  };
  /** Runs `local` on the leader, or forwards with `forward`; placement errors become RPC errors. */
  const change = <T>(
    what: string,
    local: () => Promise<T>,
    forward: (client: VmClient) => Promise<T>,
  ) =>
    onLeader(port, what, async () => {
      try {
        return await local();
      } catch (e) {
        throw e instanceof PlacementError ? placementError(what, e) : e;
      }
    }, (leader) => {
      const client = o.leaders(Vm, leader);
      return client ? forward(client) : null;
    });
  const read = async <T>(what: string, fn: (state: ClusterState) => T): Promise<T> => {
    try {
      return await port.read(fn);
    } catch (e) {
      throw toRpcError(e, what);
    }
  };
  const vmOf = (what: string, r: ApplyResult): VmMessage => applyResultOrThrow(r, "vm", what).vm;
  /** Start and Stop: set the desired state on the leader. */
  const desired = (
    what: string,
    name: string,
    state: VmDesiredState,
    force: boolean,
    forward: (client: VmClient) => Promise<VmAnswer>,
  ) => {
    checkName(what, name);
    return change(
      what,
      async (): Promise<VmAnswer> => ({
        vm: vmOf(what, await vms(what).setDesired(name, state, force)),
      }),
      forward,
    );
  };

  return {
    create(req, ctx) {
      const what = "vm.Create";
      const spec = req.spec ?? create(VmSpecSchema, {});
      const issues = vmSpecIssues(spec);
      if (issues.length > 0) {
        throw new RpcError(
          Code.INVALID_ARGUMENT,
          `${what}: vm ${JSON.stringify(spec.name.slice(0, 80))}: ${
            issues.map((i) => `${i.field}: ${i.message}`).join("; ")
          }`,
        );
      }
      return change(
        what,
        async (): Promise<VmAnswer> => ({
          vm: vmOf(what, await vms(what).create(spec, ctx.deadline ?? undefined)),
        }),
        (c) => c.create(req, deadlineOf(ctx.deadline)),
      );
    },

    start(req, ctx) {
      return desired(
        "vm.Start",
        req.name,
        VmDesiredState.RUNNING,
        false,
        (c) => c.start(req, deadlineOf(ctx.deadline)),
      );
    },

    stop(req, ctx) {
      return desired(
        "vm.Stop",
        req.name,
        VmDesiredState.STOPPED,
        req.force,
        (c) => c.stop(req, deadlineOf(ctx.deadline)),
      );
    },

    delete(req, ctx) {
      const what = "vm.Delete";
      checkName(what, req.name);
      return change(
        what,
        async () => {
          const r = await port.propose({ kind: "vm_delete", name: req.name, atMs: Date.now() });
          applyResultOrThrow(r, "vm_deleted", what);
          return {};
        },
        (c) => c.delete(req, deadlineOf(ctx.deadline)),
      );
    },

    async get(req) {
      const what = "vm.Get";
      checkName(what, req.name);
      const record = await read(what, (s) => s.vm(req.name));
      if (!record?.vm) {
        throw new RpcError(
          Code.NOT_FOUND,
          `${what}: vm ${JSON.stringify(req.name)} does not exist`,
        );
      }
      return { vm: record.vm };
    },

    async list(req) {
      const what = "vm.List";
      if (req.pageSize > MAX_LIST_PAGE) {
        throw new RpcError(
          Code.INVALID_ARGUMENT,
          `${what}: page_size ${req.pageSize}: expected 0 to ${MAX_LIST_PAGE}`,
        );
      }
      const pageSize = req.pageSize === 0 ? MAX_LIST_PAGE : req.pageSize;
      const matching = await read(
        what,
        (s) =>
          s.vms().map((r) => r.vm!).filter((vm) =>
            vm.spec!.name > req.pageToken &&
            (req.nodeId === undefined || vm.status?.nodeId === req.nodeId) &&
            (req.state === undefined || vm.status?.state === req.state)
          ),
      );
      const page: VmMessage[] = [];
      let bytes = 0;
      for (const vm of matching) {
        const size = toBinary(VmSchema, vm).length + 8;
        if (page.length === pageSize || (page.length > 0 && bytes + size > MAX_LIST_BYTES)) break;
        page.push(vm);
        bytes += size;
      }
      return {
        vms: page,
        nextPageToken: page.length < matching.length ? page.at(-1)!.spec!.name : "",
      };
    },

    async *watchEvents(req, ctx) {
      const what = "vm.WatchEvents";
      if (req.name !== "") checkName(what, req.name);
      const node = vms(what);
      const matches = (e: VmEvent) =>
        (req.name === "" || e.vm?.spec?.name === req.name) &&
        (req.nodeId === undefined || e.vm?.status?.nodeId === req.nodeId);
      let revision: number;
      if (req.includeExisting) {
        const existing = await read(what, (s) => ({
          revision: s.vmRevision,
          vms: s.vms().map((r) => r.vm!),
        }));
        revision = existing.revision;
        for (const vm of existing.vms) {
          const event = create(VmEventSchema, {
            kind: VmEventKind.EXISTING,
            vm,
            time: vm.status?.stateChangedAt,
            index: BigInt(revision),
          });
          if (matches(event)) yield event;
        }
      } else if (req.fromRevision > 0n) {
        await read(what, () => undefined); // see every change committed before the call
        revision = Number(req.fromRevision);
      } else {
        revision = await read(what, (s) => s.vmRevision);
      }
      for (;;) {
        ctx.signal.throwIfAborted();
        const state = o.state();
        const events = state?.vmEventsAfter(revision);
        if (events === null) {
          throw new RpcError(
            Code.OUT_OF_RANGE,
            `${what}: revision ${revision} is older than the last ${VM_EVENT_HISTORY} events the cluster keeps; start again with include_existing`,
          );
        }
        for (const e of events ?? []) {
          revision = Number(e.index);
          if (matches(e)) yield e;
        }
        if (!events?.length) await node.changed(revision, ctx.signal);
      }
    },

    async reportStatus(req, ctx) {
      const what = "vm.ReportStatus";
      const nodeId = Number(req.nodeId);
      const refusal = o.authorizeNode(ctx.peer, nodeId);
      if (refusal) throw new RpcError(Code.PERMISSION_DENIED, `${what}: ${refusal.reason}`);
      if (req.reports.length > MAX_REPORTS) {
        throw new RpcError(
          Code.INVALID_ARGUMENT,
          `${what}: ${req.reports.length} reports: expected at most ${MAX_REPORTS} per call`,
        );
      }
      if (port.leader() !== port.nodeId) {
        // Not forwarded: the leader must see the reporting node itself as the caller.
        throw new RpcError(
          Code.UNAVAILABLE,
          `${what}: node ${port.nodeId} is not the leader (node ${port.leader()} is, 0: none known)`,
        );
      }
      try {
        await vms(what).applyReports(nodeId, req.reports);
      } catch (e) {
        throw toRpcError(e, what);
      }
      return {};
    },
  };
}

/** A name that cannot be a VM's: INVALID_ARGUMENT before anything is read or proposed. */
function checkName(what: string, name: string): void {
  if (name === "" || name.length > VM_SPEC_LIMITS.maxNameLength) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `${what}: name ${
        JSON.stringify(name.slice(0, 80))
      }: expected 1 to ${VM_SPEC_LIMITS.maxNameLength} characters`,
    );
  }
}

const PLACEMENT_CODES = {
  NO_NODE_FITS: Code.RESOURCE_EXHAUSTED,
  PINNED_NODE_FULL: Code.RESOURCE_EXHAUSTED,
  PINNED_NODE_DOWN: Code.FAILED_PRECONDITION,
  PINNED_NODE_NO_BACKEND: Code.FAILED_PRECONDITION,
  PINNED_NODE_UNKNOWN: Code.INVALID_ARGUMENT,
} as const;

function placementError(what: string, e: PlacementError): RpcError {
  return new RpcError(PLACEMENT_CODES[e.code], `${what}: ${e.message}`);
}
