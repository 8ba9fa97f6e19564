/**
 * The Raft benchmark's results: every run of every case, their summary
 * (the median over rounds), and the printed report: the comparison table
 * with etcd, the CPU each process spent, the goals, and where the profiled
 * leaders' time went.
 *
 * Owns: {@link CaseRun}, {@link CaseSummary}, {@link ProfileResult},
 * {@link Report}, {@link summarize}, {@link printReport}. Imports this
 * folder's types only.
 *
 * @module
 */

import type { LoadResult } from "./load.ts";
import type { Machine } from "./machine.ts";
import type { FsyncTrace, ProfileSummary } from "./profile.ts";

/** CPU used over a window, as a share of one core (1 = one core busy all along). */
export interface CpuShare {
  readonly process: number;
  /** The main thread: a Deno process's event loop; the Go runtime's first thread in etcd. */
  readonly mainThread: number;
}

/** CPU over a window: per member (by id) and the benchmark's own process. */
export interface CpuWindow {
  readonly members: Readonly<Record<number, CpuShare>>;
  readonly bench: CpuShare;
}

/** One load of one case on one system. */
export interface CaseRun {
  readonly system: string;
  readonly via: "leader" | "follower";
  readonly clients: number;
  readonly round: number;
  /** The member written to. */
  readonly member: number;
  readonly leaderBefore: { readonly id: number; readonly term: number };
  readonly leaderAfter: { readonly id: number; readonly term: number };
  readonly load: LoadResult;
  /** The system's own count of committed writes (commit index, revision) moved by this much. */
  readonly committedDelta: number;
  readonly cpu: CpuWindow;
}

/** A case on one system over every round: medians, and what went wrong in any. */
export interface CaseSummary {
  readonly system: string;
  readonly via: "leader" | "follower";
  readonly clients: number;
  readonly rounds: number;
  readonly putsPerS: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  /** Rounds in which the leader or its term changed. */
  readonly leaderChanges: number;
  /** Rounds whose commit count moved less than the writes answered (must be 0). */
  readonly commitCheckFailures: number;
  /** The leader, then the followers (the one written to first). */
  readonly cpu: { readonly leader: CpuShare; readonly followers: CpuShare[]; bench: CpuShare };
  /**
   * CPU ms per answered write: the three members together, above what they
   * use idle (heartbeats, timers; see {@link Report.idle}), and the
   * benchmark's client.
   */
  readonly cpuMsPerPut: { readonly members: number; readonly bench: number };
  readonly errorSamples: readonly string[];
}

/** The leader under load again, with its fsyncs traced and (Blixard) its CPU profile. */
export interface ProfileResult {
  readonly system: string;
  readonly leader: number;
  readonly load: LoadResult;
  readonly cpu: CpuWindow;
  /** The leader's fsyncs over the window, or null without perf. */
  readonly fsyncs: FsyncTrace | null;
  readonly profile: ProfileSummary | null;
  /** Where the raw `.cpuprofile` was written. */
  readonly profileFile: string | null;
}

/** Everything one run measured (`--json` writes it). */
export interface Report {
  readonly startedAt: string;
  readonly machine: Machine;
  readonly versions: { readonly deno: string; readonly v8: string; readonly etcd: string };
  readonly timing: {
    readonly warmupMs: number;
    readonly measureMs: number;
    readonly rounds: number;
  };
  readonly valueBytes: number;
  readonly keysPerClient: number;
  readonly etcdQuotaBytes: number;
  /** Each cluster's CPU with no load, by system, measured before the cases. */
  readonly idle: Record<string, CpuWindow>;
  readonly runs: CaseRun[];
  readonly summaries: CaseSummary[];
  readonly profiles: ProfileResult[];
}

