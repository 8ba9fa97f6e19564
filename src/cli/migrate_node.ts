/**
 * One node through one rollout stage: rewrite its config file's transport
 * tables, validate the result as `config check` does, write it atomically,
 * reload the node as `blixard reload` does, wait for `/readyz`, watch the
 * stage's health criteria on the node's own `/metrics`, and when anything
 * fails put the previous file back byte for byte, reload and wait again.
 *
 * Owns: {@link migrateNode}, {@link NodeOutcome}, the atomic file write.
 * Imports the config module, the reload planner (to say what would move),
 * and the reload of ./node.ts.
 *
 * @module
 */

import { isDeepStrictEqual } from "node:util";
import { basename, dirname, join } from "node:path";
import {
  type AgentConfig,
  checkConfigFiles,
  type ConfigResult,
  parseConfig,
} from "../config/mod.ts";
import { planReload } from "../runner/reload_plan.ts";
import { parseHostPort } from "../util/address.ts";
import {
  type ExpositionError,
  judge,
  parseExposition,
  type Reading,
  readingOf,
} from "./migrate_health.ts";
import { rewriteToStage, type Stage, type StageLimits, stageOfConfig } from "./migrate_stages.ts";
import { runningPid, signalAndWait } from "./node.ts";
import { TomlEditError } from "./toml_edit.ts";
import { unifiedDiff } from "./unified_diff.ts";

/** How long, how often, and how patiently a node is watched. */
export interface MigrateSettings {
  readonly dryRun: boolean;
  /** How long the stage's criteria must hold after the node is ready. */
  readonly watchMs: number;
  /** Between two readings of `/readyz` and `/metrics`. */
  readonly intervalMs: number;
  /** How long the node may take to answer `/readyz` 200 after a reload. */
  readonly readyTimeoutMs: number;
  /** How long the node may take to report a reload (`blixard reload --timeout`). */
  readonly reloadTimeoutMs: number;
  /** The stage's limits with the operator's overrides. */
  readonly limits: (stage: Stage) => StageLimits;
}

/** What the watch saw: `blixard migrate --json`'s `watch`. */
export interface WatchOutput {
  readonly windowMs: number;
  /** How long it watched; less than the window when a criterion failed. */
  readonly elapsedMs: number;
  readonly samples: number;
  readonly rpcCalls: number;
  readonly rpcErrors: number;
  readonly fallbacks: number;
  readonly leaderChanges: number;
  readonly limits: StageLimits;
}

/** One node's migration, as `blixard migrate --json` prints it (docs/cli.md). */
export interface NodeOutcome {
  ok: boolean;
  stage: string;
  config: string;
  /** The address of `/metrics` and `/readyz`; null when not known. */
  metrics: string | null;
  dryRun: boolean;
  /** The stage the file was at before; null for a mix of its own. */
  from: string | null;
  /** Whether the stage changes the file. */
  changed: boolean;
  diff: string;
  /** What the reload would move, planned from the two files. */
  planned: string | null;
  pid: number | null;
  /** The node's own line of what moved; null when it was not reloaded. */
  summary: string | null;
  changes: string[];
  warnings: string[];
  /** From the reload report to `/readyz` 200. */
  readyMs: number | null;
  watch: WatchOutput | null;
  /** What failed; null when nothing did. */
  failure: string | null;
  /** The previous file is back, reloaded, and the node is ready on it. */
  rolledBack: boolean;
  /** Why the rollback did not complete; null when it did or was not needed. */
  rollbackFailure: string | null;
}

/** An outcome before anything was done: not ok, nothing changed, no failure yet. */
export function blankOutcome(
  stage: string,
  config: string,
  dryRun: boolean,
  metrics: string | null,
): NodeOutcome {
  return {
    ok: false,
    stage,
    config,
    metrics,
    dryRun,
    from: null,
    changed: false,
    diff: "",
    planned: null,
    pid: null,
    summary: null,
    changes: [],
    warnings: [],
    readyMs: null,
    watch: null,
    failure: null,
    rolledBack: false,
    rollbackFailure: null,
  };
}

/** A step that failed: its message says what and why. */
class StepFailed extends Error {
  override readonly name = "StepFailed";
}

