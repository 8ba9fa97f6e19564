/**
 * The Health service: is this node ready, what is it, and how far away.
 *
 * Owns: {@link healthService}. Imports `rpc/` types and the generated
 * messages; nothing of the transports.
 *
 * @module
 */

import type { HealthService } from "../rpc/gen/blixard/v1/health_pb.ts";
import { ServingStatus } from "../rpc/gen/blixard/v1/health_pb.ts";
import type { ServiceImpl } from "../rpc/services.ts";

/** What Health reports about the node. */
export interface HealthSource {
  readonly nodeId: bigint;
  readonly agentVersion: string;
  /** When the agent started, `Date.now()` ms. */
  readonly startedAtMs: number;
  /** Whether the node is ready to serve, and if not, why. */
  readiness(): { ready: boolean; detail: string };
}

/** The Health implementation over `source`. */
export function healthService(source: HealthSource): ServiceImpl<typeof HealthService> {
  return {
    check() {
      const { ready, detail } = source.readiness();
      return {
        status: ready ? ServingStatus.SERVING : ServingStatus.NOT_SERVING,
        nodeId: source.nodeId,
        agentVersion: source.agentVersion,
        uptimeMs: BigInt(Math.max(0, Date.now() - source.startedAtMs)),
        detail: ready ? "" : detail,
      };
    },
    ping(request) {
      return {
        payload: request.payload,
        clientSendTimeNs: request.clientSendTimeNs,
        nodeId: source.nodeId,
      };
    },
  };
}
