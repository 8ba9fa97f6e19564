/**
 * deploy/examples/: the predecessor's four rollout stages and the rollback,
 * each a complete file that parses cleanly and does what its comment says.
 *
 * Each example states its behaviour in comment lines this test reads, so a
 * comment that lies fails here:
 *
 * - `# routes: <part>; <part>; ...` where a part is `<services> over grpc|iroh`
 *   (every routed service, raft included, named exactly once across the
 *   parts), `raft adaptive`, `fallback to grpc` or `no fallback`, and
 *   `listening on grpc`, `on iroh` or `on grpc and iroh`. Required.
 * - `# leftover [transport.migration] keys: ignored with a warning`: the file
 *   with any stage's migration section added still parses, routes the same,
 *   and warns about each added key.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  type AgentConfig,
  type ConfigIssue,
  loadConfigFile,
  parseConfig,
  raftTransport,
  servicesOverIroh,
} from "../../src/config/mod.ts";
import { ROUTED_SERVICES } from "../../src/names.ts";
import { transportsOf } from "../../src/runner/routing.ts";

const DIR = new URL("../../deploy/examples/", import.meta.url).pathname;
const NAMES = [
  "stage1-canary.toml",
  "stage2-expanded.toml",
  "stage3-majority.toml",
  "stage4-iroh.toml",
  "rollback.toml",
];
const LEFTOVER_CLAIM = "# leftover [transport.migration] keys: ignored with a warning";

async function load(name: string): Promise<{ text: string; config: AgentConfig }> {
  const result = await loadConfigFile(`${DIR}${name}`);
  if (!result.ok) throw new Error(result.errors.map((e) => e.message).join("\n"));
  assertEquals(result.warnings.map((w) => w.message), [], `${name} draws warnings`);
  return { text: await Deno.readTextFile(`${DIR}${name}`), config: result.config };
}

/** What a config does, in the terms of a `# routes:` line. */
interface Routes {
  /** Per routed service: "grpc", "iroh" or (raft only) "adaptive". */
  readonly services: Record<string, string>;
  readonly fallbackToGrpc: boolean;
  readonly listeners: readonly string[];
}

function routesOf(config: AgentConfig): Routes {
  const overIroh = servicesOverIroh(config);
  const services: Record<string, string> = {};
  for (const s of ROUTED_SERVICES) {
    services[s] = s === "raft" ? raftTransport(config) : overIroh.has(s as never) ? "iroh" : "grpc";
  }
  return {
    services,
    fallbackToGrpc: config.transport.mode === "dual" && config.transport.migration.fallbackToGrpc,
    listeners: transportsOf(config.transport.mode),
  };
}

/** The `# routes:` line of an example, read as {@link Routes}; throws on anything else. */
function claimedRoutes(name: string, text: string): Routes {
  const lines = text.split("\n").filter((l) => l.startsWith("# routes: "));
  assertEquals(lines.length, 1, `${name}: expected one "# routes:" line`);
  const services: Record<string, string> = {};
  let fallbackToGrpc: boolean | undefined;
  let listeners: string[] | undefined;
  for (const part of lines[0]!.slice("# routes: ".length).split(";").map((p) => p.trim())) {
    const over = /^(.+) over (grpc|iroh)$/.exec(part);
    const claim = (s: string) => {
      assert(ROUTED_SERVICES.includes(s as never), `${name}: unknown service "${s}" in "${part}"`);
      assert(!(s in services), `${name}: service "${s}" named twice`);
      return s;
    };
    if (over) { for (const s of over[1]!.split(",")) services[claim(s.trim())] = over[2]!; }
    else if (part === "raft adaptive") services[claim("raft")] = "adaptive";
    else if (part === "fallback to grpc" || part === "no fallback") {
      fallbackToGrpc = part === "fallback to grpc";
    } else if (part.startsWith("listening on ")) {
      listeners = part.slice("listening on ".length).split(" and ");
    } else throw new Error(`${name}: cannot read "${part}" of its routes line`);
  }
  assertEquals(Object.keys(services).sort(), [...ROUTED_SERVICES].sort(), `${name}: services`);
  assert(fallbackToGrpc !== undefined, `${name}: the routes line says nothing of fallback`);
  assert(listeners !== undefined, `${name}: the routes line names no listeners`);
  return { services, fallbackToGrpc, listeners };
}

for (const name of NAMES) {
  Deno.test(`${name} routes as its comment says`, async () => {
    const { text, config } = await load(name);
    assertEquals(routesOf(config), claimedRoutes(name, text));
  });
}

Deno.test("an example whose routes comment lies fails the check", async () => {
  const { text } = await load("stage2-expanded.toml");
  const lying = text.replace('mode = "dual"', 'mode = "grpc"');
  const result = parseConfig(lying);
  assert(result.ok);
  assert(
    JSON.stringify(routesOf(result.config)) !==
      JSON.stringify(claimedRoutes("stage2-expanded.toml", lying)),
  );
});

/** The `[transport.migration]` section of each stage example, as written there. */
async function migrationSections(): Promise<string[]> {
  const sections: string[] = [];
  for (const name of NAMES) {
    const text = await Deno.readTextFile(`${DIR}${name}`);
    const section = /^\[transport\.migration\]\n(?:[^[\n].*\n)*/m.exec(text);
    if (section) sections.push(section[0]);
  }
  return sections;
}

Deno.test("an example that says leftover migration keys are ignored with a warning is right", async () => {
  const sections = await migrationSections();
  assertEquals(sections.length, 3);
  const claiming = [];
  for (const name of NAMES) {
    const { text, config } = await load(name);
    if (!text.split("\n").includes(LEFTOVER_CLAIM)) continue;
    claiming.push(name);
    for (const section of sections) {
      const result = parseConfig(`${text}\n${section}`);
      assert(result.ok, result.ok ? "" : result.errors.map((e) => e.message).join("\n"));
      assertEquals(routesOf(result.config), routesOf(config), `${name} + ${section}`);
      const keys = [...section.matchAll(/^(\w+) = /gm)].map((m) => m[1]);
      assertEquals(
        result.warnings.map((w: ConfigIssue) => [w.code, w.path]),
        keys.map((k) => ["ignored_key", `transport.migration.${k}`]),
      );
    }
  }
  assertEquals(claiming, ["stage4-iroh.toml", "rollback.toml"]);
});

Deno.test("the stages differ only in [transport]", async () => {
  const configs = await Promise.all(NAMES.map(load));
  const rest = configs.map(({ config: { transport: _, ...rest } }) => rest);
  for (const r of rest.slice(1)) assertEquals(r, rest[0]);
});
