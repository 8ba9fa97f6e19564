/**
 * The reload plan, exhaustively and without sockets: every pair of a set of
 * configurations (every mode pair, gRPC and Iroh settings that change or
 * not, allowlists that grow and shrink, keys that may not change), from
 * every parked state, executed on a model of listeners and ports. After each
 * plan the model must hold what the next config asks for, no port may ever
 * be bound twice, and a refused reload must leave everything as it was.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { type AgentConfig, configOrThrow, parseConfig } from "../../src/config/mod.ts";
import {
  type IrohEndpointSettings,
  irohEndpointSettingsOf,
  planReload,
  type ReloadPlan,
} from "../../src/runner/reload_plan.ts";
import { transportsOf } from "../../src/runner/routing.ts";

const KEY1 = "1".repeat(64);
const KEY2 = "2".repeat(64);

interface Variant {
  mode: "grpc" | "iroh" | "dual";
  prefer: string;
  raft: string;
  grpcBind: string;
  deadlineMs: number;
  irohBind: string;
  relay: string;
  keys: string[];
  nodeId?: number;
}

function config(v: Variant): AgentConfig {
  const migration = v.mode === "dual"
    ? `[transport.migration]\nprefer_iroh = ${v.prefer}\nraft_transport = "${v.raft}"\n`
    : "";
  return configOrThrow(parseConfig(`
[node]
id = ${v.nodeId ?? 1}
data_dir = "/var/lib/blixard"
[transport]
mode = "${v.mode}"
${migration}
[grpc]
bind = "${v.grpcBind}"
[iroh]
bind = "${v.irohBind}"
relay = ${v.relay}
[cluster]
operator_keys = ${JSON.stringify(v.keys)}
[limits]
request_deadline_ms = ${v.deadlineMs}
`));
}

const allowlist = (c: AgentConfig) => new Set(c.cluster.operatorKeys);

/** Every combination of what a reload can change. */
function variants(): Variant[] {
  const out: Variant[] = [];
  for (
    const [mode, prefer, raft] of [
      ["grpc", "[]", "grpc"],
      ["iroh", "[]", "grpc"],
      ["dual", '["health", "status"]', "grpc"],
      ["dual", '["all_except_raft"]', "adaptive"],
    ] as const
  ) {
    for (const grpcBind of ["127.0.0.1:7400", "127.0.0.1:7500"]) {
      for (const deadlineMs of [30_000, 10_000]) {
        for (const irohBind of ["127.0.0.1:7401", "127.0.0.1:7501"]) {
          for (const relay of ['"disabled"', '"default"']) {
            for (const keys of [[KEY1], [KEY1, KEY2]]) {
              out.push({ mode, prefer, raft, grpcBind, deadlineMs, irohBind, relay, keys });
            }
          }
        }
      }
    }
  }
  return out;
}

/** The listeners and ports of a running node, as the runner would hold them. */
interface Model {
  config: AgentConfig;
  /** gRPC listeners alive now, oldest first; at rest there is at most one. */
  grpc: { bind: string; settings: string }[];
  /** Iroh endpoints serving now, oldest first; at rest at most one. */
  iroh: IrohEndpointSettings[];
  parked: IrohEndpointSettings | null;
  /** Ports bound now: `tcp:127.0.0.1:7400`, `udp:127.0.0.1:7401`. */
  ports: Set<string>;
}

function started(config: AgentConfig): Model {
  const m: Model = { config, grpc: [], iroh: [], parked: null, ports: new Set() };
  const want = transportsOf(config.transport.mode);
  if (want.includes("grpc")) startGrpc(m, config);
  if (want.includes("iroh")) startIroh(m, config);
  return m;
}

function copy(m: Model): Model {
  return { ...m, grpc: [...m.grpc], iroh: [...m.iroh], ports: new Set(m.ports) };
}

