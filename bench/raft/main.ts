/**
 * Raft benchmark: committed writes per second and commit latency of a
 * 3-node Blixard cluster over Iroh and over gRPC, beside a 3-member etcd
 * cluster measured by the same harness in the same run.
 *
 * Run: `deno task bench:raft [--quick] [--profile DIR] [--json FILE] [--quiet]`
 * (bench/raft/README.md). A report, not a gate: it exits 0 once the
 * measurements ran, whatever the figures (1 if the benchmark itself fails).
 *
 * Every case is one load (load.ts): N callers, each a sequential loop of
 * writes of a 256-byte value, over one connection to one member, a warm-up,
 * then a window. Blixard is written with Metadata.Put (answered once the
 * write is committed and applied), etcd with KV.Put (the same). Each case
 * runs system after system (Iroh, gRPC, etcd), so the figures a ratio
 * compares are measured back to back, and all cases run for several rounds
 * (the figures are medians), so a busy moment of a shared machine moves one
 * round, not a figure. The three clusters run all along, the two waiting
 * ones idle.
 *
 * Owns: the cases, the rounds, the profiled loads, the command line.
 * Imports this folder's clusters, load, machine, profile and report modules.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type BlixardCluster, type BlixardMode, startBlixardCluster } from "./blixard.ts";
import { killAllNow } from "./children.ts";
import { ETCD_QUOTA_BYTES, etcdVersion, startEtcdCluster } from "./etcd.ts";
import { runLoad } from "./load.ts";
import { cpuSeconds, type CpuTime, describeMachine } from "./machine.ts";
import {
  findPerf,
  type FsyncTrace,
  InspectorProfiler,
  summarizeProfile,
  traceFsyncs,
} from "./profile.ts";
import {
  caseLabel,
  type CaseRun,
  type CpuShare,
  type CpuWindow,
  f0,
  f1,
  printReport,
  type ProfileResult,
  type Report,
  summarize,
} from "./report.ts";
import { type ClusterUnderTest, KEYS_PER_CLIENT, VALUE_BYTES } from "./system.ts";

// ---------------------------------------------------------------------------
// Configuration

interface Timing {
  readonly warmupMs: number;
  readonly measureMs: number;
  /** Every case is run this many times, system after system; the figures are medians. */
  readonly rounds: number;
  /** The whole run is killed after this long. */
  readonly watchdogMs: number;
}

const FULL: Timing = { warmupMs: 2_000, measureMs: 6_000, rounds: 3, watchdogMs: 20 * 60_000 };
const QUICK: Timing = { warmupMs: 2_000, measureMs: 4_000, rounds: 1, watchdogMs: 10 * 60_000 };

/** Where the load goes, and how many callers. */
interface Case {
  readonly via: "leader" | "follower";
  readonly clients: number;
}

/** The cases, in table order: to the leader (the figures the goals read), then through a follower. */
const CASES: readonly Case[] = [
  { via: "leader", clients: 1 },
  { via: "leader", clients: 256 },
  { via: "follower", clients: 1 },
  { via: "follower", clients: 256 },
];

/** How long each cluster's CPU is measured with no load. */
const IDLE_MS = 3_000;

/** Callers of the profiled load (the leader under the 256-caller load). */
const PROFILE_CLIENTS = 256;

const SYSTEMS = ["iroh", "grpc", "etcd"] as const;
type SystemName = typeof SYSTEMS[number];

// ---------------------------------------------------------------------------
// Measuring

/** CPU counters of every member and of this process, read at the window's open and close. */
function cpuWindow(cluster: ClusterUnderTest) {
  let before: Map<number, CpuTime> | null = null;
  let benchBefore: CpuTime | null = null;
  let openedAt = 0;
  let result: CpuWindow = { members: {}, bench: { process: NaN, mainThread: NaN } };
  const read = async () =>
    new Map(
      await Promise.all(cluster.members.map(async (m) => [m.id, await cpuSeconds(m.pid)] as const)),
    );
  const share = (a: CpuTime, b: CpuTime, s: number): CpuShare => ({
    process: (b.processS - a.processS) / s,
    mainThread: (b.mainThreadS - a.mainThreadS) / s,
  });
  return {
    open: async () => {
      [before, benchBefore] = await Promise.all([read(), cpuSeconds(Deno.pid)]);
      openedAt = performance.now();
    },
    close: async () => {
      const [after, benchAfter] = await Promise.all([read(), cpuSeconds(Deno.pid)]);
      const s = (performance.now() - openedAt) / 1000;
      const members: Record<number, CpuShare> = {};
      for (const [id, b] of after) members[id] = share(before!.get(id)!, b, s);
      result = { members, bench: share(benchBefore!, benchAfter, s) };
    },
    result: () => result,
  };
}

