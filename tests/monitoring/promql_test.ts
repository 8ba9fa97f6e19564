/**
 * The readers the monitoring tests trust: metric names out of PromQL (a
 * misspelled name, a histogram without its suffix, an unknown recording rule
 * or label is caught; functions, keywords, label names, strings and Grafana
 * variables are never taken for names), and the rules file and dashboard
 * readers over the real files.
 *
 * May import: tests/assert.ts, tests/monitoring/.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import {
  ALERT_RUNBOOK_SECTIONS,
  DASHBOARD,
  dashboardQueries,
  readRules,
  RULES_FILE,
  RulesFileError,
  withExpr,
} from "./files.ts";
import { type Catalog, problemsOf, PromqlError, selectorsOf } from "./promql.ts";

const names = (expr: string) => selectorsOf(expr).map((s) => s.name);

const catalog: Catalog = {
  exported: new Map([
    ["blixard_raft_has_leader", new Set<string>()],
    [
      "blixard_rpc_client_duration_seconds_bucket",
      new Set(["service", "method", "transport", "le"]),
    ],
    ["blixard_rpc_client_duration_seconds_count", new Set(["service", "method", "transport"])],
  ]),
  types: new Map([
    ["blixard_raft_has_leader", "gauge"],
    ["blixard_rpc_client_duration_seconds", "histogram"],
  ]),
  recorded: new Set(["cluster:blixard_raft_has_leader:max"]),
  prometheus: new Set(["up"]),
  targetLabels: new Set(["job", "instance", "cluster"]),
};

Deno.test("a misspelled metric name is reported, with the exported name it was meant to be", () => {
  assertEquals(problemsOf("max by (cluster) (blixard_raft_has_leader) == 0", catalog), []);
  assertEquals(problemsOf("max by (cluster) (blixard_raft_has_leadr) == 0", catalog), [
    "blixard_raft_has_leadr: no node exports it (closest: blixard_raft_has_leader)",
  ]);
  assertEquals(problemsOf("blixard_rpc_client_duration_second_count", catalog), [
    "blixard_rpc_client_duration_second_count: no node exports it (closest: blixard_rpc_client_duration_seconds_count)",
  ]);
});

Deno.test("a histogram named without _bucket, _sum or _count is reported", () => {
  assertEquals(problemsOf("rate(blixard_rpc_client_duration_seconds[5m])", catalog), [
    "blixard_rpc_client_duration_seconds: a histogram has no series of that name; use blixard_rpc_client_duration_seconds_bucket, _sum or _count",
  ]);
});

Deno.test("a recording rule nobody records, and a label the metric lacks, are reported", () => {
  assertEquals(problemsOf("cluster:blixard_raft_has_leader:max == 0", catalog), []);
  assertEquals(problemsOf("cluster:blixard_raft_has_leader:min == 0", catalog), [
    "cluster:blixard_raft_has_leader:min: no recording rule records it",
  ]);
  assertEquals(
    problemsOf('blixard_rpc_client_duration_seconds_count{code="OK", cluster="a"}', catalog),
    [
      "blixard_rpc_client_duration_seconds_count{code=…}: blixard_rpc_client_duration_seconds_count has no label code (it has: method, service, transport)",
    ],
  );
  assertEquals(problemsOf('max by (cluster) (up{job="blixard"}) == 0', catalog), []);
});

Deno.test("functions, aggregations, keywords, label lists, strings and numbers are not metric names", () => {
  const expr = `
    histogram_quantile(0.99, sum by (cluster, le) (
      rate(a_bucket{transport="iroh", cluster=~"x|y"}[5m])
    ))
    > on (cluster) group_left (le) 1.1 * count without (instance) (b offset 1h) + 2.5e-3
    and ignoring (transport) (c[10m:1m] > bool 0.1)
    or label_replace(d, "dst", "not_a_metric_total", "src", "(.*)")
    unless absent(e{job="j"}) * inf # a comment naming f_total
    or sum(g) by (job) / max(h @ 1609746000) without (le)
    or {__name__="i", le="+Inf"} or topk(5, j) or vector(1) or time() - 60`;
  assertEquals(names(expr), ["a_bucket", "b", "c", "d", "e", "g", "h", "i", "j"]);
  assertEquals(selectorsOf(expr)[0]!.labels, ["transport", "cluster"]);
  assertEquals(selectorsOf(expr)[7]!.labels, ["le"]);
});

Deno.test("Grafana's variables are read as durations and label values, not names", () => {
  assertEquals(
    selectorsOf(
      'sum by (instance) (rate(x_total{cluster=~"$cluster", instance=~"${instance:regex}"}[$__rate_interval]))',
    ),
    [{ name: "x_total", labels: ["cluster", "instance"] }],
  );
});

Deno.test("an expression that cannot be read fails, naming where, rather than yield fewer names", () => {
  for (const bad of ["sum(rate(x[5m])", 'x{job="a"', "x{job}", 'x{job="a}', "x ~ y"]) {
    const e = thrown(PromqlError, () => selectorsOf(bad));
    assertEquals(e.code, "PROMQL_UNREADABLE");
    assert(e.message.includes(bad), e.message);
  }
});

Deno.test("the rules reader reads plain, quoted and block values, labels and annotations", () => {
  const text = `groups:
  - name: g
    rules:
      - record: a:b:c
        expr: sum by (x) (y)   # a comment
      - expr: |
          max(z)
          / 2
        alert: Z
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "it's \\"z\\""
          description: >-
            one
            two
          runbook: 'runbooks/x.md#z'
      - alert: W
        expr: >
          w
          > 1
`;
  const rules = readRules(text);
  assertEquals(rules.map((r) => [r.kind, r.name, r.group, r.expr]), [
    ["record", "a:b:c", "g", "sum by (x) (y)"],
    ["alert", "Z", "g", "max(z)\n/ 2\n"],
    ["alert", "W", "g", "w > 1\n"],
  ]);
  assertEquals(Object.fromEntries(rules[1]!.annotations), {
    summary: 'it\'s "z"',
    description: "one two",
    runbook: "runbooks/x.md#z",
  });
  assertEquals(rules[1]!.labels.get("severity"), "warning");
  // Replacing an expression keeps every other line, and the "- " of a rule that starts with it.
  const broken = withExpr(text, rules[1]!, "vector(1)");
  assertEquals(
    readRules(broken).map((r) => r.expr),
    ["sum by (x) (y)", "vector(1)", "w > 1\n"],
  );
  assert(broken.includes("      - expr: vector(1)\n        alert: Z"), broken);
  assertEquals(
    thrown(RulesFileError, () => readRules("groups:\n  - name: g\n    rules:\n      - record: x\n"))
      .message,
    "line 4: a rule needs record or alert, and expr",
  );
});

Deno.test("every alert in the rules file has a summary, a description and a runbook section", async () => {
  const rules = readRules(await Deno.readTextFile(RULES_FILE));
  const alerts = rules.filter((r) => r.kind === "alert");
  assert(alerts.length >= 8, `${alerts.length} alerts`);
  const sections = ALERT_RUNBOOK_SECTIONS;
  for (const a of alerts) {
    assert(a.annotations.get("summary"), `${a.name} has no summary`);
    assert(a.annotations.get("description"), `${a.name} has no description`);
    const runbook = a.annotations.get("runbook") ?? "";
    const m = /^runbooks\/operations\.md#([a-z-]+)$/.exec(runbook);
    assert(m && sections.includes(m[1]!), `${a.name}: runbook "${runbook}"`);
    assert(["warning", "critical"].includes(a.labels.get("severity") ?? ""), a.name);
  }
  // Each section is the runbook of some alert.
  assertEquals(
    [...new Set(alerts.map((a) => a.annotations.get("runbook")!.split("#")[1]))].sort(),
    [...sections].sort(),
  );
});

Deno.test("the dashboard asks for its data source on import and reads it in every panel", async () => {
  const dashboard = JSON.parse(await Deno.readTextFile(DASHBOARD));
  assertEquals(
    dashboard.__inputs.map((i: { name: string; type: string; pluginId: string }) => [
      i.name,
      i.type,
      i.pluginId,
    ]),
    [["DS_PROMETHEUS", "datasource", "prometheus"]],
  );
  const queries = dashboardQueries(dashboard);
  assert(queries.length > 40, `${queries.length} queries`);
  const ids = new Set<number>();
  for (const p of dashboard.panels) {
    assert(!ids.has(p.id), `panel id ${p.id} twice`);
    ids.add(p.id);
    if (p.type === "row") continue;
    assertEquals(p.datasource, { type: "prometheus", uid: "${DS_PROMETHEUS}" }, p.title);
    for (const t of p.targets) {
      assertEquals(t.datasource, { type: "prometheus", uid: "${DS_PROMETHEUS}" }, p.title);
    }
  }
  for (const v of dashboard.templating.list) {
    assertEquals(v.datasource, { type: "prometheus", uid: "${DS_PROMETHEUS}" }, v.name);
  }
  // Every query can be read (a name check needs a live cluster: names_test.ts).
  for (const q of queries) assert(selectorsOf(q.expr).length > 0, q.where);
});
