/**
 * What a reload does, decided before anything is touched: a pure function
 * of the running configuration, the parked Iroh endpoint (if any) and the
 * next configuration, to the steps the runner executes.
 *
 * Owns: {@link planReload}, {@link ReloadPlan} and its steps. Imports the
 * config types and `routing.ts`; no I/O.
 *
 * The rules (docs/dual-runner.md, "Reload"):
 * - `node.id`, `node.data_dir` and `iroh.secret_key_file` cannot change in a
 *   running node: the reload is refused.
 * - Listeners the next config needs start before the switch; those it no
 *   longer needs stop after it, their calls in flight finishing.
 * - A gRPC listener whose settings change restarts: on another address the
 *   new one starts first; on the same address the old one stops first (a
 *   short gap, said in the plan).
 * - An Iroh endpoint's own settings (bind, relay, alpn) need a new endpoint;
 *   other changes (limits) apply to the running one. A stopped endpoint is
 *   parked, not closed, because the binding cannot bind its port again in the
 *   same process; a later reload resumes it if its settings still fit, and
 *   a reload that would need a new endpoint on the parked or running port is
 *   refused (restart instead).
 *
 * @module
 */

import type { AgentConfig, RelayConfig } from "../config/mod.ts";
import type { RoutedService, TransportName } from "../names.ts";
import { ROUTED_SERVICES, type ServingPlan, servingPlan, transportsOf } from "./routing.ts";

/** What an Iroh endpoint is created with: changing any of it needs a new endpoint. */
export interface IrohEndpointSettings {
  readonly bind: string;
  readonly relay: RelayConfig;
  readonly alpn: string;
}

/** The endpoint settings of a config. */
export function irohEndpointSettingsOf(config: AgentConfig): IrohEndpointSettings {
  return { bind: config.iroh.bind, relay: config.iroh.relay, alpn: config.iroh.alpn };
}

/** A step before the switch; the runner undoes the steps done so far if a later one fails. */
export type PrepareStep =
  /** The old gRPC listener stops first: the new one needs its address. */
  | { readonly kind: "stop-grpc-for-restart" }
  /** A gRPC listener starts with the next config. */
  | { readonly kind: "start-grpc" }
  /** The parked Iroh endpoint serves again, with the next config's limits. */
  | { readonly kind: "resume-iroh" }
  /** A new Iroh endpoint starts with the next config. */
  | { readonly kind: "start-iroh" }
  /** The running Iroh endpoint takes the next config's limits for new connections. */
  | { readonly kind: "update-iroh-limits" };

/** A step after the switch: what is no longer needed stops, its calls finishing. */
export type CleanupStep =
  /** The old gRPC listener stops (no longer wanted, or replaced on another address). */
  | { readonly kind: "stop-grpc" }
  /** The running Iroh endpoint stops serving and stays bound, refusing, with `reason`. */
  | { readonly kind: "park-iroh"; readonly reason: string }
  /** The old Iroh endpoint closes: a new one replaced it. */
  | { readonly kind: "close-iroh" }
  /** The parked endpoint closes: a new endpoint on another port replaced it. */
  | { readonly kind: "close-parked-iroh" };

/** How one service's serving changes. */
export interface ServiceMove {
  readonly service: RoutedService;
  readonly from: {
    readonly transports: readonly TransportName[];
    readonly preferred: TransportName;
  };
  readonly to: { readonly transports: readonly TransportName[]; readonly preferred: TransportName };
}

/** A reload that can go ahead. */
export interface ReloadPlan {
  readonly prepare: readonly PrepareStep[];
  readonly cleanup: readonly CleanupStep[];
  /** Services whose transports or preferred transport change. */
  readonly moves: readonly ServiceMove[];
  /** Iroh endpoint ids that may connect from now on, and those that no longer may. */
  readonly allowlist: { readonly added: readonly string[]; readonly removed: readonly string[] };
  /** The serving plan after the switch. */
  readonly serving: ServingPlan;
  /**
   * One line for the operator: what moved between transports and which
   * listeners start, stop or park, e.g.
   * `"health, status: iroh → grpc; iroh listener parked"`; `"nothing moved"`.
   */
  readonly summary: string;
}

/** The outcome of planning. */
export type ReloadDecision =
  | { readonly ok: true; readonly plan: ReloadPlan }
  | { readonly ok: false; readonly error: string };

/** Keys a reload may not change: they are the node's identity and storage. */
const FIXED_KEYS: readonly [string, (c: AgentConfig) => unknown][] = [
  ["node.id", (c) => c.node.id],
  ["node.data_dir", (c) => c.node.dataDir],
  ["iroh.secret_key_file", (c) => c.iroh.secretKeyFile],
];

/** Everything a gRPC listener is started with. */
function grpcSettings(c: AgentConfig): string {
  return JSON.stringify([c.grpc.bind, c.grpc.tls, c.grpc.allowInsecure, c.limits]);
}

function sameEndpoint(a: IrohEndpointSettings, b: IrohEndpointSettings): boolean {
  return JSON.stringify([a.bind, a.relay, a.alpn]) === JSON.stringify([b.bind, b.relay, b.alpn]);
}

