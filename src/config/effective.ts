/**
 * What a configuration means for routing: which services go over Iroh and how
 * Raft travels, per transport mode. The dual runner asks these functions
 * rather than reading `[transport.migration]` itself, so the rules of the
 * modes live in one place.
 *
 * Owns: the mode semantics. Pure. May import: ./schema.ts, ./types.ts.
 *
 * @module
 */

import { ALL_EXCEPT_RAFT, type RaftTransport, SERVICE_NAMES, type ServiceName } from "./schema.ts";
import type { AgentConfig } from "./types.ts";

/**
 * The client services this node serves and calls over Iroh; the others use
 * gRPC. `grpc` mode: none. `iroh` mode: all. `dual` mode: `prefer_iroh`
 * (`["all_except_raft"]` being all of them).
 *
 * @example
 * ```ts
 * import { parseConfig, servicesOverIroh } from "./mod.ts";
 * const result = parseConfig(`
 * [node]
 * id = 1
 * [transport]
 * mode = "dual"
 * [transport.migration]
 * prefer_iroh = ["health", "vm_ops"]
 * `);
 * if (result.ok) servicesOverIroh(result.config); // Set { "health", "vm" }
 * ```
 */
export function servicesOverIroh(config: AgentConfig): Set<ServiceName> {
  const { mode, migration } = config.transport;
  switch (mode) {
    case "grpc":
      return new Set();
    case "iroh":
      return new Set(SERVICE_NAMES);
    case "dual": {
      const prefer: readonly string[] = migration.preferIroh;
      if (prefer.includes(ALL_EXCEPT_RAFT)) return new Set(SERVICE_NAMES);
      return new Set(SERVICE_NAMES.filter((s) => prefer.includes(s)));
    }
  }
}

/**
 * How Raft messages travel: `"grpc"` in `grpc` mode, `"iroh"` in `iroh` mode,
 * `raft_transport` in `dual` mode.
 */
export function raftTransport(config: AgentConfig): RaftTransport {
  const { mode, migration } = config.transport;
  switch (mode) {
    case "grpc":
      return "grpc";
    case "iroh":
      return "iroh";
    case "dual":
      return migration.raftTransport;
  }
}