function median(values: readonly number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function medianShare(shares: readonly (CpuShare | undefined)[]): CpuShare {
  return {
    process: median(shares.map((s) => s?.process ?? NaN)),
    mainThread: median(shares.map((s) => s?.mainThread ?? NaN)),
  };
}

/** The leader's share and the followers' (the one written to first) of one run. */
function byRole(run: CaseRun): { leader: CpuShare | undefined; followers: CpuShare[] } {
  const leader = run.leaderBefore.id;
  const followers = Object.keys(run.cpu.members).map(Number).filter((id) => id !== leader)
    .sort((a, b) => (a === run.member ? -1 : b === run.member ? 1 : a - b));
  return {
    leader: run.cpu.members[leader],
    followers: followers.map((id) => run.cpu.members[id]!),
  };
}

/** The members' CPU summed, in cores. */
function membersCores(w: CpuWindow | undefined): number {
  return w ? Object.values(w.members).reduce((sum, c) => sum + c.process, 0) : 0;
}

/**
 * One summary per system and case, in the order the runs first appear;
 * `idle` (by system) is subtracted from the members' CPU per write.
 */
export function summarize(
  runs: readonly CaseRun[],
  idle: Readonly<Record<string, CpuWindow>>,
): CaseSummary[] {
  const groups = new Map<string, CaseRun[]>();
  for (const r of runs) {
    const key = `${r.system}|${r.via}|${r.clients}`;
    groups.set(key, [...groups.get(key) ?? [], r]);
  }
  return [...groups.values()].map((g) => {
    const first = g[0]!;
    const roles = g.map(byRole);
    const idleCores = membersCores(idle[first.system]);
    const memberCpuMsPerPut = g.map((r) =>
      ((membersCores(r.cpu) - idleCores) * 1000) / r.load.putsPerS
    );
    return {
      system: first.system,
      via: first.via,
      clients: first.clients,
      rounds: g.length,
      putsPerS: median(g.map((r) => r.load.putsPerS)),
      p50Ms: median(g.map((r) => r.load.p50Ms)),
      p99Ms: median(g.map((r) => r.load.p99Ms)),
      errors: g.reduce((s, r) => s + r.load.errors, 0),
      leaderChanges: g.filter((r) =>
        r.leaderAfter.id !== r.leaderBefore.id || r.leaderAfter.term !== r.leaderBefore.term
      ).length,
      commitCheckFailures: g.filter((r) =>
        r.committedDelta < r.load.answered
      ).length,
      cpu: {
        leader: medianShare(roles.map((r) => r.leader)),
        followers: [0, 1].map((i) => medianShare(roles.map((r) => r.followers[i]))),
        bench: medianShare(g.map((r) => r.cpu.bench)),
      },
      cpuMsPerPut: {
        members: median(memberCpuMsPerPut),
        bench: median(g.map((r) => (r.cpu.bench.process * 1000) / r.load.putsPerS)),
      },
      errorSamples: g.flatMap((r) => r.load.errorSamples).slice(0, 3),
    };
  });
}

// ---------------------------------------------------------------------------
// Printing

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join("  ")
      .trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** An integer with thousands separators. */
export const f0 = (n: number): string =>
  Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-";
/** Three significant figures or so. */
export const f1 = (n: number): string =>
  Number.isFinite(n) ? n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2) : "-";
const ratio = (a: number, b: number) => Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : "-";
const pct = (n: number) => Number.isFinite(n) ? `${Math.round(n * 100)}%` : "-";

/** `leader, 256 clients`. */
export function caseLabel(r: { via: string; clients: number }): string {
  return `${r.via}, ${r.clients} client${r.clients === 1 ? "" : "s"}`;
}

function etcdOf(all: readonly CaseSummary[], s: CaseSummary): CaseSummary | undefined {
  return all.find((e) => e.system === "etcd" && e.via === s.via && e.clients === s.clients);
}

