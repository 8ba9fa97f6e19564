/**
 * `promtool` (Debian's prometheus package) accepts the scrape config and the
 * rules, and the rules' unit tests pass; and those unit tests have teeth: with
 * every alert broken to never fire, each alert's "fires" group fails, and with
 * every alert broken to always fire, each alert's "stays quiet" group fails.
 * And every query of the dashboard is PromQL promtool accepts.
 *
 * May import: tests/assert.ts, tests/monitoring/.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  DASHBOARD,
  dashboardQueries,
  readRules,
  RULES_FILE,
  RULES_TEST_FILE,
  SCRAPE_CONFIG,
  withExpr,
} from "./files.ts";
import { withoutGrafanaVariables } from "./promql.ts";

const dec = new TextDecoder();

/** Runs promtool; its exit code and everything it printed. */
async function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("promtool", { args, stdin: "null", env: { NO_COLOR: "1" } })
      .output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        "promtool is not on PATH: it comes with Debian's prometheus package (npx deno task setup installs it)",
      );
    }
    throw e;
  }
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

const rulesText = await Deno.readTextFile(RULES_FILE);
const rules = readRules(rulesText);
const alerts = rules.filter((r) => r.kind === "alert");

Deno.test("promtool check config accepts prometheus-iroh.yml and the rules file it loads", async () => {
  const { code, output } = await promtool("check", "config", SCRAPE_CONFIG);
  assertEquals(code, 0, output);
  assert(output.includes("SUCCESS: 1 rule files found"), output);
  assert(output.includes("is valid prometheus config file syntax"), output);
  // The rules reader the other tests use sees every rule promtool sees.
  assert(output.includes(`SUCCESS: ${rules.length} rules found`), `${rules.length}: ${output}`);
});

Deno.test("promtool check rules accepts iroh_rules.yml", async () => {
  const { code, output } = await promtool("check", "rules", RULES_FILE);
  assertEquals(code, 0, output);
  assert(output.includes(`SUCCESS: ${rules.length} rules found`), output);
});

Deno.test("promtool test rules passes every unit test of iroh_rules_test.yml", async () => {
  const { code, output } = await promtool("test", "rules", RULES_TEST_FILE);
  assertEquals(code, 0, output);
  assert(/^\s*SUCCESS\s*$/m.test(output), output);
});

Deno.test("every query of the dashboard is PromQL that promtool accepts", async () => {
  const queries = dashboardQueries(JSON.parse(await Deno.readTextFile(DASHBOARD)));
  // promtool checks expressions in rule files: one recording rule per query (JSON is YAML).
  const file = await Deno.makeTempFile({ prefix: "blixard-dashboard-", suffix: ".yml" });
  try {
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        groups: [{
          name: "dashboard",
          rules: queries.map((q, i) => ({
            record: `dashboard:query:${i}`,
            expr: withoutGrafanaVariables(q.expr),
          })),
        }],
      }),
    );
    const { code, output } = await promtool("check", "rules", file);
    const named = output.replace(
      /dashboard:query:(\d+)/g,
      (all, i) => `${all} (${queries[Number(i)]!.where})`,
    );
    assertEquals(code, 0, named);
    assert(output.includes(`SUCCESS: ${queries.length} rules found`), named);
  } finally {
    await Deno.remove(file);
  }
});

/** The test groups of iroh_rules_test.yml, by name. */
const groups = [...(await Deno.readTextFile(RULES_TEST_FILE)).matchAll(/^ {2}- name: (.+)$/gm)]
  .map((m) => m[1]!);

/** The names of the groups that fail when every alert's expression is `expr`. */
async function failingGroupsWith(expr: string): Promise<Set<string>> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-rules-" });
  try {
    let text = rulesText;
    // From the last alert up, so the line numbers of the ones before stay right.
    for (const a of [...alerts].reverse()) text = withExpr(text, a, expr);
    await Deno.writeTextFile(`${dir}/iroh_rules.yml`, text);
    await Deno.copyFile(RULES_TEST_FILE, `${dir}/iroh_rules_test.yml`);
    const { code, output } = await promtool("test", "rules", `${dir}/iroh_rules_test.yml`);
    assertEquals(code, 1, `promtool should fail with alerts that are "${expr}":\n${output}`);
    return new Set([...output.matchAll(/^\s*name: (.+),$/gm)].map((m) => m[1]!));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("each alert has a unit test that fails if the alert never fires", async () => {
  const failing = await failingGroupsWith("vector(1) < 0");
  for (const a of alerts) {
    const fires = groups.filter((g) => g.startsWith(`${a.name} fires `));
    assert(fires.length > 0, `no group "${a.name} fires …" in ${RULES_TEST_FILE}`);
    for (const g of fires) assert(failing.has(g), `"${g}" passes with ${a.name} never firing`);
  }
});

Deno.test("each alert has a unit test that fails if the alert fires on good series", async () => {
  const failing = await failingGroupsWith("vector(1)");
  for (const a of alerts) {
    const quiet = groups.filter((g) => g.startsWith(`${a.name} stays quiet `));
    assert(quiet.length > 0, `no group "${a.name} stays quiet …" in ${RULES_TEST_FILE}`);
    for (const g of quiet) assert(failing.has(g), `"${g}" passes with ${a.name} always firing`);
  }
  // Every group is about one alert of the file.
  for (const g of groups) {
    assert(alerts.some((a) => g.startsWith(`${a.name} `)), `group "${g}" names no alert`);
  }
});
