/**
 * Where a server's time goes under load: a V8 CPU profile of a Deno process
 * taken through its inspector (Chrome DevTools Protocol over a WebSocket on
 * loopback), summarised by the part of the agent each sample was in; and the
 * fsync calls of any process counted with `perf trace`, when perf is there.
 *
 * Owns: {@link InspectorProfiler}, {@link summarizeProfile},
 * {@link traceFsyncs}. Imports nothing of the agent.
 *
 * @module
 */

/** A V8 `.cpuprofile` (Profiler.stop's result). */
export interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string };
    readonly children?: readonly number[];
  }[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  /** µs between a sample and the one before. */
  readonly timeDeltas: readonly number[];
}

/** The inspector's longest answer time. */
const CDP_TIMEOUT_MS = 30_000;
/** V8's sampling interval for the profile, µs. */
const SAMPLING_INTERVAL_US = 250;

/** A CPU profiler attached to a Deno process started with `--inspect=127.0.0.1:PORT`. */
export class InspectorProfiler {
  readonly #ws: WebSocket;
  #nextId = 1;
  readonly #pending = new Map<number, (message: Record<string, unknown>) => void>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(String(event.data)) as Record<string, unknown>;
      const waiter = this.#pending.get(message.id as number);
      if (waiter) {
        this.#pending.delete(message.id as number);
        waiter(message);
      }
    };
  }

  /** Connects to the inspector on `port` and enables the profiler. */
  static async attach(port: number): Promise<InspectorProfiler> {
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
      webSocketDebuggerUrl: string;
    }[];
    const url = targets[0]?.webSocketDebuggerUrl;
    if (!url) throw new Error(`inspector on port ${port}: no target to attach to`);
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`inspector on port ${port}: cannot open ${url}`));
    });
    const profiler = new InspectorProfiler(ws);
    await profiler.#call("Profiler.enable");
    await profiler.#call("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
    return profiler;
  }

  async start(): Promise<void> {
    await this.#call("Profiler.start");
  }

  /** Stops the profiler; resolves with the profile since {@link start}. */
  async stop(): Promise<CpuProfile> {
    const result = await this.#call("Profiler.stop");
    return result.profile as CpuProfile;
  }

  close(): void {
    this.#ws.close();
  }

  async #call(method: string, params: Record<string, unknown> = {}) {
    const id = this.#nextId++;
    const { promise, resolve } = Promise.withResolvers<Record<string, unknown>>();
    this.#pending.set(id, resolve);
    this.#ws.send(JSON.stringify({ id, method, params }));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const message = await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`inspector: no answer to ${method} in ${CDP_TIMEOUT_MS} ms`)),
          CDP_TIMEOUT_MS,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    if (message.error) {
      throw new Error(`inspector: ${method} failed: ${JSON.stringify(message.error)}`);
    }
    return message.result as Record<string, unknown>;
  }
}

/**
 * The parts of a node a sample is attributed to, by the innermost frame of
 * the agent (or of a library it calls) on its stack. Order matters: the first
 * rule a frame matches names its part.
 */
