/**
 * A real Prometheus server (Debian's prometheus package) scraping a 3-node
 * loopback cluster of real agents, with the real monitoring/iroh_rules.yml:
 * quiet while the cluster has a leader, and BlixardNoLeader firing, as
 * Prometheus's own /api/v1/alerts reports it, after two of the three nodes
 * are killed with SIGKILL.
 *
 * How long it takes, and why: the test's prometheus.yml scrapes and
 * evaluates every second, but the alert keeps the `for:` an operator wants
 * (1 minute in iroh_rules.yml: elections take well under a second, so a
 * minute without a leader is an outage, not an election). So the test takes
 * that minute plus the cluster's start and a few scrapes: about 75 s. It reads
 * `for:` from the rules file, so a longer one makes the test longer, not
 * wrong.
 *
 * Skipped, saying so in its name, only when `prometheus` is not on PATH.
 *
 * May import: tests/assert.ts, tests/cluster/helpers.ts, tests/cli/helpers.ts,
 * tests/monitoring/files.ts, and scripts/setup.ts's PATH check.
 */

import { assert, assertEquals } from "../assert.ts";
import { freeTcpPort } from "../cli/helpers.ts";
import { TestCluster } from "../cluster/helpers.ts";
import { readRules, RULES_FILE } from "./files.ts";
import { onPath } from "../../scripts/setup.ts";

/** An alert as /api/v1/alerts lists it. */
interface ApiAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: "pending" | "firing";
  activeAt: string;
}

/** A Prometheus server on a free loopback port, with its own data directory. */
class Prometheus implements AsyncDisposable {
  readonly url: string;
  readonly #dir: string;
  readonly #child: Deno.ChildProcess;
  #log = "";
  readonly #logRead: Promise<void>;