/** A node: its config file (on this host) and where its metrics are read. */
export interface NodeTarget {
  readonly config: string;
  /** `host:port` of `[metrics] bind` as reachable from here; default: from the file. */
  readonly metrics?: string;
}

type Progress = (line: string) => void;

/** The file's config, validated exactly as `blixard config check` does. */
async function validate(text: string, source: string): Promise<ConfigResult> {
  const result = parseConfig(text, source);
  if (!result.ok) return result;
  const errors = await checkConfigFiles(result.config, source);
  return errors.length === 0 ? result : { ok: false, errors };
}

/** Where to read a node's metrics: the given address, else its `[metrics] bind`. */
function metricsAddress(config: AgentConfig, given: string | undefined): string {
  if (given !== undefined) {
    if (!parseHostPort(given)) {
      throw new StepFailed(`metrics address "${given}": expected host:port`);
    }
    return given;
  }
  const { enabled, bind } = config.metrics;
  if (!enabled) {
    throw new StepFailed(
      "metrics.enabled = false: migrate reads the node's health from /readyz and /metrics; enable them, or give the address with --metrics",
    );
  }
  const hp = parseHostPort(bind)!;
  if (hp.port === 0) {
    throw new StepFailed(
      `metrics.bind = "${bind}": port 0 is chosen by the system at start; give the address the node logged with --metrics`,
    );
  }
  // A wildcard bind answers on loopback too.
  if (hp.host === "0.0.0.0") return `127.0.0.1:${hp.port}`;
  if (hp.host === "::") return `[::1]:${hp.port}`;
  return bind;
}

/** `GET /readyz`: whether it answered 200, and its body (or why it could not be read). */
async function readiness(address: string): Promise<{ ok: boolean; body: string }> {
  try {
    const r = await fetch(`http://${address}/readyz`, { signal: AbortSignal.timeout(5_000) });
    return { ok: r.status === 200, body: (await r.text()).trim() };
  } catch (e) {
    return { ok: false, body: `cannot reach http://${address}/readyz: ${(e as Error).message}` };
  }
}

/** `GET /metrics`, read. */
async function scrape(address: string): Promise<Reading> {
  let text: string;
  try {
    const r = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5_000) });
    text = await r.text();
    if (r.status !== 200) throw new Error(`status ${r.status}`);
  } catch (e) {
    throw new StepFailed(`cannot read http://${address}/metrics: ${(e as Error).message}`);
  }
  try {
    return readingOf(parseExposition(text));
  } catch (e) {
    throw new StepFailed(`http://${address}/metrics: ${(e as ExpositionError).message}`);
  }
}

/** Resolves after `ms`, or rejects at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new StepFailed(String(signal.reason)));
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new StepFailed(String(signal.reason)));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Polls `/readyz` until 200; returns how long it took. */
async function waitReady(
  address: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<number> {
  const started = Date.now();
  for (;;) {
    const r = await readiness(address);
    if (r.ok) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      throw new StepFailed(`not ready within ${timeoutMs} ms: ${oneLine(r.body)}`);
    }
    await sleep(200, signal);
  }
}

function oneLine(body: string): string {
  const failed = body.split("\n").filter((l) => l.startsWith("[-]")).map((l) => l.slice(3));
  return failed.length > 0 ? failed.join("; ") : body.replace(/\n/g, "; ");
}

/**
 * Writes `data` to `path` (a real path, not a symlink) through a temporary
 * file in the same directory, renamed into place, with the old file's mode
 * and owner: a reader (the node on SIGHUP) sees the old file or the new one,
 * never half of one. With `expect`, refuses when the file no longer holds
 * those bytes (someone else wrote it meanwhile).
 */
