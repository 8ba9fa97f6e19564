/**
 * From TOML text to one frozen {@link AgentConfig}, or to every problem at
 * once: TOML syntax (with line and column), then the schema (types, enums,
 * ranges, unknown keys, cross-key rules), then warnings about keys that are
 * valid but probably not what the operator meant.
 *
 * Owns: parseConfig, loadConfigFile, the snake_case → camelCase mapping,
 * the mode a file implies, refusing keys that are not supported yet, and the
 * warnings. May import: smol-toml, zod, the other files of src/config/,
 * `src/util/address.ts`; nothing else of the project.
 *
 * @module
 */

import { parse as parseToml, TomlError } from "smol-toml";
import { isLoopback, parseHostPort } from "../util/address.ts";
import { raftTransport } from "./effective.ts";
import { checkConfigFiles } from "./files.ts";
import { docOf, keyPaths, schemaAt } from "./introspect.ts";
import {
  ConfigError,
  type ConfigIssue,
  DEFAULT_MESSAGE,
  formatPath,
  formatValue,
  toConfigIssues,
} from "./issues.ts";
import {
  ALL_EXCEPT_RAFT,
  type ConfigFile,
  configSchema,
  DEFAULTS,
  SERVICE_ALIASES,
  SERVICE_NAMES,
  type ServiceName,
} from "./schema.ts";
import type { AgentConfig, PreferIroh } from "./types.ts";

/** What {@link parseConfig} and {@link loadConfigFile} return. */
export type ConfigResult =
  | {
    readonly ok: true;
    readonly config: AgentConfig;
    /** Valid but suspicious settings; print them, do not refuse to start. */
    readonly warnings: readonly ConfigIssue[];
  }
  | { readonly ok: false; readonly errors: readonly ConfigIssue[] };

/**
 * Parses and validates a config file's text. Pure: reads nothing, and the
 * same text always gives the same result. `source` (the file's path) starts
 * every message; without it messages start with `config`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./mod.ts";
 * const result = parseConfig('[node]\nid = 1\n[transport]\nmode = "quic"\n', "/etc/blixard/agent.toml");
 * if (!result.ok) console.log(result.errors[0]!.message);
 * // /etc/blixard/agent.toml: transport.mode = "quic": expected "grpc", "iroh" or "dual"
 * ```
 */
export function parseConfig(text: string, source?: string): ConfigResult {
  const prefix = source ?? "config";
  let file: Record<string, unknown>;
  try {
    file = parseToml(text);
  } catch (e) {
    return { ok: false, errors: [syntaxIssue(e, prefix)] };
  }
  const { input, refused } = withoutUnsupportedKeys(file, prefix);
  const parsed = configSchema.safeParse(input, { error: () => DEFAULT_MESSAGE });
  if (!parsed.success || refused.length > 0) {
    const errors = parsed.success ? [] : toConfigIssues(parsed.error.issues, input, prefix);
    return { ok: false, errors: [...errors, ...refused] };
  }
  const impliedDual = impliesDual(input);
  const config = deepFreeze(toAgentConfig(parsed.data, impliedDual));
  const warnings = warningsOf(config, input, prefix);
  if (impliedDual) {
    warnings.unshift({
      code: "implied_mode",
      path: "transport.mode",
      message:
        `${prefix}: transport.mode: not set, so taken as "dual": the file has a [transport.migration] section, and "dual" is the only mode that reads it (without the section the mode would be "grpc"); write mode = "dual" to say so`,
    });
  }
  return { ok: true, config, warnings: Object.freeze(warnings) };
}

/** Options of {@link loadConfigFile}. */
export interface LoadOptions {
  /**
   * Also check the files the config names ({@link checkConfigFiles}): what
   * `blixard config check` and `blixard node` do. Default false.
   */
  readonly checkFiles?: boolean;
}

/**
 * Reads and parses a config file, and with `checkFiles` checks the files it
 * names. A file that cannot be read is an `unreadable_file` error naming the
 * path and the reason; it never throws.
 */
export async function loadConfigFile(
  path: string,
  options: LoadOptions = {},
): Promise<ConfigResult> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const reason = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : e instanceof Error
      ? e.message
      : String(e);
    return {
      ok: false,
      errors: [{
        code: "unreadable_file",
        path: "",
        message: `${path}: cannot read config file: ${reason}`,
      }],
    };
  }
  const result = parseConfig(text, path);
  if (!result.ok || !options.checkFiles) return result;
  const errors = await checkConfigFiles(result.config, path);
  return errors.length === 0 ? result : { ok: false, errors };
}

/**
 * The config of a result, or a thrown {@link ConfigError} with its errors.
 *
 * @example
 * ```ts
 * import { configOrThrow, parseConfig } from "./mod.ts";
 * const config = configOrThrow(parseConfig("[node]\nid = 1"));
 * console.log(config.grpc.bind); // 127.0.0.1:7400
 * ```
 */
