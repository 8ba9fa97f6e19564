/**
 * How the client subcommands reach nodes: the `--ticket` / `--addr` options
 * and their help, the operator's Iroh endpoint, gRPC channels with TLS, and
 * a failed call as the one line an operator reads.
 *
 * Owns: {@link TARGET_OPTIONS}, {@link targetHelp}, {@link Dialer},
 * {@link clientSubcommand}, {@link callFailed}, {@link protoJson}. Imports the typed client's
 * transport interface, the RPC errors, the Iroh and gRPC client transports
 * and the operator key file.
 *
 * @module
 */

import { dirname } from "node:path";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { type DescMessage, type JsonObject, type MessageShape, toJson } from "@bufbuild/protobuf";
import type { CallTransport } from "../rpc/client.ts";
import { Code, codeName, RpcError } from "../rpc/errors.ts";
import { GrpcChannel, type GrpcClientTls } from "../transport/grpc/client.ts";
import { GrpcTransportError } from "../transport/grpc/errors.ts";
import {
  createEndpoint,
  type IrohEndpoint,
  parseTicket,
  type PeerTarget,
  type RelayModeOption,
} from "../transport/iroh/endpoint.ts";
import { IrohError } from "../transport/iroh/errors.ts";
import { IrohRpcClient } from "../transport/iroh/rpc_client.ts";
import { endpointIdOf, loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import {
  CliError,
  ExitCode,
  operatorKeyPath,
  type OptionSpecs,
  type Subcommand,
  usage,
} from "./common.ts";

/** The options that say how to reach a node; every client subcommand has them. */
export const TARGET_OPTIONS = {
  ticket: { type: "string" },
  addr: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  insecure: { type: "boolean" },
  key: { type: "string" },
  relay: { type: "string", default: "disabled" },
} as const;

/** The parsed {@link TARGET_OPTIONS}. */
export interface TargetValues {
  ticket?: string;
  addr?: string;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  insecure?: boolean;
  key?: string;
  relay?: string;
}

/**
 * The help lines of {@link TARGET_OPTIONS} and `--timeout` under `heading`,
 * for a command that calls `whom` ("the node", "a member") and waits as
 * `timeout` says (continuation lines indented by 17).
 */
export function targetHelp(whom: string, timeout: string, heading = "Options:"): string {
  return `${heading}
  --ticket T     call ${whom} over Iroh: its ticket (the line a node prints
                 when it starts, or 'blixard key show --addr ...' on its host)
  --addr A       call ${whom} over gRPC: its [grpc] bind address
  --tls-ca F     gRPC: CA bundle the node's certificate must chain to (TLS)
  --tls-cert F   gRPC: client certificate, for mutual TLS (with --tls-key)
  --tls-key F    gRPC: its private key
  --insecure     gRPC: plaintext to a non-loopback address
  --key PATH     Iroh: this operator's key file, created on first use; its
                 endpoint id must be listed in the node's [cluster]
                 operator_keys (default: ${operatorKeyPath()})
  --relay MODE   Iroh: default | disabled (default: disabled, direct addresses
                 only)
  --timeout MS   ${timeout}`;
}

/** A channel to one node, and how the output names it. */
export interface Target {
  readonly channel: CallTransport;
  /** `endpoint 3f2a…` or `grpc 10.0.0.2:7400`. */
  readonly label: string;
  /** The operator's endpoint id when the channel is Iroh, for the PERMISSION_DENIED hint. */
  readonly operatorId?: string;
}

/** Milliseconds from a `--timeout`-like option, or a usage error naming it. */
export function parseMs(command: string, option: string, text: string): number {
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms <= 0) {
    throw usage(command, `--${option} ${text}: expected a positive number of milliseconds`);
  }
  return ms;
}

/**
 * Opens channels to nodes for one command: the node of `--ticket`/`--addr`,
 * and others (a node being joined). The operator's Iroh endpoint is created
 * on first use and shared; {@link close} releases everything.
 */
