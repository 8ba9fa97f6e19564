/**
 * Reading the runbooks as tests: their fenced blocks with the annotations
 * that say how the test treats them, the metric names a PromQL expression
 * uses, the metric names docs/metrics.md documents, and a cluster whose
 * node 1 the runbook's commands act on while the test keeps the state each
 * block asks for.
 *
 * May import: tests/assert.ts, tests/cluster/helpers.ts, tests/cli/helpers.ts.
 */

import { assert, assertEquals } from "../assert.ts";
import { type RunningNode, startNode } from "../cli/helpers.ts";
import { TestCluster } from "../cluster/helpers.ts";

export const root = new URL("../../", import.meta.url).pathname;

/** A fenced block of a runbook. */
export interface Block {
  /** The info string's first word: `sh`, `toml`, `promql`. */
  readonly lang: string;
  /** The rest of the info string (`fleet`, `stage=canary`). */
  readonly info: string;
  readonly code: string;
  /** The line of its opening fence, from 1. */
  readonly line: number;
  /** `<!-- not run by the test: REASON -->` above it: why it is not run. */
  readonly notRun: string | null;
  /** `<!-- test: the node is stopped -->` above it: the state it needs. */
  readonly needsStopped: boolean;
}

/** Every fenced block of `markdown`, in order, indented ones (in list items) included. */
export function blocksOf(markdown: string): Block[] {
  const lines = markdown.split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```(\S*)\s*(.*)$/.exec(lines[i]!);
    if (!open || open[2] === "") continue;
    const indent = open[1]!;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && lines[j]!.trim() !== "```"; j++) {
      body.push(lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!);
    }
    assert(j < lines.length, `an unclosed fence at line ${i + 1}`);
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === "") k--;
    const above = k >= 0 ? lines[k]!.trim() : "";
    const notRun = /^<!-- not run by the test: (.+) -->$/.exec(above)?.[1] ?? null;
    blocks.push({
      lang: open[2]!,
      info: open[3]!,
      code: body.join("\n") + "\n",
      line: i + 1,
      notRun,
      needsStopped: above === "<!-- test: the node is stopped -->",
    });
    i = j;
  }
  return blocks;
}

/** GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens. */
export function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

const PROMQL_KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "inf",
  "nan",
  "atan2",
]);

/**
 * The metric names a PromQL expression selects: label names, functions,
 * aggregations, keywords, strings, durations and numbers left out.
 */
