/**
 * The agent's Prometheus metrics, on a registry of its own so tests and
 * several agents in one process do not share counters.
 *
 * Owns: {@link AgentMetrics}. Imports `prom-client` only.
 *
 * Only metrics the agent really updates are defined here; monitoring/ may
 * refer to nothing else. The /metrics endpoint arrives with the Monitoring
 * service; until then `text()` gives the exposition.
 *
 * @module
 */

import client from "prom-client";

/** The agent's metrics. */
export class AgentMetrics {
  readonly registry: client.Registry = new client.Registry();

  /** Calls retried over the other transport after a transport failure. */
  readonly rpcFallbacks: client.Counter<"service" | "from" | "to"> = new client.Counter({
    name: "blixard_rpc_fallbacks_total",
    help:
      "Calls retried over the other transport after a transport failure (fallback_to_grpc, or a service that moved to Iroh).",
    labelNames: ["service", "from", "to"],
    registers: [this.registry],
  });

  /** Configuration reloads by result. */
  readonly configReloads: client.Counter<"result"> = new client.Counter({
    name: "blixard_config_reloads_total",
    help:
      "Configuration reloads (SIGHUP), by result: ok, or failed (invalid file or a listener that would not start; the old config kept running).",
    labelNames: ["result"],
    registers: [this.registry],
  });

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
