/**
 * `blixard cluster join|leave|transfer`: membership changes from the command
 * line, through the Cluster service (proto/blixard/v1/cluster.proto).
 *
 * Owns: the cluster subcommands; how `join --config` finds and reaches the
 * node to be joined on this host, and waits until it votes. Imports the
 * config loader, the runner's serving rules (which listeners a mode runs),
 * the Cluster and Status declarations and messages, the Iroh key and ticket
 * helpers, `util/address.ts`, and this folder's other modules.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { type AgentConfig, loadConfigFile } from "../config/mod.ts";
import { createClient } from "../rpc/client.ts";
import {
  type JoinRequest,
  JoinRequestSchema,
  JoinResponseSchema,
  TransferLeadershipResponseSchema,
} from "../rpc/gen/blixard/v1/cluster_pb.ts";
import type { Member } from "../rpc/gen/blixard/v1/common_pb.ts";
import type {
  GetClusterStatusResponse,
  GetRaftStatusResponse,
} from "../rpc/gen/blixard/v1/status_pb.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import { Cluster, Status } from "../rpc/services.ts";
import { transportsOf } from "../runner/routing.ts";
import type { GrpcClientTls } from "../transport/grpc/client.ts";
import { endpointIdOf, readSecretKeyFile } from "../transport/iroh/secret_key.ts";
import { type HostPort, parseHostPort } from "../util/address.ts";
import { printStatus } from "./call.ts";
import {
  CliError,
  ExitCode,
  type OptionSpecs,
  printJson,
  type Subcommand,
  usage,
  withSubcommands,
} from "./common.ts";
import {
  callFailed,
  checkTicket,
  type ClientRun,
  clientSubcommand,
  protoJson,
  rpcFailure,
  shortId,
  type Target,
  TARGET_OPTIONS,
  targetHelp,
  type TargetValues,
} from "./target.ts";

const JOIN_OPTIONS = {
  ...TARGET_OPTIONS,
  config: { type: "string", short: "c" },
  "node-id": { type: "string" },
  "node-ticket": { type: "string" },
  "node-grpc": { type: "string" },
  timeout: { type: "string", default: "60000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const LEAVE_OPTIONS = {
  ...TARGET_OPTIONS,
  config: { type: "string", short: "c" },
  "node-id": { type: "string" },
  timeout: { type: "string", default: "30000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const TRANSFER_OPTIONS = {
  ...TARGET_OPTIONS,
  to: { type: "string" },
  timeout: { type: "string", default: "30000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The longest one call of these commands may take but the change itself, ms. */
const CALL_MS = 10_000;
/** How long a membership change is retried while the cluster says "not now", ms. */
const RETRY_MS = 5_000;
/** The pause between those tries, ms. */
const RETRY_PAUSE_MS = 250;
/** How often join asks whether the new node votes yet, ms. */
const POLL_MS = 200;
/** The longest one status call of join's wait may take, ms. */
const POLL_CALL_MS = 2_000;
/** While nothing changes, join says it is still waiting this often, ms. */
const STILL_WAITING_MS = 5_000;

const JOIN_HELP = `Usage: blixard cluster join --config FILE (--ticket T | --addr A) [options]
       blixard cluster join --node-id N (--node-ticket T2 | --node-grpc H:P)...
                            (--ticket T | --addr A) [options]

Adds a running node that waits to be joined ([cluster] bootstrap = false) to
the cluster of the member at --ticket or --addr, and waits until the new node
is a voter and knows the leader. The cluster adds it as a learner, sends it
the log, and makes it a voter once it has caught up; progress goes to
stderr. Then it prints the membership.

Run it on the new node's host with --config: it reads the node's id from
FILE, asks the running node for its own addresses (over its gRPC listener,
on loopback when it binds all interfaces, else its Iroh endpoint with this
operator's key), and asks the member to add it with them. Without FILE, say
what to record (for scripts): --node-id, and --node-ticket or --node-grpc
or both; the wait then asks the member.

Options:
  -c, --config FILE       the new node's configuration file
  --node-id N             without --config: the new node's id
  --node-ticket T2        without --config: the new node's Iroh ticket (the
                          line it printed when it started)
  --node-grpc H:P         without --config: where other members reach its
                          gRPC listener (with --node-ticket, or alone)
  --json                  print the JoinResponse as JSON (docs/cli.md)

${
  targetHelp(
    "the member",
    "how long to wait for the node to become a voter (default\n                 60000)",
    "Reaching the cluster:",
  )
}`;

