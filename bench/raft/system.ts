/**
 * What the Raft benchmark needs of a replicated store it measures (a
 * Blixard cluster over either transport, an etcd cluster), and the writes
 * every one of them is given: the same keys, the same 256-byte values.
 *
 * Owns: {@link ClusterUnderTest}, {@link keyOf}, {@link VALUE_BYTES},
 * {@link benchValue}. Imports `load.ts` for its types.
 *
 * @module
 */

import type { PutFn } from "./load.ts";

/** Size of every value written. */
export const VALUE_BYTES = 256;

/** Keys each caller cycles through: 256 callers write at most 16,384 distinct keys. */
export const KEYS_PER_CLIENT = 64;

/** The key of caller `client`'s `seq`-th write: each caller overwrites its own few keys. */
export function keyOf(client: number, seq: number): string {
  return `bench/c${client}/k${seq % KEYS_PER_CLIENT}`;
}

/** A 256-character ASCII value (so 256 bytes in UTF-8 and on the wire), the same every write. */
export function benchValue(): string {
  let s = "";
  for (let i = 0; s.length < VALUE_BYTES; i++) s += String.fromCharCode(97 + (i * 7) % 26);
  return s;
}

/** One member process of a cluster. */
export interface Member {
  /** Its id in the cluster (Blixard's node id, etcd's member index 1..3). */
  readonly id: number;
  /** Its process, for CPU counters. */
  readonly pid: number;
}

/** A running 3-member cluster under test. */
export interface ClusterUnderTest {
  /** Short name used in the table: `blixard iroh`, `blixard grpc`, `etcd`. */
  readonly name: string;
  readonly members: readonly Member[];
  /** The leader every member agrees on; waits (bounded) for one. */
  leader(): Promise<{ id: number; term: number }>;
  /** The count the system keeps of committed writes: Blixard's commit index, etcd's revision. */
  committed(): Promise<number>;
  /** Writes through member `id`, over one connection shared by every caller. */
  putVia(id: number): PutFn;
  /** Closes the clients, stops the members, removes their data. */
  stop(): Promise<void>;
}