  private constructor(dir: string, port: number, child: Deno.ChildProcess) {
    this.#dir = dir;
    this.url = `http://127.0.0.1:${port}`;
    this.#child = child;
    // Prometheus logs to stderr; kept for failure messages, and drained so it never blocks.
    this.#logRead = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#log = (this.#log + chunk).slice(-20_000);
      }
    })();
  }

  /** Starts `prometheus` with `config` (YAML) and waits until it is ready. */
  static async start(config: string): Promise<Prometheus> {
    const dir = await Deno.makeTempDir({ prefix: "blixard-prometheus-" });
    await Deno.writeTextFile(`${dir}/prometheus.yml`, config);
    const port = freeTcpPort();
    const child = new Deno.Command("prometheus", {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const p = new Prometheus(dir, port, child);
    await p.until("Prometheus is ready", async () => {
      const res = await fetch(`${p.url}/-/ready`);
      await res.body?.cancel();
      return res.ok;
    }, 30_000);
    return p;
  }

  /** GETs an API path; its `data`. */
  async api<T>(path: string): Promise<T> {
    const res = await fetch(`${this.url}${path}`);
    const body = await res.json();
    assertEquals(body.status, "success", `${path}: ${JSON.stringify(body)}`);
    return body.data as T;
  }

  /** The values of an instant query, by the labels of each series. */
  async query(expr: string): Promise<number[]> {
    const data = await this.api<{ result: { value: [number, string] }[] }>(
      `/api/v1/query?query=${encodeURIComponent(expr)}`,
    );
    return data.result.map((r) => Number(r.value[1]));
  }

  async alerts(): Promise<ApiAlert[]> {
    return (await this.api<{ alerts: ApiAlert[] }>("/api/v1/alerts")).alerts;
  }

  /** Polls `check` every 250 ms until it holds; fails naming `what`, with Prometheus's log. */
  async until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    let error: unknown = null;
    for (;;) {
      try {
        if (await check()) return;
        error = null;
      } catch (e) {
        error = e;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `not within ${ms} ms: ${what}${error ? ` (last error: ${error})` : ""}\n` +
            `prometheus log:\n${this.#log}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    await this.#logRead;
    await Deno.remove(this.#dir, { recursive: true });
  }
}

/** `1m`, `90s`, `1h30m` in ms. */
function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  let total = 0;
  for (const m of text.matchAll(/(\d+)(ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]!]!;
  assert(total > 0 || text === "0s", `not a duration: "${text}"`);
  return total;
}

const noLeader = readRules(await Deno.readTextFile(RULES_FILE))
  .find((r) => r.kind === "alert" && r.name === "BlixardNoLeader");
const installed = await onPath("prometheus").test();
const name =
  "a real Prometheus with the project's rules fires BlixardNoLeader when two of three nodes are killed";

Deno.test({
  name: installed
    ? name
    : `${name} (SKIPPED: \`prometheus\` is not on PATH; Debian's prometheus package has it, ` +
      "npx deno task setup installs it)",
  ignore: !installed,
  // The cluster's processes keep timers and native handles across the test; its disposal ends them.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert(noLeader, `${RULES_FILE} has no alert BlixardNoLeader`);
    const forMs = durationMs(noLeader.for || "0s");

    await using c = await TestCluster.start({ size: 3, mode: "dual" });
    const leader = await c.waitForLeader();
    const targets = c.nodes.map((n) => `"127.0.0.1:${n.ports.metrics}"`).join(", ");
    // Intervals of a second, so the test waits for the alert's `for:`, not for Prometheus.
    await using prometheus = await Prometheus.start(`
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - ${JSON.stringify(RULES_FILE)}
scrape_configs:
  - job_name: blixard
    static_configs:
      - targets: [${targets}]
        labels:
          cluster: e2e
`);

    // Healthy: all three scraped, the rules see a leader, and the alert is not even pending.
    await prometheus.until(
      "three targets up and the cluster's leader recorded",
      async () =>
        (await prometheus.query('sum(up{job="blixard"})'))[0] === 3 &&
        (await prometheus.query('cluster:blixard_raft_has_leader:max{cluster="e2e"}'))[0] === 1,
      30_000,
    );
    const isNoLeader = (a: ApiAlert) => a.labels.alertname === "BlixardNoLeader";
    assertEquals((await prometheus.alerts()).filter(isNoLeader), []);

    // Two nodes die, the leader among them; the third is left without a quorum.
    const survivor = c.nodes.find((n) => n.id !== leader)!.id;
    for (const n of c.nodes) if (n.id !== survivor) await c.signal(n.id, "SIGKILL");
    const killedAt = Date.now();

    let pendingAfterMs = -1;
    let firing: ApiAlert | undefined;
    await prometheus.until(
      `BlixardNoLeader firing (for: ${noLeader.for})`,
      async () => {
        const alert = (await prometheus.alerts()).find(isNoLeader);
        if (alert && pendingAfterMs < 0) pendingAfterMs = Date.now() - killedAt;
        if (alert?.state === "firing") firing = alert;
        return firing !== undefined;
      },
      forMs + 45_000,
    );
    const firedAfterMs = Date.now() - killedAt;
    assertEquals(firing!.labels, {
      alertname: "BlixardNoLeader",
      cluster: "e2e",
      severity: "critical",
    });
    assertEquals(firing!.annotations.runbook, "runbooks/operations.md#no-leader");
    assertEquals(firing!.annotations.summary, "Blixard cluster e2e has no Raft leader");
    // It fired because of the rule's `for:`, not before: pending first, for that long.
    assert(pendingAfterMs >= 0 && pendingAfterMs < firedAfterMs, `${pendingAfterMs}`);
    assert(firedAfterMs >= forMs, `fired ${firedAfterMs} ms after the kill; for: ${forMs} ms`);
    // The survivor is what Prometheus still scrapes, and it knows no leader.
    assertEquals(await prometheus.query('sum(up{job="blixard"})'), [1]);
    assertEquals(await prometheus.query('max(blixard_raft_has_leader{cluster="e2e"})'), [0]);
  },
});
