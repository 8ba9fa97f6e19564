/**
 * The agent's configuration: one TOML file becomes one typed, frozen
 * {@link AgentConfig}, or a list of every problem, each naming the key, the
 * bad value and what is allowed. docs/configuration.md lists every key.
 *
 * Owns: the public face of src/config/. src/config/ imports nothing else of
 * the project but the leaves `src/names.ts` and `src/util/address.ts` (and
 * zod, smol-toml, node:path and Deno's file API), so any part of the agent
 * may import it.
 *
 * @example Check a file as `blixard config check` does
 * ```ts
 * import { formatEffectiveConfig, parseConfig } from "./mod.ts";
 *
 * const result = parseConfig('[node]\nid = 1\n[transport]\nmode = "dual"\n', "agent.toml");
 * if (!result.ok) {
 *   for (const e of result.errors) console.error(e.message);
 * } else {
 *   for (const w of result.warnings) console.error(`warning: ${w.message}`);
 *   console.log(formatEffectiveConfig(result.config).includes('mode = "dual"')); // true
 * }
 * ```
 *
 * Files are read with {@link loadConfigFile}, which puts the path in every
 * message; {@link checkConfigFiles} checks the files a config names (TLS,
 * the secret key, the data directory) on disk.
 *
 * @module
 */

export {
  configOrThrow,
  type ConfigResult,
  loadConfigFile,
  type LoadOptions,
  parseConfig,
} from "./parse.ts";
export { checkConfigFiles } from "./files.ts";
export { ConfigError, type ConfigIssue, type ConfigIssueCode } from "./issues.ts";
export { formatEffectiveConfig } from "./format.ts";
export { raftTransport, servicesOverIroh } from "./effective.ts";
export {
  ALL_EXCEPT_RAFT,
  DEFAULTS,
  RAFT_TRANSPORTS,
  SERVICE_ALIASES,
  SERVICE_NAMES,
  TRANSPORT_MODES,
  VM_BACKENDS,
} from "./schema.ts";
export type {
  AgentConfig,
  ClusterConfig,
  GrpcConfig,
  GrpcTlsConfig,
  IrohConfig,
  LimitsConfig,
  MetricsConfig,
  MigrationConfig,
  NodeConfig,
  PeerConfig,
  PreferIroh,
  RaftConfig,
  RaftTransport,
  RelayConfig,
  ServiceName,
  TransportConfig,
  TransportMode,
  VmBackend,
  VmConfig,
} from "./types.ts";