export function configOrThrow(result: ConfigResult): AgentConfig {
  if (!result.ok) throw new ConfigError(result.errors);
  return result.config;
}

function syntaxIssue(e: unknown, prefix: string): ConfigIssue {
  if (e instanceof TomlError) {
    // smol-toml's message is "Invalid TOML document: <what>\n\n<excerpt>".
    const what = e.message.replace(/^Invalid TOML document: /, "").split("\n")[0]!;
    return {
      code: "toml_syntax",
      path: "",
      line: e.line,
      column: e.column,
      message: `${prefix}:${e.line}:${e.column}: TOML syntax error: ${what}`,
    };
  }
  return {
    code: "toml_syntax",
    path: "",
    message: `${prefix}: TOML syntax error: ${e instanceof Error ? e.message : String(e)}`,
  };
}

function normalisePreferIroh(list: readonly string[]): PreferIroh {
  if (list.includes(ALL_EXCEPT_RAFT)) return [ALL_EXCEPT_RAFT];
  const names = new Set(list.map((s) => SERVICE_ALIASES[s] ?? s));
  return SERVICE_NAMES.filter((s: ServiceName) => names.has(s));
}

/** Only the keys that are set, so that absent optional keys stay absent. */
function defined<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Partial<
    T
  >;
}

/**
 * Whether the file has `[transport.migration]` and no `transport.mode`.
 * Such a file is read as mode "dual": it is how the predecessor's rollout
 * plan writes its middle stages, and read as the default "grpc" it would move
 * every service off Iroh on reload, with nothing but a log line to say so.
 */
function impliesDual(input: Record<string, unknown>): boolean {
  const transport = input.transport;
  return isTable(transport) && transport.migration !== undefined && transport.mode === undefined;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value) &&
    !(value instanceof Date);
}

/**
 * The file without the keys that are not supported yet, and a
 * `not_supported` error for each one it set. Only those keys are taken out,
 * so every other problem of the file is still reported in the same pass.
 */
function withoutUnsupportedKeys(
  file: Record<string, unknown>,
  prefix: string,
): { input: Record<string, unknown>; refused: ConfigIssue[] } {
  let input = file;
  const refused: ConfigIssue[] = [];
  for (const path of UNSUPPORTED) {
    const [table, key] = path.keys;
    const section = input[table];
    if (!isTable(section) || !Object.hasOwn(section, key)) continue;
    const { [key]: value, ...rest } = section;
    input = { ...input, [table]: rest };
    const at = formatPath(path.keys);
    refused.push({
      code: "not_supported",
      path: at,
      message: `${prefix}: ${at} = ${
        formatValue(value)
      }: not supported yet: ${path.what} (${path.until}); remove the key`,
    });
  }
  return { input, refused };
}

/** The keys that are not supported yet, from the schema's docs. All are `[table] key`. */
const UNSUPPORTED: readonly { keys: [string, string]; what: string; until: string }[] = keyPaths(
  configSchema,
).flatMap((keys) => {
  const schema = schemaAt(configSchema, keys);
  const notSupported = schema === undefined ? undefined : docOf(schema).notSupported;
  if (notSupported === undefined) return [];
  if (keys.length !== 2) throw new Error(`not-supported key ${keys.join(".")} is not [table] key`);
  return [{ keys: [keys[0]!, keys[1]!] as [string, string], ...notSupported }];
});

