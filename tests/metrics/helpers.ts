/**
 * Reading a node's metrics the way Prometheus does: an HTTP GET of
 * `/metrics`, and the text exposition parsed into series and values.
 *
 * May import: tests/assert.ts, tests/wait.ts.
 */

import { assert } from "../assert.ts";

/** One parsed exposition: every sample by series, and every family's type and help. */
export interface Exposition {
  /** `name{k="v",...}` (labels sorted) → value. */
  readonly samples: Map<string, number>;
  readonly types: Map<string, string>;
  readonly help: Map<string, string>;
}

/** The series key of `name` with `labels`, labels sorted. */
export function series(name: string, labels: Record<string, string> = {}): string {
  const inner = Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`).join(",");
  return `${name}{${inner}}`;
}

/** Parses the Prometheus text format (what prom-client writes: no timestamps, no escapes we use). */
export function parseExposition(text: string): Exposition {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === "TYPE" ? types : help).set(meta[2]!, meta[3]!);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.set(series(m[1]!, labels), Number(m[3]));
  }
  return { samples, types, help };
}

/** GETs `path` of the metrics server at `port`; the body as text. */
export async function get(
  port: number,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string; contentType: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return {
    status: res.status,
    body: await res.text(),
    contentType: res.headers.get("content-type") ?? "",
  };
}

/** Scrapes `/metrics` at `port`. */
export async function scrape(port: number): Promise<Exposition> {
  const res = await get(port, "/metrics");
  assert(res.status === 200, `/metrics answered ${res.status}: ${res.body}`);
  return parseExposition(res.body);
}

/** A sample's value; 0 when the series is absent (Prometheus counters start at 0). */
export function valueOf(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  return e.samples.get(series(name, labels)) ?? 0;
}

/** The series of family `name` (samples whose name is exactly `name`). */
export function seriesOf(e: Exposition, name: string): string[] {
  return [...e.samples.keys()].filter((k) => k.startsWith(`${name}{`));
}

/** Scrapes until `ok` holds of the exposition, for up to `ms`; returns the last one. */
export async function scrapeUntil(
  port: number,
  ok: (e: Exposition) => boolean,
  what: string,
  ms = 15_000,
): Promise<Exposition> {
  const until = Date.now() + ms;
  for (;;) {
    let e: Exposition | null = null;
    try {
      e = await scrape(port);
      if (ok(e)) return e;
    } catch (error) {
      if (Date.now() > until) throw error;
    }
    if (Date.now() > until) {
      throw new Error(`not within ${ms} ms: ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