async function measureCase(
  cluster: ClusterUnderTest,
  c: Case,
  round: number,
  t: Timing,
): Promise<CaseRun> {
  const leaderBefore = await cluster.leader();
  const member = c.via === "leader"
    ? leaderBefore.id
    : cluster.members.find((m) => m.id !== leaderBefore.id)!.id;
  const committedBefore = await cluster.committed();
  const cpu = cpuWindow(cluster);
  const load = await runLoad(cluster.putVia(member), {
    clients: c.clients,
    warmupMs: t.warmupMs,
    measureMs: t.measureMs,
    onWindow: cpu,
  });
  const committedDelta = (await cluster.committed()) - committedBefore;
  return {
    system: cluster.name,
    via: c.via,
    clients: c.clients,
    round,
    member,
    leaderBefore,
    leaderAfter: await cluster.leader(),
    load,
    committedDelta,
    cpu: cpu.result(),
  };
}

/**
 * The leader under the 256-caller load again, with its fsyncs traced and,
 * on Blixard, its CPU profile taken through the inspector; the raw profile
 * goes to `dir`.
 */
async function profileLeader(
  cluster: ClusterUnderTest,
  inspectPort: number | undefined,
  perf: string | null,
  dir: string,
  t: Timing,
): Promise<ProfileResult> {
  const { id: leader } = await cluster.leader();
  const pid = cluster.members.find((m) => m.id === leader)!.pid;
  const profiler = inspectPort ? await InspectorProfiler.attach(inspectPort) : null;
  const cpu = cpuWindow(cluster);
  let trace: ReturnType<typeof traceFsyncs> | null = null;
  let fsyncs: FsyncTrace | null = null;
  let raw: unknown = null;
  try {
    const load = await runLoad(cluster.putVia(leader), {
      clients: PROFILE_CLIENTS,
      warmupMs: t.warmupMs,
      measureMs: t.measureMs,
      onWindow: {
        open: async () => {
          if (perf) trace = traceFsyncs(perf, pid);
          await profiler?.start();
          await cpu.open();
        },
        close: async () => {
          await cpu.close();
          raw = await profiler?.stop() ?? null;
          fsyncs = await (trace as ReturnType<typeof traceFsyncs> | null)?.stop() ?? null;
        },
      },
    });
    let profileFile: string | null = null;
    if (raw) {
      profileFile = `${dir}/${cluster.name.replaceAll(" ", "-")}-leader.cpuprofile`;
      await Deno.writeTextFile(profileFile, JSON.stringify(raw));
    }
    return {
      system: cluster.name,
      leader,
      load,
      cpu: cpu.result(),
      fsyncs,
      profile: raw ? summarizeProfile(raw as Parameters<typeof summarizeProfile>[0]) : null,
      profileFile,
    };
  } finally {
    profiler?.close();
  }
}

// ---------------------------------------------------------------------------
// Main

