/**
 * Keeps this node's own member record current: how peers reach it (its
 * listeners' addresses) and what it offers to VMs. When the record in the
 * cluster state is missing or stale (a node that just joined or
 * bootstrapped, new listeners after a reload), the node joins with its own
 * record through the Cluster service it serves, which forwards to the leader;
 * retried until it is recorded while the node runs.
 *
 * Owns: {@link Announcer}. Imports the record and request types and the
 * Cluster service's descriptor; the agent hands it everything else.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { JoinRequestSchema } from "../rpc/gen/blixard/v1/cluster_pb.ts";
import { Cluster } from "../rpc/services.ts";
import type { clusterService } from "../services/cluster.ts";
import type { MemberRecord } from "../state/cluster_state.ts";
import type { Logger } from "../util/log.ts";
import { parseHostPort } from "../util/address.ts";

/** How this node describes itself to the cluster. */
export interface OwnRecord {
  readonly iroh?: { endpointId: string; directAddresses: string[] };
  /** "" when it serves no gRPC peers can dial. */
  readonly grpcAddress: string;
  readonly vcpus: number;
  readonly memoryMib: bigint;
  readonly backends: readonly string[];
}

/** What an {@link Announcer} reads and calls. */
export interface AnnouncerOptions {
  readonly nodeId: number;
  /** This node's record as its listeners and backends are now. */
  readonly own: () => OwnRecord;
  /** Its record in the cluster state, if any. */
  readonly recorded: () => MemberRecord | undefined;
  /** Whether it is a voter or learner now; null while consensus is not running. */
  readonly isMember: () => boolean | null;
  /** The Cluster service as this node serves it. */
  readonly cluster: ReturnType<typeof clusterService>;
  readonly logger: Logger;
}

/** Between attempts to announce, ms. */
const RETRY_MS = 1_000;
/** The deadline of one attempt, ms. */
const ATTEMPT_MS = 5_000;

/** Announces this node's record whenever it is asked to and the recorded one differs. */
export class Announcer {
  readonly #o: AnnouncerOptions;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  constructor(options: AnnouncerOptions) {
    this.#o = options;
  }

  /** Announces now if the record is missing or stale; a failed attempt is retried after a pause. */
  announce(): void {
    clearTimeout(this.#retry);
    if (this.#stopped || this.#o.isMember() !== true) return;
    const mine = this.#o.own();
    const recorded = this.#o.recorded();
    if (recorded && sameRecord(recorded, mine)) return;
    const request = create(JoinRequestSchema, {
      nodeId: BigInt(this.#o.nodeId),
      ...(mine.iroh ? { iroh: { case: "irohAddress", value: mine.iroh } } : {}),
      grpcAddress: mine.grpcAddress,
      vcpus: mine.vcpus,
      memoryMib: mine.memoryMib,
      vmBackends: [...mine.backends],
    });
    const ctx = {
      method: Cluster.methods[0]!,
      peer: { transport: "grpc" as const, id: "this node" },
      signal: AbortSignal.timeout(ATTEMPT_MS),
      deadline: Date.now() + ATTEMPT_MS,
    };
    Promise.resolve().then(() => this.#o.cluster.join(request, ctx)).then(
      () => this.#o.logger.info("recorded this node's addresses in the cluster state"),
      () => {
        if (this.#stopped) return;
        this.#retry = setTimeout(() => this.announce(), RETRY_MS);
        Deno.unrefTimer(this.#retry as unknown as number);
      },
    );
  }

  /** No more announcements or retries. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
  }
}

/** A listener's address as peers can dial it; "" for none or an unspecified host (`0.0.0.0`, `::`). */
export function dialable(address: string | null): string {
  const host = address ? parseHostPort(address)?.host : undefined;
  return host === undefined || host === "0.0.0.0" || host === "::" ? "" : address!;
}

function sameRecord(a: MemberRecord, b: OwnRecord): boolean {
  return a.grpcAddress === b.grpcAddress && a.vcpus === b.vcpus && a.memoryMib === b.memoryMib &&
    a.backends.join() === b.backends.join() &&
    (a.iroh?.endpointId ?? "") === (b.iroh?.endpointId ?? "") &&
    [...(a.iroh?.directAddresses ?? [])].sort().join() ===
      [...(b.iroh?.directAddresses ?? [])].sort().join();
}