const LEAVE_HELP = `Usage: blixard cluster leave (--config FILE | --node-id N)
                             (--ticket T | --addr A) [options]

Removes a node from the cluster of the member at --ticket or --addr, and
returns once the removal is committed. Removing the leader is allowed: it
hands leadership to another voter first. The removed node keeps running but
is no member; stop it, or empty its data_dir before it joins again.

Options:
  -c, --config FILE   the configuration of the node to remove (its node.id)
  --node-id N         the node to remove
  --json              print the removed node's id as JSON (docs/cli.md)

${
  targetHelp(
    "the member",
    "how long to wait for the removal (default 30000)",
    "Reaching the cluster:",
  )
}`;

const TRANSFER_HELP = `Usage: blixard cluster transfer --to N (--ticket T | --addr A) [options]

Hands leadership to voter N (before maintenance on the leader's host, say),
and returns once N leads.

Options:
  --to N         the voter that should lead
  --json         print the TransferLeadershipResponse as JSON (docs/cli.md)

${
  targetHelp(
    "the member",
    "how long to wait until N leads (default 30000)",
    "Reaching the cluster:",
  )
}`;

const HELP = `Usage: blixard cluster join|leave|transfer ... (--ticket T | --addr A)

Changes the cluster's membership, through any member (a follower forwards to
the leader). Each change is committed through Raft before it is answered.

Commands:
  join      add a running node that waits to be joined; wait until it votes
  leave     remove a node (a leader hands over first)
  transfer  hand leadership to another voter

'blixard cluster COMMAND -h' for a command's options.`;

/** `blixard cluster`. */
export const CLUSTER_COMMAND = withSubcommands("cluster", HELP, {
  join: subcommand("join", JOIN_HELP, JOIN_OPTIONS, joinCommand),
  leave: subcommand("leave", LEAVE_HELP, LEAVE_OPTIONS, leaveCommand),
  transfer: subcommand("transfer", TRANSFER_HELP, TRANSFER_OPTIONS, transferCommand),
});

/** The parsed options of any cluster subcommand (each has a subset). */
interface ClusterValues extends TargetValues {
  config?: string;
  "node-id"?: string;
  "node-ticket"?: string;
  "node-grpc"?: string;
  to?: string;
  timeout?: string;
  json?: boolean;
  help?: boolean;
}

/** What a cluster subcommand runs with. */
interface Run extends ClientRun<ClusterValues> {
  /** When the command must be done, `performance.now()` ms. */
  readonly deadline: number;
}

function subcommand(
  sub: string,
  help: string,
  options: OptionSpecs,
  run: (r: Run) => Promise<number>,
): Subcommand {
  return clientSubcommand<ClusterValues>(
    `cluster ${sub}`,
    help,
    options,
    false,
    (r) => run({ ...r, deadline: performance.now() + r.timeoutMs }),
  );
}

/** What is left of the command's time, ms (at least 1, so a call still fails by itself). */
function remaining(r: Run): number {
  return Math.max(1, Math.round(r.deadline - performance.now()));
}

/**
 * A membership change: `call` with the rest of the command's time, tried
 * again while the cluster answers that it cannot do it now
 * (FAILED_PRECONDITION: a change pending, a leader whose first entry has not
 * committed yet; UNAVAILABLE: no leader known, as after a transfer), as
 * proto/blixard/v1/cluster.proto's services ask of a caller, for at most
 * {@link RETRY_MS}. Nothing was changed by a refused call, so trying again
 * is safe; a join or a transfer that did happen is answered the same way again.
 */
