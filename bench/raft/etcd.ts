/**
 * A 3-member etcd cluster beside the Blixard one, for the Raft benchmark:
 * Debian's `etcd` 3.4 on loopback, data in a temporary directory, etcd's
 * default Raft timing (100 ms heartbeat, 1 s election timeout: Blixard's
 * defaults too); and its gRPC KV.Put called with `@grpc/grpc-js` and a
 * hand-written protobuf encoding of the few messages needed
 * (etcdserverpb/rpc.proto of etcd 3.4), one HTTP/2 connection per member as
 * etcd's own Go client keeps. The commit count is read with `etcdctl`,
 * independently of that encoding.
 *
 * Owns: {@link startEtcdCluster}, {@link etcdVersion}, the PutRequest,
 * PutResponse, StatusResponse wire encoding. Imports `@grpc/grpc-js` and this
 * folder's children and system contract.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { freeTcpPort } from "../../tests/ports.ts";
import { type Server, spawnServer } from "./children.ts";
import type { PutFn } from "./load.ts";
import { benchValue, type ClusterUnderTest, keyOf } from "./system.ts";

const ETCD = "/usr/bin/etcd";
const ETCDCTL = "/usr/bin/etcdctl";
/** Member indexes, as the table names them (etcd's member ids are random 64-bit numbers). */
const MEMBERS = [1, 2, 3] as const;
const START_MS = 60_000;
const CALL_DEADLINE_MS = 10_000;

/**
 * `--quota-backend-bytes`: 4 GiB. etcd keeps every revision until compacted
 * (the benchmark leaves compaction off, as etcd does by default), and a full
 * run writes well under 1 GiB of them; past the quota etcd refuses writes
 * (NOSPACE), which would show as errors. etcd documents 8 GiB as the most it
 * supports; its default is 2 GiB.
 */
export const ETCD_QUOTA_BYTES = 4 * 1024 ** 3;

// ---------------------------------------------------------------------------
// Protobuf, by hand: only what Put and Status need

const PUT_PATH = "/etcdserverpb.KV/Put";
const STATUS_PATH = "/etcdserverpb.Maintenance/Status";

function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/**
 * PutRequest{key = 1, value = 2} (both `bytes`). The value's field, the same
 * every call, is encoded once.
 */
export function putRequestEncoder(value: Uint8Array): (key: string) => Buffer {
  const valueField = Buffer.from([0x12, ...varintBytes(value.length), ...value]);
  return (key) => {
    const k = Buffer.from(key, "utf8");
    return Buffer.concat([Buffer.from([0x0a, ...varintBytes(k.length)]), k, valueField]);
  };
}

/**
 * The varint and length-delimited fields of a message, by field number (last
 * one wins). Varints as bigints: etcd's member ids use all 64 bits.
 */
export function readFields(bytes: Uint8Array): Map<number, bigint | Uint8Array> {
  const fields = new Map<number, bigint | Uint8Array>();
  let at = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n;; shift += 7n) {
      if (at >= bytes.length || shift > 63n) throw new Error("etcd response: malformed varint");
      const b = bytes[at++]!;
      value |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return value;
    }
  };
  while (at < bytes.length) {
    const tag = Number(varint());
    const field = Math.floor(tag / 8);
    switch (tag & 7) {
      case 0:
        fields.set(field, varint());
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const n = Number(varint());
        if (at + n > bytes.length) throw new Error("etcd response: truncated field");
        fields.set(field, bytes.subarray(at, at + n));
        at += n;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        throw new Error(`etcd response: wire type ${tag & 7} of field ${field} is not supported`);
    }
  }
  return fields;
}

function varintField(fields: Map<number, bigint | Uint8Array>, n: number): bigint {
  const v = fields.get(n);
  return typeof v === "bigint" ? v : 0n;
}

/** ResponseHeader{cluster_id = 1, member_id = 2, revision = 3, raft_term = 4} of a response. */
function headerOf(response: Uint8Array): { memberId: bigint; revision: number; term: number } {
  const raw = readFields(response).get(1);
  const header = raw instanceof Uint8Array ? readFields(raw) : new Map();
  return {
    memberId: varintField(header, 2),
    revision: Number(varintField(header, 3)),
    term: Number(varintField(header, 4)),
  };
}

/** StatusResponse{header = 1, ..., leader = 4, raftTerm = 6}: who answered, whom it follows. */
function statusOf(response: Uint8Array): { memberId: bigint; leader: bigint; term: number } {
  const fields = readFields(response);
  return {
    memberId: headerOf(response).memberId,
    leader: varintField(fields, 4),
    term: Number(varintField(fields, 6)),
  };
}

const passThrough = (b: Buffer) => b;

/** One unary call on `client`; resolves with the response bytes. */
function unary(client: grpc.Client, path: string, request: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      path,
      passThrough,
      passThrough,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (error, response) => {
        if (error) reject(new Error(`etcd ${path}: ${error.message}`));
        else resolve(response!);
      },
    );
  });
}