function bind(m: Model, port: string): void {
  if (m.ports.has(port)) throw new Error(`${port}: already bound`);
  m.ports.add(port);
}

function startGrpc(m: Model, c: AgentConfig): void {
  bind(m, `tcp:${c.grpc.bind}`);
  m.grpc.push({ bind: c.grpc.bind, settings: JSON.stringify([c.grpc, c.limits]) });
}

function startIroh(m: Model, c: AgentConfig): void {
  bind(m, `udp:${c.iroh.bind}`);
  m.iroh.push(irohEndpointSettingsOf(c));
}

/** Runs a plan on the model, as the runner's executor does. */
function execute(m: Model, plan: ReloadPlan, next: AgentConfig): void {
  for (const step of plan.prepare) {
    switch (step.kind) {
      case "stop-grpc-for-restart": {
        assertEquals(m.grpc.length, 1, "an in-place restart stops the one listener");
        m.ports.delete(`tcp:${m.grpc.pop()!.bind}`);
        break;
      }
      case "start-grpc":
        startGrpc(m, next);
        break;
      case "resume-iroh":
        assert(m.parked && m.iroh.length === 0, "resume needs a parked endpoint and none serving");
        m.iroh.push(m.parked);
        m.parked = null;
        break;
      case "start-iroh":
        startIroh(m, next);
        break;
      case "update-iroh-limits":
        assertEquals(m.iroh.length, 1, "limits update needs one serving endpoint");
        break;
    }
  }
  for (const step of plan.cleanup) {
    switch (step.kind) {
      case "stop-grpc":
        assert(m.grpc.length >= 1, "stop-grpc needs a listener");
        m.ports.delete(`tcp:${m.grpc.shift()!.bind}`);
        break;
      case "park-iroh":
        assert(m.iroh.length === 1 && !m.parked, "park needs one endpoint and none parked");
        assertMatch(step.reason, /no longer serves Iroh; it serves gRPC at/);
        m.parked = m.iroh.pop()!;
        break;
      case "close-iroh":
        assertEquals(m.iroh.length, 2, "close-iroh closes the old of two endpoints");
        m.ports.delete(`udp:${m.iroh.shift()!.bind}`);
        break;
      case "close-parked-iroh":
        assert(m.parked, "close-parked-iroh needs a parked endpoint");
        m.ports.delete(`udp:${m.parked.bind}`);
        m.parked = null;
        break;
    }
  }
  m.config = next;
}

/** The model holds exactly what `c` asks for, and nothing else is bound. */
function assertServes(m: Model, c: AgentConfig, context: string): void {
  const want = transportsOf(c.transport.mode);
  assertEquals(
    m.grpc.map((g) => g.settings),
    want.includes("grpc") ? [JSON.stringify([c.grpc, c.limits])] : [],
    `${context}: gRPC`,
  );
  assertEquals(
    m.iroh,
    want.includes("iroh") ? [irohEndpointSettingsOf(c)] : [],
    `${context}: Iroh`,
  );
  const expected = new Set([
    ...m.grpc.map((g) => `tcp:${g.bind}`),
    ...m.iroh.map((e) => `udp:${e.bind}`),
    ...(m.parked ? [`udp:${m.parked.bind}`] : []),
  ]);
  assertEquals(m.ports, expected, `${context}: ports`);
}

function label(v: Variant): string {
  return `${v.mode}${
    v.mode === "dual" ? v.prefer : ""
  } grpc=${v.grpcBind}/${v.deadlineMs} iroh=${v.irohBind}/${v.relay} keys=${v.keys.length}`;
}

