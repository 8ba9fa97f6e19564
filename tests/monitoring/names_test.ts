/**
 * Every series the rules and the dashboard read is one a running cluster
 * exports: a 3-node loopback cluster of real agents in mode dual (Raft
 * routed adaptively, so both transports carry it), called over gRPC and over
 * Iroh, writing through the leader, and then one node killed so the series
 * that only failures create (fallbacks, connect failures, dropped messages)
 * exist too. Its /metrics are scraped as Prometheus would; each name must be
 * a sample some node exports (a histogram's _bucket, _sum or _count), a name
 * a recording rule records, or Prometheus's own `up`; and each label a
 * selector tests must be one the series has, or a target label.
 *
 * May import: tests/assert.ts, tests/cluster/helpers.ts,
 * tests/metrics/helpers.ts, tests/monitoring/.
 */

import { assert, assertEquals } from "../assert.ts";
import { Metadata, Monitoring } from "../../src/rpc/services.ts";
import { TestCluster } from "../cluster/helpers.ts";
import { type Exposition, scrape } from "../metrics/helpers.ts";
import {
  catalogOf,
  DASHBOARD,
  dashboardQueries,
  readRules,
  type Rule,
  RULES_FILE,
  SCRAPE_CONFIG,
} from "./files.ts";
import { type Catalog, problemsOf, selectorsOf } from "./promql.ts";

// The cluster's processes and the test's Iroh client keep timers and native
// handles across the test; the cluster's disposal ends them.
const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

const rules = readRules(await Deno.readTextFile(RULES_FILE));
const dashboard = JSON.parse(await Deno.readTextFile(DASHBOARD));
const queries = [
  ...rules.map((r) => ({ where: `iroh_rules.yml: ${r.kind} ${r.name}`, expr: r.expr })),
  ...dashboardQueries(dashboard).map((q) => ({
    where: `grafana-iroh-dashboard.json: ${q.where}`,
    expr: q.expr,
  })),
];

/** What each query reads that no node exports, one line per problem. */
function problems(catalog: Catalog): string[] {
  return queries.flatMap((q) => problemsOf(q.expr, catalog).map((p) => `${q.where}: ${p}`));
}

/** The metric names `expr` reads, through the recording rules it reads. */
function namesRead(expr: string, seen = new Set<string>()): Set<string> {
  for (const { name } of selectorsOf(expr)) {
    if (seen.has(name)) continue;
    seen.add(name);
    const rule = rules.find((r: Rule) => r.kind === "record" && r.name === name);
    if (rule) namesRead(rule.expr, seen);
  }
  return seen;
}

Deno.test({
  name:
    "every metric the rules and the dashboard read is exported by a live 3-node cluster, with the labels they test",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "dual", raftTransport: "adaptive" });
    const leader = await c.waitForVmCapacity();
    const [follower, victim] = c.nodes.map((n) => n.id).filter((id) => id !== leader) as [
      number,
      number,
    ];

    // Calls over gRPC (the nodes' clients) and over Iroh (as the operator), writes through
    // the leader from every node (followers forward them: client calls between nodes), and a
    // call that fails.
    for (const n of c.nodes) {
      await n.clients.status.getRaftStatus({});
      await n.clients.metadata.put({ key: `grpc-${n.id}`, value: "v" });
      await c.operatorClient(Metadata, n.id).put({ key: `iroh-${n.id}`, value: "v" });
      await c.operatorClient(Monitoring, n.id).getResourceSummary({});
    }
    await c.node(follower).clients.vm.get({ name: "no-such-vm" }).catch(() => {});
    const before = await scrape(c.node(victim).ports.metrics);

    // A node dies: the others' calls to it fail over Iroh and fall back to gRPC, connecting
    // to it fails, and Raft messages to it are dropped.
    await c.signal(victim, "SIGKILL");
    const live = [leader, follower].map((id) => c.node(id).ports.metrics);
    let last: string[] = [];
    const until = Date.now() + 60_000;
    for (;;) {
      await c.node(leader).clients.monitoring.getResourceSummary({}, { deadlineMs: 2_000 })
        .catch(() => {});
      const expositions: Exposition[] = [before, ...(await Promise.all(live.map(scrape)))];
      const catalog = catalogOf(expositions, rules);
      last = problems(catalog);
      if (last.length === 0) {
        assertCoverage(catalog);
        break;
      }
      if (Date.now() > until) break;
    }
    assertEquals(last, [], `names the cluster does not export:\n${last.join("\n")}`);
  },
});

/** Every family the agent exports with the blixard_ prefix is shown on the dashboard. */
function assertCoverage(catalog: Catalog): void {
  const shown = new Set<string>();
  for (const q of dashboardQueries(dashboard)) {
    for (const name of namesRead(q.expr)) shown.add(name);
  }
  const family = (name: string) =>
    catalog.types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
  const shownFamilies = new Set([...shown].map(family));
  const missing = [...catalog.types.keys()].filter((f) =>
    f.startsWith("blixard_") && !shownFamilies.has(f)
  );
  assertEquals(missing, [], `families no dashboard panel shows: ${missing.join(", ")}`);
}

Deno.test("the rules' up{job=…} names the job prometheus-iroh.yml scrapes the agents in", async () => {
  const config = await Deno.readTextFile(SCRAPE_CONFIG);
  const jobs = [...config.matchAll(/^\s*- job_name:\s*(\S+)\s*$/gm)].map((m) => m[1]);
  assertEquals(jobs, ["blixard"]);
  const ups = queries.filter((q) => selectorsOf(q.expr).some((s) => s.name === "up"));
  assert(ups.length > 0);
  for (const q of ups) {
    for (const m of q.expr.matchAll(/\bup\{([^}]*)\}/g)) {
      assert(/\bjob="blixard"/.test(m[1]!), `${q.where}: up without job="blixard"`);
    }
    assert(!/\bup\b(?!\{)/.test(q.expr.replace(/"[^"]*"/g, "")), `${q.where}: a bare up`);
  }
});