async function writeAtomically(
  path: string,
  data: Uint8Array,
  expect?: Uint8Array,
): Promise<void> {
  const info = await Deno.stat(path);
  const tmp = join(
    dirname(path),
    `.${basename(path)}.migrate-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`,
  );
  const mode = (info.mode ?? 0o600) & 0o7777;
  try {
    await Deno.writeFile(tmp, data, { createNew: true, mode });
    // The umask may have cleared bits of `mode` at creation.
    await Deno.chmod(tmp, mode);
    const mine = await Deno.stat(tmp);
    if (
      info.uid !== null && info.gid !== null && (mine.uid !== info.uid || mine.gid !== info.gid)
    ) {
      await Deno.chown(tmp, info.uid, info.gid);
    }
    const file = await Deno.open(tmp, { read: true, write: true });
    try {
      await file.sync();
    } finally {
      file.close();
    }
    if (expect && !isDeepStrictEqual(await Deno.readFile(path), expect)) {
      throw new StepFailed(`${path} changed while migrate ran; nothing was written`);
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof StepFailed) throw e;
    throw new StepFailed(`cannot write ${path}: ${(e as Error).message}`);
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * Moves the node whose config file is `target.config` to `stage`, and
 * resolves with what happened; never throws. With `settings.dryRun` it
 * reads and validates only. `signal` aborting (the operator's Ctrl-C)
 * fails the stage, which is then rolled back.
 */
export async function migrateNode(
  target: NodeTarget,
  stage: Stage,
  settings: MigrateSettings,
  progress: Progress,
  signal: AbortSignal,
): Promise<NodeOutcome> {
  const file = target.config;
  const out = blankOutcome(stage.name, file, settings.dryRun, target.metrics ?? null);
  let restore: { path: string; bytes: Uint8Array } | null = null;
  let metrics = "";
  try {
    let path: string;
    let before: Uint8Array;
    try {
      // Written beside the file a symlink points to, so the link stays a link.
      path = await Deno.realPath(file);
      before = await Deno.readFile(path);
    } catch (e) {
      throw new StepFailed(`cannot read ${file}: ${(e as Error).message}`);
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(before);
    } catch {
      throw new StepFailed(`${file} is not UTF-8 text`);
    }
    const current = await validate(text, file);
    if (!current.ok) {
      throw new StepFailed(
        `${file} is not valid as it is (fix it first; nothing was changed):\n  ${
          current.errors.map((e) => e.message).join("\n  ")
        }`,
      );
    }
    out.from = stageOfConfig(current.config)?.name ?? null;
    let nextText: string;
    try {
      nextText = rewriteToStage(text, stage);
    } catch (e) {
      if (!(e instanceof TomlEditError)) throw e;
      throw new StepFailed(`${file}: ${e.message}; nothing was changed`);
    }
    out.changed = nextText !== text;
    out.diff = unifiedDiff(text, nextText, file, `${file} (stage ${stage.name})`);
    const next = await validate(nextText, file);
    if (!next.ok) {
      throw new StepFailed(
        `${file} at stage ${stage.name} would not be valid; nothing was changed:\n  ${
          next.errors.map((e) => e.message).join("\n  ")
        }`,
      );
    }
    out.warnings = next.warnings.map((w) => w.message);
    const { transport: _a, ...restBefore } = current.config;
    const { transport: _b, ...restAfter } = next.config;
    if (!isDeepStrictEqual(restBefore, restAfter)) {
      throw new StepFailed(
        `${file}: rewriting [transport] changed another part of the configuration (a bug; please report it); nothing was changed`,
      );
    }
    const plan = planReload(current.config, null, next.config, () => new Set());
    out.planned = plan.ok ? plan.plan.summary : plan.error;
    metrics = metricsAddress(next.config, target.metrics);
    out.metrics = metrics;
    if (settings.dryRun) {
      out.ok = true;
      return out;
    }
    if (!out.changed) {
      progress(`${file} is already at stage ${stage.name}; nothing written, nothing reloaded`);
      out.ok = true;
      return out;
    }

    // Before touching anything: not interrupted, a node runs with this file, and it is ready.
    if (signal.aborted) throw new StepFailed(`${signal.reason}; nothing was changed`);
    try {
      out.pid = await runningPid(current.config.node.dataDir);
    } catch (e) {
      throw new StepFailed(`${(e as Error).message}; nothing was changed`);
    }
    const pre = await readiness(metrics);
    if (!pre.ok) {
      throw new StepFailed(
        `the node is not ready before the change (${oneLine(pre.body)}); nothing was changed`,
      );
    }

    await writeAtomically(path, new TextEncoder().encode(nextText), before);
    restore = { path, bytes: before };
    progress(
      `wrote ${file} (stage ${stage.name}, was ${
        out.from ?? "a mix of its own"
      }); reloading pid ${out.pid}`,
    );
    const report = await reload(file, settings.reloadTimeoutMs);
    out.summary = report.summary;
    out.changes = [...report.changes];
    out.warnings = [...report.warnings];
    if (!report.ok) {
      throw new StepFailed(`the node refused the new file: ${report.errors.join("; ")}`);
    }
    progress(`node reloaded: ${report.summary}; waiting for /readyz on ${metrics}`);
    out.readyMs = await waitReady(metrics, settings.readyTimeoutMs, signal);
    await watch(stage, settings, metrics, out, progress, signal);
    out.ok = true;
  } catch (e) {
    if (!(e instanceof StepFailed)) throw e;
    out.failure = e.message;
    if (restore) await rollBack(restore, file, metrics, settings, out, progress);
  }
  return out;
}

async function reload(file: string, timeoutMs: number) {
  try {
    return await signalAndWait(file, timeoutMs);
  } catch (e) {
    throw new StepFailed(`reload: ${(e as Error).message}`);
  }
}

/** The watch window: every interval, `/readyz` and `/metrics` against the stage's criteria. */
async function watch(
  stage: Stage,
  settings: MigrateSettings,
  metrics: string,
  out: NodeOutcome,
  progress: Progress,
  signal: AbortSignal,
): Promise<void> {
  const limits = settings.limits(stage);
  const baseline = await scrape(metrics);
  const started = Date.now();
  const record = (
    totals: { rpcCalls: number; rpcErrors: number; fallbacks: number; leaderChanges: number },
    samples: number,
  ) => {
    out.watch = {
      windowMs: settings.watchMs,
      elapsedMs: Date.now() - started,
      samples,
      ...totals,
      limits,
    };
  };
  record({ rpcCalls: 0, rpcErrors: 0, fallbacks: 0, leaderChanges: 0 }, 0);
  progress(
    `ready after ${seconds(out.readyMs!)}; watching stage ${stage.name} for ${
      seconds(settings.watchMs)
    } (limits: RPC errors ${limits.rpcErrors}, fallbacks ${limits.fallbacks}, leader changes ${limits.leaderChanges})`,
  );
  let samples = 0;
  let previous: Reading | null = null;
  let lastProgress = started;
  for (;;) {
    const left = settings.watchMs - (Date.now() - started);
    if (left <= 0) break;
    await sleep(Math.min(settings.intervalMs, left), signal);
    const [ready, now] = await Promise.all([readiness(metrics), scrape(metrics)]);
    const verdict = judge(stage, limits, baseline, now, ready, previous);
    previous = now;
    record(verdict.totals, ++samples);
    if (!verdict.ok) {
      throw new StepFailed(
        `stage ${stage.name} failed its health check ${
          seconds(Date.now() - started)
        } into the watch: ${verdict.reason}`,
      );
    }
    if (Date.now() - lastProgress >= 5_000) {
      lastProgress = Date.now();
      const t = verdict.totals;
      progress(
        `${seconds(Date.now() - started)} of ${
          seconds(settings.watchMs)
        }: ready, leader known, ${t.rpcErrors} RPC errors in ${t.rpcCalls} calls, ${t.fallbacks} fallbacks, ${t.leaderChanges} leader changes`,
      );
    }
  }
}

/** Puts the previous file back, reloads, and waits for readiness; records how far it got. */
async function rollBack(
  restore: { path: string; bytes: Uint8Array },
  file: string,
  metrics: string,
  settings: MigrateSettings,
  out: NodeOutcome,
  progress: Progress,
): Promise<void> {
  progress(`${out.failure}`);
  progress(`rolling back: restoring ${file} as it was`);
  // The rollback runs to its end: a second Ctrl-C is the only way out of it.
  const never = new AbortController().signal;
  try {
    await writeAtomically(restore.path, restore.bytes);
    const report = await reload(file, settings.reloadTimeoutMs);
    if (!report.ok) {
      throw new StepFailed(`the node refused the restored file: ${report.errors.join("; ")}`);
    }
    progress(`node reloaded the restored file: ${report.summary}; waiting for /readyz`);
    await waitReady(metrics, settings.readyTimeoutMs, never);
    out.rolledBack = true;
    progress(`rolled back: ${file} is as it was, reloaded, and the node is ready`);
  } catch (e) {
    if (!(e instanceof StepFailed)) throw e;
    out.rollbackFailure = e.message;
    progress(`ROLLBACK INCOMPLETE: ${e.message}`);
  }
}