/**
 * Plans the move from `current` (with the Iroh endpoint `parked`, if one is)
 * to `next`. `allowlist` gives the endpoint ids a config lets connect.
 */
export function planReload(
  current: AgentConfig,
  parked: IrohEndpointSettings | null,
  next: AgentConfig,
  allowlist: (c: AgentConfig) => ReadonlySet<string>,
): ReloadDecision {
  for (const [key, get] of FIXED_KEYS) {
    if (get(current) !== get(next)) {
      return {
        ok: false,
        error: `${key} cannot change while the node runs (${JSON.stringify(get(current))} → ${
          JSON.stringify(get(next))
        }); restart the node to change it`,
      };
    }
  }
  const had = transportsOf(current.transport.mode);
  const want = transportsOf(next.transport.mode);
  const prepare: PrepareStep[] = [];
  const cleanup: CleanupStep[] = [];
  const listeners: string[] = [];

  // gRPC.
  const grpcRuns = had.includes("grpc");
  const grpcChanged = grpcRuns && grpcSettings(current) !== grpcSettings(next);
  if (want.includes("grpc")) {
    if (!grpcRuns) {
      prepare.push({ kind: "start-grpc" });
      listeners.push("grpc listener started");
    } else if (grpcChanged) {
      if (current.grpc.bind === next.grpc.bind) {
        prepare.push({ kind: "stop-grpc-for-restart" }, { kind: "start-grpc" });
        listeners.push("grpc listener restarted in place");
      } else {
        prepare.push({ kind: "start-grpc" });
        cleanup.push({ kind: "stop-grpc" });
        listeners.push(`grpc listener moved to ${next.grpc.bind}`);
      }
    }
  } else if (grpcRuns) {
    cleanup.push({ kind: "stop-grpc" });
    listeners.push("grpc listener stopped");
  }

  // Iroh.
  const irohRuns = had.includes("iroh");
  const nextEndpoint = irohEndpointSettingsOf(next);
  const running = irohRuns ? irohEndpointSettingsOf(current) : null;
  if (want.includes("iroh")) {
    const candidate = running ?? parked;
    if (candidate && sameEndpoint(candidate, nextEndpoint)) {
      if (!running) {
        prepare.push({ kind: "resume-iroh" });
        listeners.push("iroh listener resumed");
      } else if (JSON.stringify(current.limits) !== JSON.stringify(next.limits)) {
        prepare.push({ kind: "update-iroh-limits" });
      }
    } else {
      const busy = [running, parked].find((e) => e !== null && e.bind === nextEndpoint.bind);
      if (busy) {
        const holder = busy === running
          ? "the running Iroh endpoint"
          : "this node's parked Iroh endpoint";
        return {
          ok: false,
          error:
            `iroh.bind ${nextEndpoint.bind} is held by ${holder}, which was made with another iroh.relay or iroh.alpn: an endpoint cannot be re-created on the same port in a running node; restart the node, or change iroh.bind too`,
        };
      }
      prepare.push({ kind: "start-iroh" });
      if (running) cleanup.push({ kind: "close-iroh" });
      if (parked) cleanup.push({ kind: "close-parked-iroh" });
      listeners.push(
        running ? `iroh listener moved to ${nextEndpoint.bind}` : "iroh listener started",
      );
    }
  } else if (irohRuns) {
    cleanup.push({ kind: "park-iroh", reason: parkReason(next) });
    listeners.push("iroh listener parked");
  }

  const before = servingPlan(current);
  const serving = servingPlan(next);
  const moves: ServiceMove[] = [];
  for (const service of ROUTED_SERVICES) {
    const from = before.get(service)!;
    const to = serving.get(service)!;
    if (from.preferred !== to.preferred || from.transports.join() !== to.transports.join()) {
      moves.push({ service, from, to });
    }
  }
  const was = allowlist(current);
  const will = allowlist(next);
  const plan: ReloadPlan = {
    prepare,
    cleanup,
    moves,
    allowlist: {
      added: [...will].filter((id) => !was.has(id)).sort(),
      removed: [...was].filter((id) => !will.has(id)).sort(),
    },
    serving,
    summary: summaryOf(moves, listeners),
  };
  return { ok: true, plan };
}

/**
 * What a parked endpoint tells Iroh callers: that this node no longer
 * serves Iroh, and where it can be reached instead.
 */
export function parkReason(next: AgentConfig): string {
  return `this node no longer serves Iroh; it serves gRPC at ${next.grpc.bind}`;
}

function summaryOf(moves: readonly ServiceMove[], listeners: readonly string[]): string {
  const byMove = new Map<string, RoutedService[]>();
  for (const m of moves) {
    if (m.from.preferred === m.to.preferred) continue;
    const key = `${m.from.preferred} → ${m.to.preferred}`;
    byMove.set(key, [...byMove.get(key) ?? [], m.service]);
  }
  const parts = [...byMove].map(([move, services]) => `${services.join(", ")}: ${move}`);
  parts.push(...listeners);
  return parts.length ? parts.join("; ") : "nothing moved";
}
