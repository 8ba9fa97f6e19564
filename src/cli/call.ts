/**
 * `blixard health|status`: call a running node and print its answer.
 *
 * Owns: the client subcommands and their output, human and JSON
 * (docs/cli.md). Imports the service declarations and generated messages,
 * the typed client, and the Iroh and gRPC client transports.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { type DescMessage, type JsonObject, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type CallTransport, createClient } from "../rpc/client.ts";
import { GrpcChannel } from "../transport/grpc/client.ts";
import { Code, codeName, RpcError } from "../rpc/errors.ts";
import { Transport } from "../rpc/gen/blixard/v1/common_pb.ts";
import { serviceNameOf } from "../names.ts";
import { CheckResponseSchema, ServingStatus } from "../rpc/gen/blixard/v1/health_pb.ts";
import {
  GetClusterStatusResponseSchema,
  GetRaftStatusResponseSchema,
  RaftRole,
} from "../rpc/gen/blixard/v1/status_pb.ts";
import { Health, Status } from "../rpc/services.ts";
import { createEndpoint, parseTicket, type RelayModeOption } from "../transport/iroh/endpoint.ts";
import { IrohError } from "../transport/iroh/errors.ts";
import { IrohRpcClient } from "../transport/iroh/rpc_client.ts";
import { endpointIdOf, loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import { CliError, ExitCode, formatDuration, operatorKeyPath, printJson, usage } from "./common.ts";

/** The options of `blixard health` and `blixard status`: the same, since both only call. */
export const CALL_OPTIONS = {
  ticket: { type: "string" },
  addr: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  insecure: { type: "boolean" },
  key: { type: "string" },
  relay: { type: "string", default: "disabled" },
  timeout: { type: "string", default: "5000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** How to reach the node: the same for every client subcommand. */
const TARGET_OPTIONS = `Options:
  --ticket T     call over Iroh: the node's ticket (the line the node prints
                 when it starts, or 'blixard key show --addr ...' on the node)
  --addr A       call over gRPC: the node's [grpc] bind address
  --tls-ca F     gRPC: CA bundle the node's certificate must chain to (TLS)
  --tls-cert F   gRPC: client certificate, for mutual TLS (with --tls-key)
  --tls-key F    gRPC: its private key
  --insecure     gRPC: plaintext to a non-loopback address
  --key PATH     Iroh: this operator's key file, created on first use; its
                 endpoint id must be listed in the node's [cluster]
                 operator_keys (default: ${operatorKeyPath()})
  --relay MODE   Iroh: default | disabled (default: disabled, direct addresses
                 only)
  --timeout MS   how long to wait for the answer (default 5000)`;

export const HEALTH_HELP = `Usage: blixard health (--ticket TICKET | --addr HOST:PORT) [options]

Asks a running node, over Iroh (--ticket) or gRPC (--addr), whether it is
serving, and prints its answer: its node id, state, agent version, uptime,
and the round trip. The exit status is 1 when the node is not serving.

${TARGET_OPTIONS}
  --json         print the answer as JSON (docs/cli.md)`;

export const STATUS_HELP = `Usage: blixard status (--ticket TICKET | --addr HOST:PORT) [options]

Asks a running node, over Iroh (--ticket) or gRPC (--addr), for the cluster
as it sees it: the members, their addresses and the transports of each of
their services, the leader and term, and its own Raft state and peers.

${TARGET_OPTIONS}
  --json         print both answers as JSON (docs/cli.md)`;

/** Runs `blixard health ...` or `blixard status ...`. */
export async function callCommand(command: "health" | "status", args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: CALL_OPTIONS });
  if (values.help) {
    console.log(command === "health" ? HEALTH_HELP : STATUS_HELP);
    return ExitCode.Ok;
  }
  if (!values.ticket === !values.addr) {
    throw usage(command, `${command}: give exactly one of --ticket (Iroh) or --addr (gRPC)`);
  }
  const timeoutMs = Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw usage(command, `--timeout ${values.timeout}: expected a positive number of milliseconds`);
  }
  if (values.relay !== "default" && values.relay !== "disabled") {
    throw usage(command, `--relay ${values.relay}: expected "default" or "disabled"`);
  }

  const target = values.ticket
    ? await irohTarget(
      command,
      values.ticket,
      values.key,
      values.relay as RelayModeOption,
      timeoutMs,
    )
    : grpcTarget(command, values.addr!, values);
  const channel = target.channel;
  try {
    const options = { deadlineMs: timeoutMs };
    if (command === "health") {
      const started = performance.now();
      const res = await createClient(Health, channel).check({}, options);
      const rttMs = performance.now() - started;
      if (values.json) {
        printJson({ ...protoJson(CheckResponseSchema, res), roundTripMs: round(rttMs) });
      } else {
        const state = ServingStatus[res.status] ?? `status ${res.status}`;
        console.log(`node ${res.nodeId} (${target.label}): ${state}`);
        console.log(
          `  agent ${res.agentVersion}, up ${formatDuration(Number(res.uptimeMs))}, round trip ${
            round(rttMs)
          } ms`,
        );
        if (res.detail) console.log(`  ${res.detail}`);
      }
      return res.status === ServingStatus.SERVING ? ExitCode.Ok : ExitCode.Failure;
    }
    const status = createClient(Status, channel);
    const [cluster, raft] = await Promise.all([
      status.getClusterStatus({}, options),
      status.getRaftStatus({}, options),
    ]);
    if (values.json) {
      printJson({
        cluster: protoJson(GetClusterStatusResponseSchema, cluster),
        raft: protoJson(GetRaftStatusResponseSchema, raft),
      });
      return ExitCode.Ok;
    }
    const leader = cluster.leaderId === 0n ? "none" : `node ${cluster.leaderId}`;
    console.log(
      `cluster: ${cluster.members.length} member(s), leader ${leader}, term ${cluster.term} (as seen by node ${cluster.nodeId})`,
    );
    const rows = cluster.members.map((m) => [
      `${m.nodeId}${m.nodeId === cluster.leaderId ? "*" : ""}`,
      m.iroh ? short(m.iroh.endpointId) : "-",
      m.iroh?.directAddresses.join(",") || "-",
      m.grpcAddress || "-",
      m.services.map((s) =>
        `${serviceName(s.service)}(${s.transports.map(transportName).join("+")})`
      ).join(" ") ||
      "unknown",
    ]);
    printTable(["NODE", "ENDPOINT", "IROH ADDRESSES", "GRPC", "SERVICES"], rows);
    const role = RaftRole[raft.role] ?? "UNSPECIFIED";
    console.log(
      `raft: node ${raft.nodeId} ${role.toLowerCase()}, term ${raft.term}, commit ${raft.commitIndex}, applied ${raft.appliedIndex}`,
    );
    for (const p of raft.peers) {
      console.log(`  peer ${p.nodeId}: match ${p.matchIndex}, next ${p.nextIndex}`);
    }
    return ExitCode.Ok;
  } catch (e) {
    if (e instanceof RpcError) {
      const hint = e.code === Code.PERMISSION_DENIED && target.operatorId
        ? `\n  add this operator's endpoint id to the node's [cluster] operator_keys: ${target.operatorId}`
        : "";
      throw new CliError(`${command}: ${codeName(e.code)}: ${e.message}${hint}`);
    }
    throw e;
  } finally {
    await target.close();
  }
}