function toAgentConfig(file: ConfigFile, impliedDual: boolean): AgentConfig {
  const { node, grpc, iroh, cluster, raft, metrics, vm, limits } = file;
  const transport = {
    ...file.transport,
    mode: impliedDual ? "dual" as const : file.transport.mode,
  };
  const m = transport.migration;
  // Outside mode "dual" the migration keys mean nothing; hold the defaults so
  // that the effective config (and its printout) says so.
  const migration = transport.mode !== "dual"
    ? { preferIroh: [], raftTransport: "grpc" as const, fallbackToGrpc: true }
    : {
      preferIroh: normalisePreferIroh(m.prefer_iroh),
      raftTransport: m.raft_transport,
      fallbackToGrpc: m.fallback_to_grpc,
    };
  return {
    node: { id: node.id, dataDir: node.data_dir },
    transport: { mode: transport.mode, migration },
    grpc: {
      bind: grpc.bind,
      allowInsecure: grpc.allow_insecure,
      tls: defined({
        certFile: grpc.tls.cert_file,
        keyFile: grpc.tls.key_file,
        caFile: grpc.tls.ca_file,
      }),
    },
    iroh: {
      bind: iroh.bind,
      relay: typeof iroh.relay === "string" ? iroh.relay : [...iroh.relay],
      secretKeyFile: iroh.secret_key_file ??
        `${node.data_dir.replace(/\/+$/, "")}/${DEFAULTS.secretKeyFileName}`,
      alpn: iroh.alpn,
    },
    cluster: {
      peers: cluster.peers.map((p) => ({
        id: p.id,
        ...defined({ endpointId: p.endpoint_id }),
        addresses: [...p.addresses],
        ...defined({ ticket: p.ticket, grpcAddress: p.grpc_address }),
      })),
      operatorKeys: [...cluster.operator_keys],
      bootstrap: cluster.bootstrap,
    },
    raft: {
      tickMs: raft.tick_ms,
      electionTicks: raft.election_ticks,
      heartbeatTicks: raft.heartbeat_ticks,
      snapshotEveryEntries: raft.snapshot_every_entries,
      keepEntries: raft.keep_entries,
    },
    metrics: { enabled: metrics.enabled, bind: metrics.bind },
    vm: {
      backends: [...vm.backends],
      ...defined({ vcpus: vm.vcpus, memoryMib: vm.memory_mib }),
      accel: vm.accel,
      qemuBinary: vm.qemu_binary,
      nodeLostAfterMs: vm.node_lost_after_ms,
      onAgentStop: vm.on_agent_stop,
    },
    limits: {
      maxFrameBytes: limits.max_frame_bytes,
      maxConnectionBufferBytes: limits.max_connection_buffer_bytes,
      maxInflightRequests: limits.max_inflight_requests,
      maxConcurrentStreams: limits.max_concurrent_streams,
      requestDeadlineMs: limits.request_deadline_ms,
      maxRequestDeadlineMs: limits.max_request_deadline_ms,
      shutdownTimeoutMs: limits.shutdown_timeout_ms,
    },
  };
}

function warningsOf(
  config: AgentConfig,
  input: Record<string, unknown>,
  prefix: string,
): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  const warn = (code: ConfigIssue["code"], path: string, what: string) =>
    warnings.push({ code, path, message: `${prefix}: ${path}: ${what}` });
  const { mode } = config.transport;

  const rawMigration = (input.transport as Record<string, unknown> | undefined)?.migration;
  // Ignored rather than refused in grpc mode too: rolling back from any stage must
  // be the one-line change mode = "grpc", however much migration config is left.
  if (mode !== "dual" && rawMigration !== null && typeof rawMigration === "object") {
    const over = mode === "iroh" ? "Iroh" : "gRPC";
    for (const key of Object.keys(rawMigration)) {
      warn(
        "ignored_key",
        `transport.migration.${key}`,
        `ignored: transport.mode = "${mode}" carries every service and raft over ${over}`,
      );
    }
  }

  const paths: [string, string | undefined][] = [
    ["node.data_dir", config.node.dataDir],
    ["iroh.secret_key_file", config.iroh.secretKeyFile],
    ["grpc.tls.cert_file", config.grpc.tls.certFile],
    ["grpc.tls.key_file", config.grpc.tls.keyFile],
    ["grpc.tls.ca_file", config.grpc.tls.caFile],
  ];
  for (const [path, value] of paths) {
    if (value !== undefined && !value.startsWith("/")) {
      warn(
        "relative_path",
        path,
        `${
          formatValue(value)
        } is relative to the agent's working directory (/ under systemd); write an absolute path`,
      );
    }
  }

  const bind = parseHostPort(config.grpc.bind);
  const { tls } = config.grpc;
  if (mode !== "iroh" && bind !== undefined && !isLoopback(bind)) {
    if (tls.certFile === undefined) {
      warn(
        "insecure",
        "grpc.bind",
        `plaintext gRPC on ${
          formatValue(config.grpc.bind)
        } (grpc.allow_insecure = true): anyone who can reach it can call every service, raft included`,
      );
    } else if (tls.caFile === undefined) {
      warn(
        "insecure",
        "grpc.tls.ca_file",
        `not set, so gRPC clients on ${
          formatValue(config.grpc.bind)
        } are not authenticated; set it for mutual TLS, which peer traffic should use`,
      );
    }
  }

  const raftOverGrpc = raftTransport(config) === "grpc";
  config.cluster.peers.forEach((peer, i) => {
    const at = `cluster.peers[${i}]`;
    if (
      mode !== "grpc" && config.iroh.relay !== "default" && peer.ticket === undefined &&
      peer.addresses.length === 0
    ) {
      warn(
        "unreachable_peer",
        at,
        `peer ${peer.id} has only an endpoint_id and iroh.relay is not "default" (no discovery): it cannot be dialled over Iroh until Raft membership supplies its addresses; add addresses or a ticket`,
      );
    }
    if (raftOverGrpc && peer.grpcAddress === undefined) {
      warn(
        "unreachable_peer",
        at,
        `peer ${peer.id} has no grpc_address, but raft runs over gRPC: it cannot be reached until Raft membership supplies its address; add grpc_address`,
      );
    }
  });
  return warnings;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
