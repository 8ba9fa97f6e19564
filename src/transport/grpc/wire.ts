/**
 * What both halves of the gRPC transport share about the wire: raw-bytes
 * (de)serializers, the method definitions built from them, the Raft method's
 * path, and reading PEM files named in the config.
 *
 * Owns: {@link methodDefinition}, {@link toBuffer}, {@link RAFT_SEND_PATH},
 * {@link readPem}. Imports `@grpc/grpc-js` types, `node:buffer`, the
 * generated Raft service and this folder's errors.
 *
 * Messages cross grpc-js as bytes: the router (server) and the typed client
 * (`rpc/client.ts`) do the one protobuf encode or decode each side needs.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type * as grpc from "@grpc/grpc-js";
import { RaftService } from "../../rpc/gen/blixard/v1/raft_pb.ts";
import { GrpcTransportError } from "./errors.ts";

/** `/blixard.v1.RaftService/Send`: carries Raft codec bytes in a RaftEnvelope. */
export const RAFT_SEND_PATH = `/${RaftService.typeName}/${RaftService.method.send.name}`;

/** grpc-js wants Buffers out; a view of the same memory, not a copy. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/**
 * grpc-js hands Buffers in; callers get a plain Uint8Array view of the same
 * memory. Not the Buffer itself: decoded `bytes` fields would be Buffers too,
 * whose `slice()` is a view where a Uint8Array's is a copy.
 */
export function passThrough(bytes: Buffer): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A grpc-js method definition at `path` whose messages are bytes. */
export function methodDefinition(
  path: string,
  responseStream: boolean,
): grpc.MethodDefinition<Uint8Array, Uint8Array> {
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: toBuffer,
    requestDeserialize: passThrough,
    responseSerialize: toBuffer,
    responseDeserialize: passThrough,
  };
}

/** The contents of the PEM file that config key `key` names, or an error naming both. */
export function readPem(path: string, key: string): Buffer {
  try {
    return Buffer.from(Deno.readFileSync(path));
  } catch (e) {
    throw new GrpcTransportError(
      "TLS_FILE",
      `${key} = "${path}": cannot read it: ${(e as Error).message}`,
      { cause: e },
    );
  }
}