async function change<T>(
  r: Run,
  target: Target,
  failure: string,
  call: (deadlineMs: number) => Promise<T>,
): Promise<T> {
  const until = Math.min(r.deadline, performance.now() + RETRY_MS);
  for (;;) {
    try {
      return await call(remaining(r));
    } catch (e) {
      const temporary = e instanceof RpcError &&
        (e.code === Code.FAILED_PRECONDITION || e.code === Code.UNAVAILABLE);
      if (!temporary || performance.now() + RETRY_PAUSE_MS >= until) {
        throw callFailed(`${r.name}: ${failure}`, e, target);
      }
      console.error(`${rpcFailure(e)}; trying again`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
    }
  }
}

/** A node id option: 1..2^53-1, or a usage error naming the option. */
function nodeIdOption(name: string, option: string, text: string): bigint {
  if (!/^\d{1,16}$/.test(text) || Number(text) < 1 || Number(text) > Number.MAX_SAFE_INTEGER) {
    throw usage(name, `${name}: --${option} ${text}: expected a node id, 1 to 2^53-1`);
  }
  return BigInt(text);
}

/** FILE's configuration, or every error in it (exit status 1). */
async function configOf(file: string): Promise<AgentConfig> {
  const result = await loadConfigFile(file);
  if (!result.ok) throw new CliError(result.errors.map((e) => e.message).join("\n"));
  return result.config;
}

/** The member of `--ticket`/`--addr` and its Raft state (who it is, who votes). */
async function memberOf(r: Run): Promise<{ target: Target; raft: GetRaftStatusResponse }> {
  const target = await r.dialer.member();
  try {
    const raft = await createClient(Status, target.channel).getRaftStatus({}, {
      deadlineMs: Math.min(remaining(r), CALL_MS),
    });
    return { target, raft };
  } catch (e) {
    throw callFailed(`${r.name}: cannot reach the member at ${target.label}`, e, target);
  }
}

/** The Join request the form without FILE describes, or a usage error. */
function joinRequestFromOptions(name: string, values: ClusterValues): JoinRequest {
  if (!values["node-id"]) {
    throw usage(
      name,
      `${name}: give --config FILE, or --node-id N with --node-ticket or --node-grpc`,
    );
  }
  const nodeId = nodeIdOption(name, "node-id", values["node-id"]);
  const ticket = values["node-ticket"];
  const grpc = values["node-grpc"];
  if (!ticket && !grpc) {
    throw usage(
      name,
      `${name}: --node-id needs --node-ticket or --node-grpc (or both): how members reach node ${nodeId}`,
    );
  }
  if (ticket) checkTicket(name, ticket, "--node-ticket: copy the whole ticket the node printed");
  if (grpc !== undefined && !(parseHostPort(grpc)?.port)) {
    throw usage(name, `${name}: --node-grpc ${grpc}: expected HOST:PORT with a port 1-65535`);
  }
  return create(JoinRequestSchema, {
    nodeId,
    ...(ticket ? { iroh: { case: "irohTicket", value: ticket } } : {}),
    grpcAddress: grpc ?? "",
  });
}

async function joinCommand(r: Run): Promise<number> {
  const { name, values } = r;
  const byFile = values.config !== undefined;
  if (byFile && (values["node-id"] || values["node-ticket"] || values["node-grpc"])) {
    throw usage(
      name,
      `${name}: --config reads the node's id and addresses from the running node; ` +
        "--node-id, --node-ticket and --node-grpc are for the form without it",
    );
  }
  // What the command line alone can refuse, it refuses before calling anyone.
  const config = byFile ? await configOf(values.config!) : null;
  const given = config ? null : joinRequestFromOptions(name, values);
  const member = await memberOf(r);
  const where = `node ${member.raft.nodeId} (${member.target.label})`;
  const own = config ? await ownMember(r, config, values.config!, member.raft) : null;
  const request = own ? joinRequestOf(own.member) : given!;
  const id = request.nodeId;
  console.error(`asking ${where} to add node ${id} (${describeJoin(request)})`);
  const joined = await change(
    r,
    member.target,
    `${where} did not add node ${id}`,
    (deadlineMs) => createClient(Cluster, member.target.channel).join(request, { deadlineMs }),
  );
  console.error(
    `the cluster added node ${id} (leader node ${joined.leaderId}); waiting until it is a voter`,
  );
  // The new node says best whether it votes; without FILE, the member is asked.
  const final = await untilVoter(r, id, own?.target ?? member.target, own !== null);
  if (values.json) {
    printJson(protoJson(JoinResponseSchema, joined));
  } else {
    console.log(
      `node ${id} is a voter; leader node ${final.raft.leaderId}, term ${final.raft.term}`,
    );
    printStatus(final.cluster, final.raft);
  }
  return ExitCode.Ok;
}

/** `endpoint 3f2a…, 2 direct address(es), gRPC 10.0.0.4:7400`, for the progress line. */
function describeJoin(request: JoinRequest): string {
  const parts: string[] = [];
  if (request.iroh.case === "irohAddress") {
    const a = request.iroh.value;
    parts.push(
      `endpoint ${shortId(a.endpointId)} at ${a.directAddresses.join(",") || "no direct address"}`,
    );
  } else if (request.iroh.case === "irohTicket") {
    parts.push("its Iroh ticket");
  }
  if (request.grpcAddress) parts.push(`gRPC ${request.grpcAddress}`);
  return parts.join(", ");
}

/** The Join request for a node as it reports itself. */
function joinRequestOf(member: Member): JoinRequest {
  return create(JoinRequestSchema, {
    nodeId: member.nodeId,
    ...(member.iroh ? { iroh: { case: "irohAddress", value: member.iroh } } : {}),
    grpcAddress: member.grpcAddress,
  });
}

/**
 * Reaches the node FILE configures, on this host, and reads its own member
 * entry (its endpoint, direct addresses and gRPC address as Status reports
 * them). Refuses a node that already belongs to another cluster than the
 * one `memberRaft` describes.
 */
async function ownMember(
  r: Run,
  config: AgentConfig,
  file: string,
  memberRaft: GetRaftStatusResponse,
): Promise<{ target: Target; member: Member }> {
  const { name } = r;
  const id = BigInt(config.node.id);
  const target = await reachOwnNode(r, config, file);
  const status = createClient(Status, target.channel);
  const options = { deadlineMs: Math.min(remaining(r), CALL_MS) };
  let cluster: GetClusterStatusResponse;
  let raft: GetRaftStatusResponse;
  try {
    [cluster, raft] = await Promise.all([
      status.getClusterStatus({}, options),
      status.getRaftStatus({}, options),
    ]);
  } catch (e) {
    throw callFailed(
      `${name}: cannot reach node ${id} at ${target.label}, as ${file} says`,
      e,
      target,
      `\n  is it running? ('blixard node --config ${file}')`,
    );
  }
  if (cluster.nodeId !== id) {
    throw new CliError(
      `${name}: the node at ${target.label} is node ${cluster.nodeId}, but ${file} says node.id = ${id}: ` +
        "is that the file it runs with?",
    );
  }
  const inCluster = memberRaft.voters.includes(id) || memberRaft.learners.includes(id);
  if (raft.voters.length > 0 && !inCluster) {
    throw new CliError(
      `${name}: node ${id} already belongs to another cluster (voters ${
        raft.voters.join(", ")
      }), ` +
        "formed on its first start: [cluster] bootstrap = true, the default\n" +
        `  to join it here, stop it, empty its data_dir, set bootstrap = false in ${file}, and start it again`,
    );
  }
  const member = cluster.members.find((m) => m.nodeId === id);
  if (!member) throw new CliError(`${name}: node ${id} did not list itself among its members`);
  const host = parseHostPort(member.grpcAddress);
  if (host && isWildcard(host)) {
    console.error(
      `warning: node ${id} serves gRPC on ${member.grpcAddress}, which other members cannot dial; ` +
        "set [grpc] bind to an address they can reach",
    );
  }
  return { target, member };
}

function isWildcard(address: HostPort): boolean {
  return address.host === "0.0.0.0" || address.host === "::";
}

/** `host:port` to dial a listener bound to `address` from its own host. */
function localDial(address: HostPort): string {
  const host = address.host === "0.0.0.0"
    ? "127.0.0.1"
    : address.host === "::"
    ? "::1"
    : address.host;
  return host.includes(":") ? `[${host}]:${address.port}` : `${host}:${address.port}`;
}

/**
 * A channel to the node `config` describes, from its own host: its gRPC
 * listener (as a peer would call it: the node's own TLS files), else its
 * Iroh endpoint (as this operator). Says what to pass when neither works.
 */
async function reachOwnNode(r: Run, config: AgentConfig, file: string): Promise<Target> {
  const transports = transportsOf(config.transport.mode);
  const why: string[] = [];
  if (transports.includes("grpc")) {
    const bind = parseHostPort(config.grpc.bind);
    const { certFile, keyFile, caFile } = config.grpc.tls;
    if (!bind || bind.port === 0) {
      why.push(`grpc.bind = "${config.grpc.bind}" names no fixed port`);
    } else if (certFile && !caFile && !r.values["tls-ca"]) {
      why.push(
        "its gRPC listener uses TLS, and neither grpc.tls.ca_file nor --tls-ca names the CA to check it",
      );
    } else {
      const tls: GrpcClientTls | undefined = certFile
        ? {
          caFile: caFile ?? r.values["tls-ca"]!,
          // Mutual TLS: present the node's own certificate, as its peers do.
          ...(caFile && keyFile ? { certFile, keyFile } : {}),
        }
        : undefined;
      return r.dialer.grpc(localDial(bind), tls);
    }
  }
  if (transports.includes("iroh")) {
    const bind = parseHostPort(config.iroh.bind);
    if (!bind || bind.port === 0) {
      why.push(`iroh.bind = "${config.iroh.bind}" names no fixed port`);
    } else {
      const secretKey = await readSecretKeyFile(config.iroh.secretKeyFile);
      return await r.dialer.iroh({
        id: endpointIdOf(secretKey),
        directAddresses: [localDial(bind)],
      });
    }
  }
  throw new CliError(
    `${r.name}: cannot reach node ${config.node.id} from what ${file} says: ${why.join("; ")}\n` +
      `  pass --node-id ${config.node.id} --node-ticket T (the ticket it printed when it started) ` +
      "instead of --config, with --node-grpc HOST:PORT if it serves gRPC",
  );
}

/**
 * Waits until node `id` is a voter and a leader is known, asking `target`
 * (the node itself when `self`, else a member), with progress on stderr.
 */
async function untilVoter(
  r: Run,
  id: bigint,
  target: Target,
  self: boolean,
): Promise<{ cluster: GetClusterStatusResponse; raft: GetRaftStatusResponse }> {
  const status = createClient(Status, target.channel);
  const asking = self ? `node ${id}` : `the member at ${target.label}`;
  // A progress line when the state changes, and now and then while it does not.
  let said = "";
  let saidAt = -Infinity;
  let last = "";
  for (;;) {
    const deadlineMs = Math.min(remaining(r), POLL_CALL_MS);
    let state: string;
    try {
      const raft = await status.getRaftStatus({}, { deadlineMs });
      if (raft.voters.includes(id) && raft.leaderId !== 0n) {
        const cluster = await status.getClusterStatus({}, { deadlineMs: remaining(r) });
        return { cluster, raft };
      }
      const role = raft.voters.includes(id)
        ? "is a voter"
        : raft.learners.includes(id)
        ? "is a learner, catching up"
        : self
        ? "has not received the membership yet"
        : "is not a member yet";
      const leader = raft.leaderId === 0n ? "no leader known" : `leader node ${raft.leaderId}`;
      state = `node ${id} ${role} (${leader})`;
      last = `${state}; ${asking} has applied up to ${raft.appliedIndex}`;
    } catch (e) {
      state = `${asking} did not answer: ${e instanceof RpcError ? rpcFailure(e) : e}`;
      last = state;
    }
    const now = performance.now();
    if (state !== said || now - saidAt >= STILL_WAITING_MS) {
      console.error(last);
      said = state;
      saidAt = now;
    }
    if (now + POLL_MS >= r.deadline) {
      throw new CliError(
        `${r.name}: node ${id} is not a voter after ${r.values.timeout} ms: ${last}\n` +
          "  it was added as a learner; the leader makes it a voter once it has caught up " +
          "('blixard status' shows how far it is); raise --timeout to wait longer",
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function leaveCommand(r: Run): Promise<number> {
  const { name, values } = r;
  if ((values.config === undefined) === (values["node-id"] === undefined)) {
    throw usage(name, `${name}: give exactly one of --config FILE or --node-id N`);
  }
  const id = values.config !== undefined
    ? BigInt((await configOf(values.config)).node.id)
    : nodeIdOption(name, "node-id", values["node-id"]!);
  const member = await memberOf(r);
  const where = `node ${member.raft.nodeId} (${member.target.label})`;
  await change(
    r,
    member.target,
    `${where} did not remove node ${id}`,
    (deadlineMs) =>
      createClient(Cluster, member.target.channel).leave({ nodeId: id }, { deadlineMs }),
  );
  if (values.json) printJson({ nodeId: `${id}` });
  else console.log(`node ${id} is no longer a member`);
  return ExitCode.Ok;
}

async function transferCommand(r: Run): Promise<number> {
  const { name, values } = r;
  if (values.to === undefined) throw usage(name, `${name}: --to N is required: the next leader`);
  const to = nodeIdOption(name, "to", values.to);
  const member = await memberOf(r);
  const where = `node ${member.raft.nodeId} (${member.target.label})`;
  const res = await change(
    r,
    member.target,
    `${where} did not hand leadership to node ${to}`,
    (deadlineMs) =>
      createClient(Cluster, member.target.channel).transferLeadership(
        { targetNodeId: to },
        { deadlineMs },
      ),
  );
  if (values.json) printJson(protoJson(TransferLeadershipResponseSchema, res));
  else console.log(`node ${res.leaderId} leads, term ${res.term}`);
  return ExitCode.Ok;
}
