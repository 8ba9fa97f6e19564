/**
 * docs/metrics.md is a contract that dashboards and alert rules are written
 * from: its tables name exactly the agent's families, with their types and
 * labels.
 */

import { assert, assertEquals } from "../assert.ts";
import { AgentMetrics } from "../../src/metrics/registry.ts";

const DOC = new URL("../../docs/metrics.md", import.meta.url);

Deno.test("docs/metrics.md lists every blixard_ family the agent exports, with its type and labels, and no other", async () => {
  const documented = new Map<string, string>();
  for (const line of (await Deno.readTextFile(DOC)).split("\n")) {
    const m = /^\| `(blixard_\w+)` +\| (\w+) +\| ([^|]+?) +\|/.exec(line);
    if (!m) continue;
    const labels = m[3] === "(none)" ? "" : m[3]!.split(",").map((l) => l.trim()).join(",");
    documented.set(m[1]!, `${m[2]} [${labels}]`);
  }
  const exported = new Map<string, string>();
  const metrics = new AgentMetrics({ processMetrics: false });
  for (const metric of metrics.registry.getMetricsAsArray()) {
    if (!metric.name.startsWith("blixard_")) continue;
    const type = String(metric.type);
    const labels = ((metric as unknown as { labelNames: string[] }).labelNames ?? []).join(",");
    exported.set(metric.name, `${type} [${labels}]`);
  }
  assert(documented.size > 40, `only ${documented.size} families documented`);
  assertEquals(
    [...documented].sort(([a], [b]) => a.localeCompare(b)),
    [...exported].sort(([a], [b]) => a.localeCompare(b)),
  );
});

Deno.test("the process metrics docs/metrics.md names are exported, and those it says are left out are not", async () => {
  const text = await Deno.readTextFile(DOC);
  const section = text.slice(text.indexOf("### Process"), text.indexOf("## Cost"));
  const [kept, left] = section.split("Left out");
  const names = (s: string) =>
    [...s!.matchAll(/`((?:process|nodejs)_[a-z_]+\*?)`/g)].map((m) => m[1]!);
  const exported = new Set(
    new AgentMetrics().registry.getMetricsAsArray().map((m) => m.name),
  );
  assert(names(kept!).length > 10 && names(left!).length === 5, section);
  assertEquals(names(kept!).filter((n) => !exported.has(n)), []);
  assertEquals(
    names(left!).filter((n) => [...exported].some((e) => e.startsWith(n.replace(/\*$/, "")))),
    [],
  );
});