const USAGE =
  `Usage: deno run -A bench/raft/main.ts [--quick] [--profile DIR] [--only LIST] [--json FILE] [--quiet]

  --quick        one round of 2 s warm-up + 4 s window per case, instead of
                 ${FULL.rounds} rounds of ${FULL.warmupMs / 1000} s + ${FULL.measureMs / 1000} s
  --profile DIR  afterwards, load each leader with ${PROFILE_CLIENTS} clients again: CPU profile of
                 Blixard's leaders (through the V8 inspector; nodes start with --inspect),
                 fsyncs of every leader (perf trace, if perf is installed); files go to DIR
  --only LIST    comma-separated subset of ${SYSTEMS.join(",")}
  --json FILE    also write every figure as JSON
  --quiet        no progress lines on stderr`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      profile: { type: "string" },
      only: { type: "string" },
      json: { type: "string" },
      quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const only = (values.only ?? SYSTEMS.join(",")).split(",");
  const unknown = only.filter((s) => !(SYSTEMS as readonly string[]).includes(s));
  if (unknown.length) {
    console.error(`--only ${values.only}: unknown ${unknown.join(", ")}; expected ${SYSTEMS}`);
    return 2;
  }
  const systems = SYSTEMS.filter((s) => only.includes(s));
  const timing = values.quick ? QUICK : FULL;
  const log = (line: string) => {
    if (!values.quiet) console.error(line);
  };
  const profileDir = values.profile;
  if (profileDir) await Deno.mkdir(profileDir, { recursive: true });

  const root = await Deno.makeTempDir({ prefix: "blixard-raft-bench-" });
  const clusters = new Map<SystemName, ClusterUnderTest>();
  const watchdog = setTimeout(() => {
    console.error(`raft bench: still running after ${timing.watchdogMs / 1000} s; killing it`);
    killAllNow();
    Deno.exit(1);
  }, timing.watchdogMs);
  const onSignal = () => {
    killAllNow();
    Deno.removeSync(root, { recursive: true });
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const machine = await describeMachine(root);
    const report: Report = {
      startedAt: new Date().toISOString(),
      machine,
      versions: { deno: Deno.version.deno, v8: Deno.version.v8, etcd: await etcdVersion() },
      timing: { warmupMs: timing.warmupMs, measureMs: timing.measureMs, rounds: timing.rounds },
      valueBytes: VALUE_BYTES,
      keysPerClient: KEYS_PER_CLIENT,
      etcdQuotaBytes: ETCD_QUOTA_BYTES,
      idle: {},
      runs: [],
      summaries: [],
      profiles: [],
    };
    for (const s of systems) {
      log(`starting ${s === "etcd" ? "etcd" : `blixard ${s}`} (3 members)`);
      const cluster = s === "etcd"
        ? await startEtcdCluster(`${root}/etcd`)
        : await startBlixardCluster({
          mode: s as BlixardMode,
          dir: `${root}/${s}`,
          inspect: profileDir !== undefined,
        });
      clusters.set(s, cluster);
    }
    for (const cluster of clusters.values()) {
      log(`${cluster.name}: CPU with no load`);
      const cpu = cpuWindow(cluster);
      await cpu.open();
      await new Promise((r) => setTimeout(r, IDLE_MS));
      await cpu.close();
      report.idle[cluster.name] = cpu.result();
    }
    for (let round = 1; round <= timing.rounds; round++) {
      for (const c of CASES) {
        for (const cluster of clusters.values()) {
          log(`round ${round}/${timing.rounds}, ${cluster.name}: ${caseLabel(c)}`);
          const r = await measureCase(cluster, c, round, timing);
          log(
            `  ${f0(r.load.putsPerS)} puts/s, p50 ${f1(r.load.p50Ms)} ms, p99 ${
              f1(r.load.p99Ms)
            } ms` + (r.load.errors ? `, ${r.load.errors} errors: ${r.load.errorSamples[0]}` : ""),
          );
          report.runs.push(r);
        }
      }
    }
    report.summaries.push(...summarize(report.runs, report.idle));
    if (profileDir) {
      const perf = await findPerf();
      for (const [s, cluster] of clusters) {
        log(`${cluster.name}: profiling the leader under ${PROFILE_CLIENTS} clients`);
        const ports = s === "etcd" ? undefined : (cluster as BlixardCluster).inspectPorts;
        const { id } = await cluster.leader();
        report.profiles.push(
          await profileLeader(cluster, ports?.get(id), perf, profileDir, timing),
        );
      }
    }
    printReport(report);
    if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
    return 0;
  } finally {
    clearTimeout(watchdog);
    for (const cluster of clusters.values()) {
      await cluster.stop().catch((e) => console.error(`warning: stopping ${cluster.name}: ${e}`));
    }
    await Deno.remove(root, { recursive: true }).catch(() => {});
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`raft bench failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
    killAllNow();
    Deno.exit(1);
  }
}