const PARTS: readonly { readonly part: string; readonly url: RegExp }[] = [
  { part: "storage (SQLite, fsync)", url: /\/src\/storage\// },
  {
    part: "encoding (protobuf, Raft codec)",
    url: /\/src\/codec\/|@bufbuild\/protobuf|\/rpc\/gen\//,
  },
  { part: "raft core", url: /\/src\/raft\// },
  { part: "consensus driver", url: /\/src\/consensus\// },
  { part: "state machine", url: /\/src\/state\// },
  { part: "transport: iroh", url: /\/src\/transport\/iroh\/|@number0\/iroh/ },
  { part: "transport: grpc, http2", url: /\/src\/transport\/grpc\/|@grpc\/grpc-js|http2/ },
  { part: "rpc layer", url: /\/src\/rpc\// },
  { part: "services", url: /\/src\/services\// },
  { part: "runner, inbox, outbox", url: /\/src\/runner\/|\/src\/node\// },
];

/** Samples whose innermost frame is one of V8's own. */
const V8_PARTS: Readonly<Record<string, string>> = {
  "(idle)": "idle (waiting for I/O)",
  "(garbage collector)": "garbage collection",
  "(program)": "V8 and native, outside JS",
};

/** What a profile says about where a process's time went. */
export interface ProfileSummary {
  /** The profile's length, ms. */
  readonly durationMs: number;
  /** ms and share of the profile per part, largest first. */
  readonly parts: readonly { readonly part: string; readonly ms: number; readonly share: number }[];
  /** Functions by self time, largest first (the top 15). */
  readonly topSelf: readonly { readonly fn: string; readonly ms: number; readonly share: number }[];
  /**
   * Samples inside a native call made from storage code: SQLite's work and
   * its fsyncs, which block the event loop (node:sqlite is synchronous).
   */
  readonly sqliteNativeMs: number;
}

function shortUrl(url: string): string {
  const src = url.lastIndexOf("/src/");
  if (src >= 0) return url.slice(src + 1);
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  return url;
}

/** Attributes every sample of `profile` to a part of the node (see {@link PARTS}). */
export function summarizeProfile(profile: CpuProfile): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const partOf = new Map<number, string>();
  const classify = (id: number): string => {
    const known = partOf.get(id);
    if (known) return known;
    const leaf = byId.get(id)!;
    let part = V8_PARTS[leaf.callFrame.functionName];
    for (let at: number | undefined = id; part === undefined && at !== undefined;) {
      const url = byId.get(at)!.callFrame.url;
      part = PARTS.find((p) => p.url.test(url))?.part;
      at = parent.get(at);
    }
    part ??= "Deno runtime, timers, other";
    partOf.set(id, part);
    return part;
  };
  const underStorageNative = (id: number): boolean => {
    const leaf = byId.get(id)!;
    if (leaf.callFrame.url !== "") return false;
    const up = parent.get(id);
    return up !== undefined && /\/src\/storage\//.test(byId.get(up)!.callFrame.url);
  };

  const partMs = new Map<string, number>();
  const selfMs = new Map<string, number>();
  let sqliteNativeMs = 0;
  let totalMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // A sample stands for the time until the next one.
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const id = profile.samples[i]!;
    const node = byId.get(id)!;
    totalMs += ms;
    const part = classify(id);
    partMs.set(part, (partMs.get(part) ?? 0) + ms);
    const fn = `${node.callFrame.functionName || "(anonymous)"} ${shortUrl(node.callFrame.url)}`
      .trim();
    selfMs.set(fn, (selfMs.get(fn) ?? 0) + ms);
    if (underStorageNative(id)) sqliteNativeMs += ms;
  }
  const share = (ms: number) => totalMs > 0 ? ms / totalMs : 0;
  return {
    durationMs: (profile.endTime - profile.startTime) / 1000,
    parts: [...partMs].map(([part, ms]) => ({ part, ms, share: share(ms) }))
      .sort((a, b) => b.ms - a.ms),
    topSelf: [...selfMs].map(([fn, ms]) => ({ fn, ms, share: share(ms) }))
      .sort((a, b) => b.ms - a.ms).slice(0, 15),
    sqliteNativeMs,
  };
}

/** fsync and fdatasync calls of one process over a window, from `perf trace`. */
export interface FsyncTrace {
  readonly calls: number;
  readonly totalMs: number;
  readonly meanMs: number;
  readonly maxMs: number;
}

/** `perf` on PATH, or null. */
export async function findPerf(): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if ((await Deno.stat(`${dir}/perf`)).isFile) return `${dir}/perf`;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * Starts `perf trace -s` on `pid` for fsync and fdatasync (kernel
 * tracepoints: the process is not stopped per call); `stop()` ends it and
 * resolves with the counts, or null if perf could not trace.
 */
export function traceFsyncs(perf: string, pid: number): { stop(): Promise<FsyncTrace | null> } {
  const child = new Deno.Command(perf, {
    args: ["trace", "-s", "-e", "fsync,fdatasync", "-p", String(pid)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    async stop() {
      try {
        child.kill("SIGINT");
      } catch {
        // already exited
      }
      const out = await child.output();
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      let calls = 0;
      let totalMs = 0;
      let maxMs = 0;
      // "   fdatasync   1234   0   567.890   0.1   0.4   12.3   1.2%" per thread.
      for (
        const m of text.matchAll(
          /^\s*f(?:data)?sync\s+(\d+)\s+\d+\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)/gm,
        )
      ) {
        calls += Number(m[1]);
        totalMs += Number(m[2]);
        maxMs = Math.max(maxMs, Number(m[3]));
      }
      if (calls === 0 && !/Summary of events/.test(text)) return null;
      return { calls, totalMs, meanMs: calls ? totalMs / calls : NaN, maxMs };
    },
  };
}
