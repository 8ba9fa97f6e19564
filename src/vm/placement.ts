/**
 * Placement: which node runs a new VM. A pure function of the spec and the
 * nodes (declared capacity, what is already placed on them, which are
 * alive), so the leader can decide it before proposing and a test can check
 * every case without a cluster.
 *
 * Owns: {@link placeVm}, {@link PlacementError}. Imports the generated
 * `VmSpec` type only.
 *
 * Rule: a node can take a VM only if it runs the VM's backend. A `node_id`
 * in the spec pins the VM to that node (which must exist, be alive, run the
 * backend and have room); otherwise the VM goes to the alive node that is
 * least allocated once it is there (the larger of its vCPU and memory
 * fractions), ties broken by the lower node id, so VMs spread and the choice
 * is the same on every node.
 *
 * @module
 */

import type { VmSpec } from "../rpc/gen/blixard/v1/vm_pb.ts";

/** A node as placement sees it. */
export interface PlacementNode {
  readonly nodeId: bigint;
  /** Declared capacity (MemberRecord.vcpus, memory_mib). */
  readonly vcpus: number;
  readonly memoryMib: bigint;
  /** Sum over the VMs already placed on the node. */
  readonly allocatedVcpus: number;
  readonly allocatedMemoryMib: bigint;
  /** Whether the node is up (a member the leader hears from). */
  readonly alive: boolean;
  /** The VM backends it runs (MemberRecord.backends). */
  readonly backends: readonly string[];
}

/** Why no node was chosen. */
export type PlacementErrorCode =
  /** No alive node has room; the message lists what each node has free. */
  | "NO_NODE_FITS"
  /** The spec pins a node that is not a member. */
  | "PINNED_NODE_UNKNOWN"
  /** The spec pins a node that is not alive. */
  | "PINNED_NODE_DOWN"
  /** The spec pins a node without room for it. */
  | "PINNED_NODE_FULL"
  /** The spec pins a node that does not run its backend. */
  | "PINNED_NODE_NO_BACKEND";

/** A VM that cannot be placed; the message names what was asked and what is free where. */
export class PlacementError extends Error {
  override readonly name = "PlacementError";
  readonly code: PlacementErrorCode;

  constructor(code: PlacementErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

function freeOf(node: PlacementNode): { vcpus: number; memoryMib: bigint } {
  const vcpus = node.vcpus - node.allocatedVcpus;
  const memoryMib = node.memoryMib - node.allocatedMemoryMib;
  return { vcpus: vcpus > 0 ? vcpus : 0, memoryMib: memoryMib > 0n ? memoryMib : 0n };
}

function fits(spec: VmSpec, node: PlacementNode): boolean {
  if (!node.backends.includes(spec.backend)) return false;
  const free = freeOf(node);
  return spec.vcpus <= free.vcpus && spec.memoryMib <= free.memoryMib;
}

/** The larger of the node's vCPU and memory fractions once `spec` is on it. */
function loadWith(spec: VmSpec, node: PlacementNode): number {
  const cpu = (node.allocatedVcpus + spec.vcpus) / node.vcpus;
  const mem = Number(node.allocatedMemoryMib + spec.memoryMib) / Number(node.memoryMib);
  return Math.max(cpu, mem);
}

function describeFree(node: PlacementNode, backend: string): string {
  if (!node.alive) return `node ${node.nodeId}: down`;
  if (node.backends.length === 0) {
    return `node ${node.nodeId}: runs no VM backend (or has not announced its capacity yet)`;
  }
  if (!node.backends.includes(backend)) {
    return `node ${node.nodeId}: no ${JSON.stringify(backend)} backend (runs ${
      node.backends.map((b) => JSON.stringify(b)).join(", ")
    })`;
  }
  const free = freeOf(node);
  return `node ${node.nodeId}: ${free.vcpus} vcpus and ${free.memoryMib} MiB free`;
}

function asked(spec: VmSpec): string {
  return `vm ${JSON.stringify(spec.name)} (${spec.vcpus} vcpus, ${spec.memoryMib} MiB, backend ${
    JSON.stringify(spec.backend)
  })`;
}

/**
 * The node that should run `spec`.
 *
 * @throws {PlacementError} when the pinned node cannot take it or no node fits.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { VmSpecSchema } from "../rpc/gen/blixard/v1/vm_pb.ts";
 * import { placeVm } from "./placement.ts";
 *
 * const spec = create(VmSpecSchema, { name: "web", vcpus: 2, memoryMib: 1024n, backend: "qemu" });
 * const node = (nodeId: bigint, allocatedVcpus: number) => ({
 *   nodeId, vcpus: 8, memoryMib: 16384n, allocatedVcpus, allocatedMemoryMib: 0n, alive: true,
 *   backends: ["qemu"],
 * });
 * placeVm(spec, [node(1n, 6), node(2n, 2)]); // 2n: the less loaded node
 * ```
 */
export function placeVm(spec: VmSpec, nodes: readonly PlacementNode[]): bigint {
  if (spec.nodeId !== 0n) {
    const node = nodes.find((n) => n.nodeId === spec.nodeId);
    if (node === undefined) {
      throw new PlacementError(
        "PINNED_NODE_UNKNOWN",
        `cannot place ${asked(spec)} on node ${spec.nodeId}: no such member ` +
          `(members: ${nodes.map((n) => n.nodeId).join(", ") || "none"})`,
      );
    }
    if (!node.alive) {
      throw new PlacementError(
        "PINNED_NODE_DOWN",
        `cannot place ${asked(spec)} on node ${spec.nodeId}: the node is down`,
      );
    }
    if (!node.backends.includes(spec.backend)) {
      throw new PlacementError(
        "PINNED_NODE_NO_BACKEND",
        `cannot place ${asked(spec)} on node ${spec.nodeId}: ${describeFree(node, spec.backend)}`,
      );
    }
    if (!fits(spec, node)) {
      throw new PlacementError(
        "PINNED_NODE_FULL",
        `cannot place ${asked(spec)} on node ${spec.nodeId}: ${describeFree(node, spec.backend)}`,
      );
    }
    return node.nodeId;
  }
  let best: PlacementNode | undefined;
  let bestLoad = Infinity;
  for (const node of nodes) {
    if (!node.alive || !fits(spec, node)) continue;
    const load = loadWith(spec, node);
    if (load < bestLoad || (load === bestLoad && best !== undefined && node.nodeId < best.nodeId)) {
      best = node;
      bestLoad = load;
    }
  }
  if (best === undefined) {
    const sorted = [...nodes].sort((a, b) =>
      a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0
    );
    throw new PlacementError(
      "NO_NODE_FITS",
      `no node can run ${asked(spec)}: ` +
        (sorted.length === 0
          ? "the cluster has no members"
          : sorted.map((n) => describeFree(n, spec.backend)).join("; ")),
    );
  }
  return best.nodeId;
}