interface Target {
  readonly channel: CallTransport;
  /** How the node is named in the output: `endpoint 3f2a…` or `grpc 10.0.0.2:7400`. */
  readonly label: string;
  /** The operator's Iroh endpoint id, for the PERMISSION_DENIED hint. */
  readonly operatorId?: string;
  close(): Promise<void>;
}

async function irohTarget(
  command: string,
  ticket: string,
  keyOption: string | undefined,
  relayMode: RelayModeOption,
  timeoutMs: number,
): Promise<Target> {
  // Before anything is created: a ticket cut short in a copy and paste is the usual mistake.
  try {
    parseTicket(ticket);
  } catch (e) {
    if (!(e instanceof IrohError)) throw e;
    throw usage(
      command,
      `${e.message}; copy the whole "ticket:" line the node printed`,
    );
  }
  const keyFile = keyOption ?? operatorKeyPath();
  await Deno.mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
  const { secretKey, created } = await loadOrCreateSecretKey(keyFile);
  if (created) {
    console.error(
      `created operator key ${keyFile}; add its endpoint id to the node's [cluster] operator_keys:\n  ${
        endpointIdOf(secretKey)
      }`,
    );
  }
  const endpoint = await createEndpoint({ secretKey, bindAddr: "0.0.0.0:0", relayMode, alpns: [] });
  const client = new IrohRpcClient({ endpoint, connectTimeoutMs: timeoutMs });
  const channel = client.peer(ticket);
  return {
    channel,
    label: `endpoint ${short(channel.peerId)}`,
    operatorId: endpoint.id,
    async close() {
      client.close();
      await endpoint.close();
    },
  };
}

function grpcTarget(
  command: string,
  addr: string,
  values: { "tls-ca"?: string; "tls-cert"?: string; "tls-key"?: string; insecure?: boolean },
): Target {
  const ca = values["tls-ca"];
  const cert = values["tls-cert"];
  const key = values["tls-key"];
  if (!cert !== !key) throw usage(command, "--tls-cert and --tls-key come together");
  const tls = ca || cert
    ? { ...(ca ? { caFile: ca } : {}), ...(cert && key ? { certFile: cert, keyFile: key } : {}) }
    : undefined;
  const channel = new GrpcChannel({
    target: addr,
    ...(tls ? { tls } : {}),
    allowInsecure: values.insecure ?? false,
  });
  return {
    channel,
    label: `grpc ${addr}`,
    close() {
      channel.close();
      return Promise.resolve();
    },
  };
}

/**
 * A message in the canonical proto3 JSON mapping: enum value names, lowerCamelCase
 * field names, 64-bit integers as decimal strings, and every field, defaults included,
 * so that a script finds every key whatever the values.
 */
function protoJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
): JsonObject {
  // A message always maps to a JSON object (none of ours is a well-known wrapper type).
  return toJson(schema, message, { alwaysEmitImplicit: true }) as JsonObject;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function short(id: string): string {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

function serviceName(id: number): string {
  return serviceNameOf(id) ?? `service${id}`;
}

function transportName(t: Transport): string {
  return (Transport[t] ?? `transport${t}`).toLowerCase();
}

function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) {
    console.log("  " + r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  }
}
