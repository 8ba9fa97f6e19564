/**
 * `blixard health|status`: call a running node and print its answer.
 *
 * Owns: the client subcommands and their output. Imports the service
 * declarations, the typed client and the Iroh client transport.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { createClient } from "../rpc/client.ts";
import { Code, codeName, RpcError } from "../rpc/errors.ts";
import { ServiceId, Transport } from "../rpc/gen/blixard/v1/common_pb.ts";
import { ServingStatus } from "../rpc/gen/blixard/v1/health_pb.ts";
import { RaftRole } from "../rpc/gen/blixard/v1/status_pb.ts";
import { Health, Status } from "../rpc/services.ts";
import { createEndpoint, type RelayModeOption } from "../transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../transport/iroh/rpc_client.ts";
import { endpointIdOf, loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import { CliError, ExitCode, formatDuration, operatorKeyPath, printJson, usage } from "./common.ts";

export const CALL_HELP = `Usage: blixard health --ticket TICKET [options]
       blixard status --ticket TICKET [options]

Calls a running node over Iroh and prints its answer.

  health   is the node serving? its version, uptime and the round trip
  status   the cluster's members, leader and term as the node sees them,
           and its Raft state

Options:
  --ticket T     the node's ticket ('blixard key show --addr ...' on the node,
                 or the line the node prints when it starts)
  --key PATH     this operator's key file (default ${operatorKeyPath()};
                 created on first use; its endpoint id must be listed in the
                 node's [cluster] operator_keys)
  --relay MODE   default | disabled (default: disabled, direct addresses only)
  --timeout MS   how long to wait for the answer (default 5000)
  --json         machine-readable output`;

/** Runs `blixard health ...` or `blixard status ...`. */
export async function callCommand(command: "health" | "status", args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ticket: { type: "string" },
      key: { type: "string" },
      relay: { type: "string", default: "disabled" },
      timeout: { type: "string", default: "5000" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(CALL_HELP);
    return ExitCode.Ok;
  }
  if (!values.ticket) throw usage(command, `${command}: --ticket is required`);
  const timeoutMs = Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw usage(command, `--timeout ${values.timeout}: expected a positive number of milliseconds`);
  }
  if (values.relay !== "default" && values.relay !== "disabled") {
    throw usage(command, `--relay ${values.relay}: expected "default" or "disabled"`);
  }

  const keyFile = values.key ?? operatorKeyPath();
  await Deno.mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
  const { secretKey, created } = await loadOrCreateSecretKey(keyFile);
  if (created) {
    console.error(
      `created operator key ${keyFile}; add its endpoint id to the node's [cluster] operator_keys:\n  ${
        endpointIdOf(secretKey)
      }`,
    );
  }
  const endpoint = await createEndpoint({
    secretKey,
    bindAddr: "0.0.0.0:0",
    relayMode: values.relay as RelayModeOption,
    alpns: [],
  });
  const client = new IrohRpcClient({ endpoint, connectTimeoutMs: timeoutMs });
  try {
    const channel = client.peer(values.ticket);
    const options = { deadlineMs: timeoutMs };
    if (command === "health") {
      const started = performance.now();
      const res = await createClient(Health, channel).check({}, options);
      const rttMs = performance.now() - started;
      if (values.json) {
        printJson({ ...res, status: ServingStatus[res.status], round_trip_ms: round(rttMs) });
      } else {
        const state = ServingStatus[res.status] ?? `status ${res.status}`;
        console.log(`node ${res.nodeId} (endpoint ${short(channel.peerId)}): ${state}`);
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
      printJson({ cluster, raft: { ...raft, role: RaftRole[raft.role] } });
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
      const hint = e.code === Code.PERMISSION_DENIED
        ? `\n  add this operator's endpoint id to the node's [cluster] operator_keys: ${endpoint.id}`
        : "";
      throw new CliError(`${command}: ${codeName(e.code)}: ${e.message}${hint}`);
    }
    throw e;
  } finally {
    client.close();
    await endpoint.close();
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function short(id: string): string {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

function serviceName(id: ServiceId): string {
  return (ServiceId[id] ?? `service${id}`).toLowerCase();
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