export function metricNames(expr: string): string[] {
  const text = expr
    .replace(/#.*$/gm, " ")
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\b0x[0-9a-fA-F]+\b/g, " ")
    .replace(/\b\d+(\.\d+)?([eE][+-]?\d+)?(ms|s|m|h|d|w|y)?\b/g, " ");
  const names = new Set<string>();
  for (const m of text.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = text.slice(m.index! + m[0].length);
    if (/^\s*\(/.test(rest)) continue; // a function or an aggregation
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** The PromQL expressions of a `promql` block: separated by blank lines, `#` comments dropped. */
export function expressionsOf(code: string): string[] {
  return code.split(/\n\s*\n/).map((part) =>
    part.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n").trim()
  ).filter((e) => e !== "");
}

/** The families docs/metrics.md documents: name → type (`counter`, `histogram`, …). */
export async function documentedFamilies(): Promise<Map<string, string>> {
  const doc = await Deno.readTextFile(`${root}docs/metrics.md`);
  const families = new Map<string, string>();
  for (const m of doc.matchAll(/^\| `([a-z_:][a-z0-9_:]*)` +\| (\w+) /gm)) {
    families.set(m[1]!, m[2]!);
  }
  // The process metrics are a paragraph: `name`, `name_{a,b}_bytes`, and `_x` companions.
  const process = /### Process\n\n([\s\S]*?)\n\n/.exec(doc)?.[1] ?? "";
  for (const m of process.matchAll(/`((?:process|nodejs)_[a-z_{},]+)(?:\{[a-z]+\})?`/g)) {
    const brace = /^(.*)\{([a-z,]+)\}(.*)$/.exec(m[1]!);
    for (const part of brace ? brace[2]!.split(",") : [""]) {
      families.set(brace ? `${brace[1]}${part}${brace[3]}` : m[1]!, "gauge");
    }
  }
  const lag = /`nodejs_eventloop_lag_seconds` and its\s+(.*?)\s+companions/s.exec(process)?.[1] ??
    "";
  for (const m of lag.matchAll(/`_([a-z0-9]+)`/g)) {
    families.set(`nodejs_eventloop_lag_${m[1]}_seconds`, "gauge");
  }
  assert(families.size > 60, `docs/metrics.md: only ${families.size} families read`);
  return families;
}

/** The family a series name belongs to (`x_bucket` of histogram `x`), if docs/metrics.md has it. */
export function familyOf(name: string, families: ReadonlyMap<string, string>): string | undefined {
  if (families.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  return m && families.get(m[1]!) === "histogram" ? m[1] : undefined;
}

/** Programs a runbook block may leave to the operator, and why the test cannot run them here. */
export const NOT_RUNNABLE: Readonly<Record<string, string>> = {
  systemctl: "systemd is not PID 1 on the machines that test Blixard",
  journalctl: "systemd is not PID 1 on the machines that test Blixard",
};

/**
 * A 3-node cluster on loopback whose node 1 the runbook's commands act on:
 * `CONFIG`, `DATA`, `METRICS`, `ADDR` name it, `blixard` on PATH runs the
 * command line from source. The test starts and stops node 1 as each block
 * needs; a block may start or stop it too (its pid file says which).
 */
export class RunbookCluster implements AsyncDisposable {
  readonly cluster: TestCluster;
  readonly dir: string;
  readonly env: Record<string, string>;
  #node: RunningNode | null = null;

  private constructor(cluster: TestCluster, dir: string, env: Record<string, string>) {
    this.cluster = cluster;
    this.dir = dir;
    this.env = env;
  }

  static async start(): Promise<RunbookCluster> {
    const cluster = await TestCluster.start({ size: 3, mode: "grpc", tickMs: 50 });
    const dir = await Deno.makeTempDir({ prefix: "blixard-runbook-" });
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/blixard`,
      `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${root}src/cli/main.ts" "$@"\n`,
      { mode: 0o755 },
    );
    const fleet = `${dir}/fleet.toml`;
    await Deno.writeTextFile(
      fleet,
      cluster.nodes.map((n) =>
        `[[node]]\nname = "node-${n.id}"\nconfig = "${n.configFile}"\nmetrics = "127.0.0.1:${n.ports.metrics}"\n`
      ).join("\n"),
    );
    const one = cluster.node(1);
    const env = {
      PATH: `${dir}/bin:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      NO_COLOR: "1",
      CONFIG: one.configFile,
      DATA: one.dataDir,
      METRICS: `127.0.0.1:${one.ports.metrics}`,
      ADDR: `127.0.0.1:${one.ports.tcp}`,
      BACKUP: `${dir}/backup`,
      FLEET: fleet,
      WATCH_MS: "1000",
    };
    const c = new RunbookCluster(cluster, dir, env);
    // Node 1 is the runbook's: the cluster object forgets it, and this class stops it at the end.
    c.#node = one.process;
    one.process = null;
    await c.ready();
    return c;
  }

  /** Node 1's pid, when its pid file names a live process. */
  async pid(): Promise<number | null> {
    const text = await Deno.readTextFile(`${this.env.DATA}/blixard.pid`).catch(() => null);
    const pid = Number(text?.trim());
    if (!text || !Number.isInteger(pid)) return null;
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      return /\) Z /.test(stat) ? null : pid;
    } catch {
      return null;
    }
  }

  /** Waits until node 1's `/readyz` answers 200. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const ok = await fetch(`http://${this.env.METRICS}/readyz`)
        .then(async (r) => (await r.body?.cancel(), r.status === 200))
        .catch(() => false);
      if (ok) return;
      assert(Date.now() < until, "node 1 did not get ready");
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Starts node 1 if it is not running, and waits until it is ready. */
  async ensureRunning(): Promise<void> {
    if ((await this.pid()) === null) {
      await this.#node?.stop();
      this.#node = await startNode(this.env.CONFIG!, /serving \(mode \w+\)\n/);
    }
    await this.ready();
  }

  /** Stops node 1 (SIGTERM) if it runs, and waits until it is gone. */
  async ensureStopped(): Promise<void> {
    const pid = await this.pid();
    if (pid !== null) Deno.kill(pid, "SIGTERM");
    const until = Date.now() + 30_000;
    while ((await this.pid()) !== null) {
      assert(Date.now() < until, "node 1 did not stop");
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.#node) {
      await this.#node.stop();
      this.#node = null;
    }
  }

  /** Runs a `sh` block with bash, stopping at its first failing command; returns its output. */
  async run(block: Block, source: string): Promise<string> {
    const out = await new Deno.Command("bash", {
      args: ["-e", "-c", block.code],
      cwd: this.dir,
      env: this.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(
      out.code,
      0,
      `${source}:${block.line}: exit status ${out.code}\n${block.code}\n${text}`,
    );
    return text;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.ensureStopped();
    await this.cluster[Symbol.asyncDispose]();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    // What the restore of operations.md moves aside.
    await Deno.remove(`${this.env.DATA}.replaced`, { recursive: true }).catch(() => {});
  }
}