function notesOf(s: CaseSummary): string {
  return [
    s.errors ? `${s.errors} errors (${s.errorSamples[0]})` : "",
    s.leaderChanges ? `leader changed in ${s.leaderChanges} of ${s.rounds} rounds` : "",
    s.commitCheckFailures
      ? `COMMIT CHECK FAILED in ${s.commitCheckFailures} rounds: fewer commits than answers`
      : "",
  ].filter((n) => n !== "").join("; ");
}

function header(report: Report): string[] {
  const m = report.machine;
  const t = report.timing;
  return [
    `Raft benchmark: 3-member clusters on loopback; writes of ${report.valueBytes}-byte values ` +
    `(Blixard Metadata.Put, etcd KV.Put), each answered once committed and applied`,
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; disk ${m.disk} (as the kernel ` +
    `reports it); 4 KiB write + fdatasync p50 ${f1(m.fdatasyncP50Ms)} ms, p99 ` +
    `${f1(m.fdatasyncP99Ms)} ms; ${m.kernel}; load average at start ${m.loadAverage}`,
    `event loop here: setTimeout(fn, 0) runs fn after ${f1(m.zeroTimeoutP50Ms)} ms (p50), ` +
    `setImmediate(fn) after ${f0(m.setImmediateP50Ms * 1000)} µs`,
    `Deno ${report.versions.deno} (V8 ${report.versions.v8}), etcd ${report.versions.etcd}; ` +
    `${t.rounds} round${t.rounds === 1 ? "" : "s"} of ${t.warmupMs / 1000} s warm-up + ` +
    `${t.measureMs / 1000} s window per case, figures are the median over rounds; one ` +
    `connection per member shared by all callers; each caller overwrites its own ` +
    `${report.keysPerClient} keys`,
    "",
  ];
}

function comparison(report: Report): string[] {
  const all = report.summaries;
  const rows = all.filter((s) => s.system !== "etcd").map((s) => {
    const e = etcdOf(all, s);
    const etcdNotes = e ? notesOf(e) : "";
    return [
      `${s.system.replace("blixard ", "")}, ${caseLabel(s)}`,
      f0(s.putsPerS),
      f0(e?.putsPerS ?? NaN),
      ratio(s.putsPerS, e?.putsPerS ?? NaN),
      f1(s.p50Ms),
      f1(e?.p50Ms ?? NaN),
      ratio(s.p50Ms, e?.p50Ms ?? NaN),
      f1(s.p99Ms),
      f1(e?.p99Ms ?? NaN),
      ratio(s.p99Ms, e?.p99Ms ?? NaN),
      [notesOf(s), etcdNotes ? `etcd: ${etcdNotes}` : ""].filter((n) => n).join("; "),
    ];
  });
  return [
    "puts/s: writes answered per second; ÷ etcd above 1 is Blixard better.",
    "p50, p99: ms from call to answer; ÷ etcd below 1 is Blixard better.",
    table([
      "blixard transport, load",
      "puts/s",
      "etcd",
      "÷ etcd",
      "p50 ms",
      "etcd",
      "÷ etcd",
      "p99 ms",
      "etcd",
      "÷ etcd",
      "notes",
    ], rows),
    "",
  ];
}

function cpuTable(report: Report): string[] {
  const share = (c: CpuShare | undefined, deno: boolean) => [
    pct(c?.process ?? NaN),
    deno ? pct(c?.mainThread ?? NaN) : "-",
  ];
  const idle = Object.entries(report.idle).map(([system, w]) => {
    const ids = Object.keys(w.members).map(Number).sort((a, b) => a - b);
    return `  ${system}: ${
      ids.map((id) => `member ${id} ${pct(w.members[id]!.process)}`).join(", ")
    }`;
  });
  return [
    "Idle (no load: heartbeats, timers), share of one core:",
    ...idle,
    "",
    "CPU over the window, share of one core (all threads / main thread: a Deno process's event " +
    "loop; etcd's Go runtime runs on every thread, so no main thread figure), and CPU ms per write:",
    table(
      [
        "system, load",
        "leader",
        "main",
        "follower",
        "main",
        "follower",
        "main",
        "client",
        "ms/put members",
        "client",
      ],
      report.summaries.map((s) => [
        `${s.system}, ${caseLabel(s)}`,
        ...share(s.cpu.leader, s.system !== "etcd"),
        ...share(s.cpu.followers[0], s.system !== "etcd"),
        ...share(s.cpu.followers[1], s.system !== "etcd"),
        pct(s.cpu.bench.process),
        f1(s.cpuMsPerPut.members),
        f1(s.cpuMsPerPut.bench),
      ]),
    ),
    "(ms/put members: the three members' CPU above idle per write answered. Written through a " +
    "follower: the first follower column is the one written to.)",
    "",
  ];
}

function goals(report: Report): string[] {
  const lines: string[] = [];
  const all = report.summaries;
  for (const s of all.filter((c) => c.system !== "etcd" && c.via === "leader")) {
    const e = etcdOf(all, s);
    if (!e) continue;
    if (s.clients === 256) {
      const met = s.putsPerS >= e.putsPerS;
      lines.push(
        `  ${s.system}, 256 clients to the leader: puts/s at least etcd's: ${f0(s.putsPerS)} vs ` +
          `${f0(e.putsPerS)} (${ratio(s.putsPerS, e.putsPerS)})  ${met ? "met" : "MISSED"}`,
      );
    }
    if (s.clients === 1) {
      const met = s.p50Ms <= e.p50Ms;
      lines.push(
        `  ${s.system}, 1 client to the leader: p50 at most etcd's: ${f1(s.p50Ms)} ms vs ` +
          `${f1(e.p50Ms)} ms (${ratio(s.p50Ms, e.p50Ms)})  ${met ? "met" : "MISSED"}`,
      );
    }
  }
  return lines.length ? ["goals (report only):", ...lines, ""] : [];
}