Deno.test("every reload between 128 configurations, from every parked state, ends serving what the next asks, never binding a port twice", () => {
  const all = variants();
  const configs = all.map(config);
  let planned = 0;
  let refused = 0;
  for (let i = 0; i < all.length; i++) {
    // Each state the runner can be in with config i: as started, and for a
    // grpc config, with an endpoint parked on either Iroh port by an earlier
    // reload from mode iroh.
    const starts: Model[] = [started(configs[i]!)];
    if (all[i]!.mode === "grpc") {
      for (const irohBind of ["127.0.0.1:7401", "127.0.0.1:7501"]) {
        const before = config({ ...all[i]!, mode: "iroh", irohBind });
        const m = started(before);
        const d = planReload(before, null, configs[i]!, allowlist);
        assert(d.ok);
        execute(m, d.plan, configs[i]!);
        assertEquals(m.parked?.bind, irohBind);
        starts.push(m);
      }
    }
    for (const start of starts) {
      for (let k = 0; k < all.length; k++) {
        const m = copy(start);
        const next = configs[k]!;
        const context = `${label(all[i]!)}${
          start.parked ? ` (parked ${start.parked.bind})` : ""
        } → ${label(all[k]!)}`;
        const d = planReload(m.config, m.parked, next, allowlist);
        if (!d.ok) {
          refused++;
          // Only a new endpoint on a port this node still holds needs a restart.
          assertMatch(d.error, /iroh\.bind .* is held by/, context);
          continue;
        }
        planned++;
        execute(m, d.plan, next);
        assertServes(m, next, context);
        // Restarting with the next file would serve the same.
        assertServes(started(next), next, `${context} (restarted)`);
      }
    }
  }
  assert(planned > 10_000, `planned ${planned}`);
  assert(refused > 0, "some reloads need a restart");
});

Deno.test("a reload is refused when it would change the node's identity or storage", () => {
  const base: Variant = {
    mode: "grpc",
    prefer: "[]",
    raft: "grpc",
    grpcBind: "127.0.0.1:7400",
    deadlineMs: 30_000,
    irohBind: "127.0.0.1:7401",
    relay: '"disabled"',
    keys: [KEY1],
  };
  const d = planReload(config(base), null, config({ ...base, nodeId: 2 }), allowlist);
  assert(!d.ok);
  assertMatch(d.error, /node\.id cannot change while the node runs \(1 → 2\); restart/);
});

Deno.test("the summary says which services moved and what happened to the listeners", () => {
  const base: Variant = {
    mode: "dual",
    prefer: '["health", "status"]',
    raft: "grpc",
    grpcBind: "127.0.0.1:7400",
    deadlineMs: 30_000,
    irohBind: "127.0.0.1:7401",
    relay: '"disabled"',
    keys: [KEY1],
  };
  const dual = config(base);
  const grpc = config({ ...base, mode: "grpc" });
  const toGrpc = planReload(dual, null, grpc, allowlist);
  assert(toGrpc.ok);
  assertEquals(toGrpc.plan.summary, "health, status: iroh → grpc; iroh listener parked");
  const m = started(dual);
  execute(m, toGrpc.plan, grpc);
  assertServes(m, grpc, "dual → grpc");
  const back = planReload(grpc, m.parked, dual, allowlist);
  assert(back.ok);
  assertEquals(back.plan.summary, "health, status: grpc → iroh; iroh listener resumed");
  const same = planReload(dual, null, dual, allowlist);
  assert(same.ok);
  assertEquals(same.plan.summary, "nothing moved");
  assertEquals(same.plan.prepare.length + same.plan.cleanup.length, 0);
});

Deno.test("the plan names the endpoint ids that may now connect and those that no longer may", () => {
  const base: Variant = {
    mode: "iroh",
    prefer: "[]",
    raft: "grpc",
    grpcBind: "127.0.0.1:7400",
    deadlineMs: 30_000,
    irohBind: "127.0.0.1:7401",
    relay: '"disabled"',
    keys: [KEY1],
  };
  const d = planReload(config(base), null, config({ ...base, keys: [KEY2] }), allowlist);
  assert(d.ok);
  assertEquals(d.plan.allowlist, { added: [KEY2], removed: [KEY1] });
});