export class Dialer {
  readonly #command: string;
  readonly #values: TargetValues;
  readonly #connectTimeoutMs: number;
  readonly #relay: RelayModeOption;
  #iroh: Promise<{ endpoint: IrohEndpoint; client: IrohRpcClient }> | undefined;
  readonly #grpc: GrpcChannel[] = [];

  /** Checks the target options (usage errors) without opening anything. */
  constructor(command: string, values: TargetValues, connectTimeoutMs: number) {
    this.#command = command;
    this.#values = values;
    this.#connectTimeoutMs = connectTimeoutMs;
    if (values.relay !== "default" && values.relay !== "disabled") {
      throw usage(command, `--relay ${values.relay}: expected "default" or "disabled"`);
    }
    this.#relay = values.relay;
    if (!values["tls-cert"] !== !values["tls-key"]) {
      throw usage(command, "--tls-cert and --tls-key come together");
    }
  }

  /** The node of `--ticket` or `--addr`; exactly one is required. */
  member(): Promise<Target> {
    const { ticket, addr } = this.#values;
    if (!ticket === !addr) {
      throw usage(
        this.#command,
        `${this.#command}: give exactly one of --ticket (Iroh) or --addr (gRPC)`,
      );
    }
    if (ticket) {
      // Before anything is created: a ticket cut short in a copy and paste is the usual mistake.
      checkTicket(this.#command, ticket, 'copy the whole "ticket:" line the node printed');
      return this.iroh(ticket);
    }
    return Promise.resolve(this.grpc(addr!, this.#operatorTls()));
  }

  /** The gRPC TLS the `--tls-*` options describe, if any. */
  #operatorTls(): GrpcClientTls | undefined {
    const { "tls-ca": caFile, "tls-cert": certFile, "tls-key": keyFile } = this.#values;
    if (!caFile && !certFile) return undefined;
    return { ...(caFile ? { caFile } : {}), ...(certFile && keyFile ? { certFile, keyFile } : {}) };
  }

  /** A node over Iroh, as this operator. */
  async iroh(peer: PeerTarget): Promise<Target> {
    const { endpoint, client } = await (this.#iroh ??= this.#openIroh());
    const channel = client.peer(peer);
    return {
      channel,
      label: `endpoint ${shortId(channel.peerId)}`,
      operatorId: endpoint.id,
    };
  }

  async #openIroh(): Promise<{ endpoint: IrohEndpoint; client: IrohRpcClient }> {
    const keyFile = this.#values.key ?? operatorKeyPath();
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
      relayMode: this.#relay,
      alpns: [],
    });
    return {
      endpoint,
      client: new IrohRpcClient({ endpoint, connectTimeoutMs: this.#connectTimeoutMs }),
    };
  }

  /**
   * A node over gRPC at `addr`, with `tls` (plaintext without). An address
   * that is not HOST:PORT, plaintext to another host without `--insecure`,
   * and a TLS file that cannot be read are errors naming the options.
   */
  grpc(addr: string, tls: GrpcClientTls | undefined): Target {
    let channel: GrpcChannel;
    try {
      channel = new GrpcChannel({
        target: addr,
        ...(tls ? { tls } : {}),
        allowInsecure: this.#values.insecure ?? false,
      });
    } catch (e) {
      if (!(e instanceof GrpcTransportError)) throw e;
      if (e.code === "INSECURE") {
        throw usage(
          this.#command,
          `${this.#command}: ${addr} is not a loopback address, and plaintext would cross the network: ` +
            "give --tls-ca (with --tls-cert and --tls-key for mutual TLS), or --insecure to " +
            "call it in plaintext on purpose",
        );
      }
      if (e.code === "INVALID_ARGUMENT") {
        throw usage(this.#command, `${this.#command}: --addr ${addr}: expected HOST:PORT`);
      }
      throw new CliError(`${this.#command}: ${e.message}`);
    }
    this.#grpc.push(channel);
    return { channel, label: `grpc ${addr}` };
  }

  /** Closes every channel and the operator's endpoint. */
  async close(): Promise<void> {
    for (const channel of this.#grpc) channel.close();
    const iroh = await this.#iroh?.catch(() => undefined);
    if (iroh) {
      iroh.client.close();
      await iroh.endpoint.close();
    }
  }
}

/** The longest wait for one connection, ms, whatever a command's own timeout. */
const CONNECT_MS = 10_000;

/** What a subcommand that calls nodes runs with. */
export interface ClientRun<V> {
  /** `meta put`, for messages. */
  readonly name: string;
  readonly values: V;
  readonly positionals: readonly string[];
  /** How many of `positionals` came before a `--` (all of them without one). */
  readonly beforeTerminator: number;
  readonly dialer: Dialer;
  /** `--timeout`; Infinity for a command whose `--timeout` has no default and is not given. */
  readonly timeoutMs: number;
}

/**
 * A subcommand that calls nodes (`meta put`, `cluster join`): parses its
 * options (`--help`, `--timeout`, the target options), opens a
 * {@link Dialer}, runs, and closes every channel whatever happens. Without
 * `positionals`, an argument that is not an option is a usage error.
 */
export function clientSubcommand<V extends TargetValues & { timeout?: string; help?: boolean }>(
  name: string,
  help: string,
  options: OptionSpecs,
  positionals: boolean,
  run: (r: ClientRun<V>) => Promise<number>,
): Subcommand {
  return {
    help,
    options,
    async run(args) {
      const parsed = parseArgs({
        args,
        options: options as ParseArgsOptionsConfig,
        allowPositionals: true,
        tokens: true,
      });
      const values = parsed.values as unknown as V;
      if (values.help) {
        console.log(help);
        return ExitCode.Ok;
      }
      if (!positionals && parsed.positionals.length > 0) {
        throw usage(name, `${name}: unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
      }
      const timeoutMs = values.timeout === undefined
        ? Infinity
        : parseMs(name, "timeout", values.timeout);
      const terminator = parsed.tokens.find((t) => t.kind === "option-terminator")?.index;
      const beforeTerminator = terminator === undefined
        ? parsed.positionals.length
        : parsed.tokens.filter((t) => t.kind === "positional" && t.index < terminator).length;
      const dialer = new Dialer(name, values, Math.min(timeoutMs, CONNECT_MS));
      try {
        return await run({
          name,
          values,
          positionals: parsed.positionals,
          beforeTerminator,
          dialer,
          timeoutMs,
        });
      } finally {
        await dialer.close();
      }
    },
  };
}

/** A usage error for a ticket that does not parse, with `advice`. */
export function checkTicket(command: string, ticket: string, advice: string): void {
  try {
    parseTicket(ticket);
  } catch (e) {
    if (!(e instanceof IrohError)) throw e;
    throw usage(command, `${e.message}; ${advice}`);
  }
}

/**
 * The error an operator reads for a failed call: `what`, the status code and
 * the node's message, then `advice` lines. A node that refused this
 * operator's Iroh key gets the endpoint id to add. Anything but an RpcError
 * is returned as it is.
 */
export function callFailed(what: string, e: unknown, target: Target, advice = ""): unknown {
  if (!(e instanceof RpcError)) return e;
  const permission = e.code === Code.PERMISSION_DENIED && target.operatorId
    ? `\n  add this operator's endpoint id to the node's [cluster] operator_keys: ${target.operatorId}`
    : "";
  return new CliError(`${what}: ${rpcFailure(e)}${permission}${advice}`);
}

/** `UNAVAILABLE: connect ECONNREFUSED ...`: a failed call's code and message. */
export function rpcFailure(e: RpcError): string {
  return `${codeName(e.code)}: ${e.message}`;
}

/**
 * A message in the canonical proto3 JSON mapping: enum value names, lowerCamelCase
 * field names, 64-bit integers as decimal strings, and every field, defaults included,
 * so that a script finds every key whatever the values.
 */
export function protoJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
): JsonObject {
  // A message always maps to a JSON object (none of ours is a well-known wrapper type).
  return toJson(schema, message, { alwaysEmitImplicit: true }) as JsonObject;
}

/** The first 12 characters of an endpoint id, for tables and labels. */
export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}