function profiles(report: Report): string[] {
  const out: string[] = [];
  for (const p of report.profiles) {
    const windowS = p.load.windowMs / 1000;
    const leaderCpu = p.cpu.members[p.leader];
    out.push(
      `${p.system}, leader (member ${p.leader}) under ${p.load.clients} clients again, profiled: ` +
        `${f0(p.load.putsPerS)} puts/s, p50 ${f1(p.load.p50Ms)} ms; its CPU ` +
        `${pct(leaderCpu?.process ?? NaN)} (main thread ${pct(leaderCpu?.mainThread ?? NaN)})`,
    );
    const fs = p.fsyncs;
    out.push(
      fs
        ? `  fsync+fdatasync: ${f0(fs.calls / windowS)}/s (one per ${
          f1(p.load.putsPerS / (fs.calls / windowS))
        } writes), mean ${f1(fs.meanMs)} ms, max ${f1(fs.maxMs)} ms, ` +
          `${pct(fs.totalMs / p.load.windowMs)} of the window`
        : "  fsyncs: not traced (perf not found, or not permitted)",
    );
    if (p.profile) {
      const pr = p.profile;
      out.push(
        `  the leader's main thread over ${f0(pr.durationMs)} ms (V8 samples, wall clock: a part ` +
          `includes the time the thread waited for a core):`,
        ...pr.parts.map((x) => `    ${x.part.padEnd(34)} ${pct(x.share).padStart(4)}`),
        `    of which inside SQLite calls (fsync included): ${
          pct(pr.sqliteNativeMs / pr.durationMs)
        }`,
        "  top functions by self time:",
        ...pr.topSelf.slice(0, 10).map((x) => `    ${pct(x.share).padStart(4)}  ${x.fn}`),
        `  profile: ${p.profileFile}`,
      );
    }
    out.push("");
  }
  return out;
}

/** Prints the whole report on stdout. */
export function printReport(report: Report): void {
  console.log(
    [
      ...header(report),
      ...comparison(report),
      ...cpuTable(report),
      ...goals(report),
      ...profiles(
        report,
      ),
    ].join("\n"),
  );
}
