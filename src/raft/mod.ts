/**
 * The Raft consensus core as the driver uses it: the state machine, its
 * configuration, inputs and outputs, membership changes, errors, the
 * storage contract and the in-memory storage.
 *
 * Owns: nothing; re-exports the public surface of `src/raft/`. docs/raft.md
 * describes how to drive it.
 *
 * @module
 */

export { type Proposed, RaftCore } from "./core.ts";
export {
  RAFT_CONFIG_DEFAULTS,
  type RaftConfig,
  type ResolvedRaftConfig,
  resolveRaftConfig,
} from "./config.ts";
export {
  type ConfChangeRefusedCode,
  ConfChangeRefusedError,
  InvalidProposalError,
  NotLeaderError,
  ProposalDroppedError,
  type ProposalDroppedReason,
  RaftConfigError,
  RaftInvariantError,
  RaftMessageError,
  RaftUsageError,
  TransferRefusedError,
} from "./errors.ts";
export {
  bootstrapUpdate,
  type ConfChange,
  ConfChangeType,
  decodeConfChange,
  describeConfChange,
  encodeConfChange,
  type InitialMember,
} from "./membership.ts";
export { type CoreMessage, SNAPSHOT_MESSAGE, type SnapshotMessage } from "./messages.ts";
export { ProgressState } from "./progress.ts";
export { type RandomSource, seededRandom } from "./random.ts";
export {
  type PeerStatus,
  type ReadState,
  type Ready,
  Role,
  type SoftState,
  type Status,
} from "./ready.ts";
export {
  InvalidLogUpdateError,
  MemoryStorage,
  type MemoryStorageOptions,
} from "./memory_storage.ts";
export * from "./storage.ts";
