/**
 * The Metadata service: the replicated key-value namespace
 * (proto/blixard/v1/metadata.proto). Writes are committed through Raft
 * before they are answered, on the leader (a follower forwards them, with
 * their request id, so a retry never applies one twice); reads are
 * linearizable on any node (ReadIndex).
 *
 * Owns: {@link metadataService}. Imports `rpc/` types, the generated
 * messages, the state machine's validation, and the consensus port.
 *
 * @module
 */

import type { MetadataService } from "../rpc/gen/blixard/v1/metadata_pb.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import { Metadata, type ServiceImpl } from "../rpc/services.ts";
import {
  type ClusterState,
  type Command,
  METADATA_LIMITS,
  metadataKeyProblem,
  metadataValueProblem,
  requestIdProblem,
} from "../state/cluster_state.ts";
import {
  applyResultOrThrow,
  type ConsensusPort,
  deadlineOf,
  type LeaderClients,
  onLeader,
  toRpcError,
} from "./consensus_port.ts";

function invalid(problem: string | null): void {
  if (problem) throw new RpcError(Code.INVALID_ARGUMENT, problem);
}

/** A request id: the caller's, checked, or a new one. */
function requestIdOf(given: string): string {
  if (given === "") return crypto.randomUUID();
  invalid(requestIdProblem(given));
  return given;
}

/** The Metadata implementation over consensus. */
export function metadataService(
  port: ConsensusPort,
  leaderClient: LeaderClients,
): ServiceImpl<typeof MetadataService> {
  /** Proposes `command` here if this node leads, else forwards `request` to the leader. */
  const write = <T>(
    what: string,
    command: Command,
    forward: (client: NonNullable<ReturnType<typeof leaderClient<typeof Metadata>>>) => Promise<T>,
    answer: (result: Awaited<ReturnType<ConsensusPort["propose"]>>) => T,
    signal: AbortSignal,
  ) =>
    onLeader(
      port,
      what,
      async () => answer(await port.propose(command)),
      (leader) => {
        const client = leaderClient(Metadata, leader);
        return client ? forward(client) : null;
      },
    ).catch((e) => {
      signal.throwIfAborted();
      throw e;
    });

  const read = async <T>(what: string, fn: (state: ClusterState) => T): Promise<T> => {
    try {
      return await port.read(fn);
    } catch (e) {
      throw toRpcError(e, what);
    }
  };

  return {
    async get(req) {
      invalid(metadataKeyProblem(req.key));
      const entry = await read("metadata.Get", (s) => s.getMetadata(req.key));
      return entry ? { found: true, entry } : { found: false };
    },

    put(req, ctx) {
      invalid(metadataKeyProblem(req.key) ?? metadataValueProblem(req.value));
      const requestId = requestIdOf(req.requestId);
      return write(
        "metadata.Put",
        { kind: "metadata_put", key: req.key, value: req.value, requestId },
        (leader) => leader.put({ ...req, requestId }, deadlineOf(ctx.deadline)),
        (r) => ({
          revision: BigInt(applyResultOrThrow(r, "metadata_put", "metadata.Put").revision),
        }),
        ctx.signal,
      );
    },

    delete(req, ctx) {
      invalid(metadataKeyProblem(req.key));
      const requestId = requestIdOf(req.requestId);
      return write(
        "metadata.Delete",
        { kind: "metadata_delete", key: req.key, requestId },
        (leader) => leader.delete({ ...req, requestId }, deadlineOf(ctx.deadline)),
        (r) => ({ existed: applyResultOrThrow(r, "metadata_delete", "metadata.Delete").existed }),
        ctx.signal,
      );
    },

    compareAndSet(req, ctx) {
      invalid(metadataKeyProblem(req.key) ?? metadataValueProblem(req.value));
      const requestId = requestIdOf(req.requestId);
      return write(
        "metadata.CompareAndSet",
        {
          kind: "metadata_cas",
          key: req.key,
          expectedRevision: Number(req.expectedRevision),
          value: req.value,
          requestId,
        },
        (leader) => leader.compareAndSet({ ...req, requestId }, deadlineOf(ctx.deadline)),
        (r) => {
          const cas = applyResultOrThrow(r, "metadata_cas", "metadata.CompareAndSet");
          return { succeeded: cas.succeeded, revision: BigInt(cas.revision) };
        },
        ctx.signal,
      );
    },

    async list(req) {
      if (req.prefix !== "" && metadataKeyProblem(req.prefix)) {
        invalid(`metadata prefix: ${metadataKeyProblem(req.prefix)}`);
      }
      const limit = req.limit === 0 ? METADATA_LIMITS.maxListEntries : req.limit;
      return await read("metadata.List", (s) => s.listMetadata(req.prefix, limit));
    },
  };
}
