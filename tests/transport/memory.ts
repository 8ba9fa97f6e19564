/**
 * Measuring what a node in a child process holds while a peer misbehaves:
 * its resident memory from /proc, and a flood that writes until the node
 * stops taking bytes.
 */

/** The resident memory of process `pid`, bytes (`VmRSS` of `/proc/<pid>/status`). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kib) throw new Error(`/proc/${pid}/status has no VmRSS line`);
  return Number(kib[1]) * 1024;
}

/** Samples the RSS of `pid` every `everyMs` until `stop()`, which resolves with the peak. */
export function sampleRss(pid: number, everyMs = 100): { stop(): Promise<number> } {
  let peak = 0;
  let sampling = Promise.resolve();
  const timer = setInterval(() => {
    sampling = sampling.then(async () => {
      peak = Math.max(peak, await rssBytes(pid));
    });
  }, everyMs);
  return {
    async stop() {
      clearInterval(timer);
      await sampling;
      return Math.max(peak, await rssBytes(pid));
    },
  };
}

/** How a {@link flood} ended. */
export interface FloodResult {
  /** Bytes the writes completed. */
  readonly bytes: number;
  /**
   * `"sent"`: all of `maxBytes` went out; `"stalled"`: a write waited
   * `stallMs` (the node stopped reading); `"closed"`: a write failed (the
   * node closed the connection); `"time"`: `maxMs` passed.
   */
  readonly outcome: "sent" | "stalled" | "closed" | "time";
}

/**
 * Calls `write(i)` for i = 0, 1, ... (each resolves with the bytes it wrote)
 * until one of the ends of {@link FloodResult} comes. A stalled write is left
 * pending; closing its connection settles it.
 */
export async function flood(
  write: (i: number) => Promise<number>,
  limits: { maxBytes: number; stallMs: number; maxMs: number },
): Promise<FloodResult> {
  const until = Date.now() + limits.maxMs;
  let bytes = 0;
  for (let i = 0; bytes < limits.maxBytes; i++) {
    if (Date.now() > until) return { bytes, outcome: "time" };
    const pending = write(i);
    pending.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((resolve) => {
      timer = setTimeout(() => resolve("stalled"), limits.stallMs);
    });
    try {
      const outcome = await Promise.race([pending, stalled]);
      if (outcome === "stalled") return { bytes, outcome };
      bytes += outcome;
    } catch {
      return { bytes, outcome: "closed" };
    } finally {
      clearTimeout(timer);
    }
  }
  return { bytes, outcome: "sent" };
}

/** `n` bytes in MiB, for messages. */
export function mib(n: number): string {
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** What a node went through during a flood. */
export interface FloodMeasure {
  readonly result: FloodResult;
  /** Its peak RSS during the flood (and a second after), less its RSS before. */
  readonly grownBytes: number;
  /** Calls of another client answered meanwhile. */
  readonly served: number;
}

/**
 * Runs `flooding` against the node in process `pid` while another client
 * calls `call` every 100 ms (a failed call fails the measure), and measures
 * how much the node grew.
 */
export async function measureFlood(
  pid: number,
  call: () => Promise<unknown>,
  flooding: () => Promise<FloodResult>,
): Promise<FloodMeasure> {
  const baseline = await rssBytes(pid);
  const peak = sampleRss(pid);
  let served = 0;
  let serving = true;
  const others = (async () => {
    while (serving) {
      await call();
      served++;
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    const result = await flooding();
    // The node answers what it read before it stopped: give it a moment to hold all it will.
    await new Promise((r) => setTimeout(r, 1_000));
    return { result, grownBytes: await peak.stop() - baseline, served };
  } finally {
    serving = false;
    await others;
  }
}

/**
 * Says what a flood did, then asserts the node held it back: it grew by
 * less than `boundBytes` plus `overheadBytes`, did not take all the flood,
 * and served the other client all along.
 */
export function assertHeldBack(
  what: string,
  m: FloodMeasure,
  boundBytes: number,
  overheadBytes: number,
): void {
  console.log(
    `${what}: ${mib(m.result.bytes)} written, ${m.result.outcome}; node grew by ${
      mib(m.grownBytes)
    } (bound ${mib(boundBytes)}); ${m.served} calls of another client served meanwhile`,
  );
  if (m.grownBytes >= boundBytes + overheadBytes) {
    throw new Error(
      `${what}: the node grew by ${mib(m.grownBytes)}, over the bound ${mib(boundBytes)} + ${
        mib(overheadBytes)
      } overhead`,
    );
  }
  if (m.result.outcome === "sent") {
    throw new Error(`${what}: the node took all ${mib(m.result.bytes)} of the flood`);
  }
  if (m.served < 5) {
    throw new Error(`${what}: only ${m.served} calls of another client were served`);
  }
}