// ---------------------------------------------------------------------------
// The cluster

/** `etcd --version`'s version, e.g. "3.4.23". */
export async function etcdVersion(): Promise<string> {
  const out = await new Deno.Command(ETCD, { args: ["--version"], stdout: "piped" }).output();
  return /etcd Version: (\S+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ?? "unknown";
}

/** etcd's revision as `etcdctl endpoint status` reports it through member 1. */
async function revisionByEtcdctl(clientUrl: string): Promise<number> {
  const out = await new Deno.Command(ETCDCTL, {
    args: ["--endpoints", clientUrl, "--command-timeout=10s", "endpoint", "status", "-w", "json"],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`etcdctl endpoint status exited ${out.code}: ${dec.decode(out.stderr)}`);
  }
  const status = JSON.parse(dec.decode(out.stdout)) as {
    Status: { header: { revision: number } };
  }[];
  const revision = status[0]?.Status.header.revision;
  if (typeof revision !== "number") {
    throw new Error(`etcdctl endpoint status: no revision in ${dec.decode(out.stdout)}`);
  }
  return revision;
}

/** Starts a 3-member etcd cluster with its data under `dir` and waits for an agreed leader. */
export async function startEtcdCluster(dir: string): Promise<ClusterUnderTest> {
  const planned = MEMBERS.map((i) => ({
    i,
    name: `m${i}`,
    clientUrl: `http://127.0.0.1:${freeTcpPort()}`,
    peerUrl: `http://127.0.0.1:${freeTcpPort()}`,
  }));
  const initialCluster = planned.map((p) => `${p.name}=${p.peerUrl}`).join(",");
  const token = `bench-${crypto.randomUUID()}`;
  const servers: Server[] = [];
  const clients = new Map<number, grpc.Client>();
  const stop = async () => {
    for (const c of clients.values()) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const p of planned) {
      servers.push(spawnServer(`etcd${p.i}`, ETCD, [
        `--name=${p.name}`,
        `--data-dir=${dir}/${p.name}`,
        `--listen-client-urls=${p.clientUrl}`,
        `--advertise-client-urls=${p.clientUrl}`,
        `--listen-peer-urls=${p.peerUrl}`,
        `--initial-advertise-peer-urls=${p.peerUrl}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-state=new`,
        `--initial-cluster-token=${token}`,
        `--quota-backend-bytes=${ETCD_QUOTA_BYTES}`,
        `--logger=zap`,
        `--log-outputs=stderr`,
      ]));
    }
    await Promise.all(
      servers.map((s) =>
        s.waitFor(/serving client traffic|ready to serve client requests/, START_MS, "serving")
      ),
    );
    for (const p of planned) {
      // One channel, one connection, per member (grpc-js would share equal channels otherwise).
      clients.set(
        p.i,
        new grpc.Client(p.clientUrl.slice("http://".length), grpc.credentials.createInsecure(), {
          "grpc.use_local_subchannel_pool": 1,
        }),
      );
    }
    const memberIds = new Map<bigint, number>();
    const status = async (i: number) => {
      const s = statusOf(await unary(clients.get(i)!, STATUS_PATH, Buffer.alloc(0)));
      memberIds.set(s.memberId, i);
      return s;
    };
    const leader = async () => {
      const until = Date.now() + START_MS;
      for (;;) {
        const all = await Promise.all(MEMBERS.map((i) => status(i).catch(() => null)));
        const leaders = new Set(all.map((s) => s?.leader ?? 0n));
        const [only] = leaders;
        const index = only ? memberIds.get(only) : undefined;
        if (leaders.size === 1 && index !== undefined) {
          return { id: index, term: Math.max(...all.map((s) => s!.term)) };
        }
        if (Date.now() > until) {
          throw new Error(
            `etcd: the members did not agree on a leader within ${START_MS} ms\n` +
              servers.map((s) => s.output()).join("\n"),
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const encode = putRequestEncoder(new TextEncoder().encode(benchValue()));
    const putVia = (i: number): PutFn => {
      const client = clients.get(i);
      if (!client) throw new Error(`etcd: no member ${i}; members are ${MEMBERS.join(", ")}`);
      return async (c, seq) => {
        const response = await unary(client, PUT_PATH, encode(keyOf(c, seq)));
        // A PutResponse always carries the header with the new revision.
        if (headerOf(response).revision === 0) {
          throw new Error(`etcd Put: a response without a revision (${response.length} bytes)`);
        }
      };
    };
    await leader();
    await Promise.all(MEMBERS.map((i) => putVia(i)(0, i)));
    return {
      name: "etcd",
      members: servers.map((s, k) => ({ id: MEMBERS[k]!, pid: s.pid })),
      leader,
      committed: () => revisionByEtcdctl(planned[0]!.clientUrl),
      putVia,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
