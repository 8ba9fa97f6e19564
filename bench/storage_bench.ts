/**
 * Raft log benchmark: what group commit buys, and how fast the log reads.
 *
 * Run: `deno run -A bench/storage_bench.ts [--dir DIR] [--entries N]
 * [--bytes B] [--rounds R] [--json FILE]`. A script rather than `deno bench`
 * cases, because its point is a ratio between cases measured in one run; under
 * `deno bench` (which `deno task bench` runs) it does nothing.
 *
 * Measured, each case on a fresh `SqliteLogStorage` file in DIR (default: a
 * temporary directory; use one on the disk a node would use, since the figures
 * are the disk's), median of R rounds (default 3):
 * - the floor: `fdatasync` after a 4 KiB write to a plain file, per second,
 *   overwriting in place (as a reused WAL is written) and appending;
 * - saves of N entries of B bytes (default 4,096 of 256 bytes) with a hard
 *   state each: one entry per `save()`, then batches of 16, 64 and 256;
 *   saves/s, entries/s, MiB/s, and entries/s over the single-entry rate;
 * - saves that only move the commit index (a follower learning it), which
 *   are not fsynced (src/raft/storage.ts): saves/s, and over single-entry saves;
 * - `entries()` over a log of N entries, in pages of 64 KiB of data (as a
 *   leader fills appends) and in one call; `term()` of random indexes.
 * Prints the machine, SQLite's version and the table; `--json FILE` also
 * writes every figure.
 *
 * What limits it: every `save()` is one commit, and a commit with
 * `synchronous = FULL` in WAL mode waits for one fsync of the WAL. So
 * single-entry saves run at about the disk's fsync rate whatever the entry
 * size, and a batch of k entries costs about one fsync plus k row inserts:
 * entries/s grows with the batch until the inserts, not the fsync, dominate.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { SqliteLogStorage } from "../src/storage/raft_log.ts";
import type { Entry } from "../src/raft/storage.ts";

interface SaveFigures {
  readonly batch: number;
  readonly savesPerS: number;
  readonly entriesPerS: number;
  readonly mibPerS: number;
  readonly overSingle: number;
}

interface ReadFigures {
  readonly name: string;
  readonly perS: number;
  readonly mibPerS: number;
}

const BATCHES = [1, 16, 64, 256] as const;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function makeEntries(count: number, bytes: number): Entry[] {
  return Array.from({ length: count }, (_, i) => ({
    index: i + 1,
    term: 1,
    kind: 0 as const,
    data: new Uint8Array(bytes).fill(i & 0xff),
  }));
}

/** Opens a fresh log in `dir`, runs `body`, closes and deletes it. */
function withLog<T>(dir: string, body: (log: SqliteLogStorage) => T): T {
  const file = `${dir}/bench-${crypto.randomUUID()}.db`;
  const log = SqliteLogStorage.open(file);
  try {
    return body(log);
  } finally {
    log.close();
    for (const suffix of ["", "-wal", "-journal"]) {
      try {
        Deno.removeSync(file + suffix);
      } catch {
        // absent: nothing to remove
      }
    }
  }
}

/** Seconds to save `entries` in saves of `batch`, each with a hard state. */
function timeSaves(dir: string, entries: readonly Entry[], batch: number): number {
  return withLog(dir, (log) => {
    const start = performance.now();
    for (let i = 0; i < entries.length; i += batch) {
      const part = entries.slice(i, i + batch);
      log.save({
        entries: part,
        hardState: { term: 1, vote: 1, commit: part.at(-1)!.index },
      });
    }
    return (performance.now() - start) / 1000;
  });
}

/** Seconds for `entries.length` saves that each move only the commit index, over `entries`. */
function timeCommitSaves(dir: string, entries: readonly Entry[]): number {
  return withLog(dir, (log) => {
    log.save({ entries: [...entries], hardState: { term: 1, vote: 1, commit: 0 } });
    const start = performance.now();
    for (let i = 1; i <= entries.length; i++) {
      log.save({ entries: [], hardState: { term: 1, vote: 1, commit: i } });
    }
    return (performance.now() - start) / 1000;
  });
}

/**
 * fdatasync calls per second after a 4 KiB write to a plain file in `dir`:
 * appending (the file grows, so its size must be synced too), or overwriting
 * a preallocated 4 MiB region in turn (as a WAL that SQLite reuses after a
 * checkpoint is written).
 */
function fsyncFloor(dir: string, count: number, mode: "append" | "overwrite"): number {
  const file = `${dir}/bench-fsync-${crypto.randomUUID()}`;
  const handle = Deno.openSync(file, { create: true, read: true, write: true });
  const page = new Uint8Array(4096);
  const pages = 1024;
  try {
    if (mode === "overwrite") {
      for (let i = 0; i < pages; i++) handle.writeSync(page);
      handle.syncSync();
    }
    const start = performance.now();
    for (let i = 0; i < count; i++) {
      if (mode === "overwrite") handle.seekSync((i % pages) * page.length, Deno.SeekMode.Start);
      handle.writeSync(page);
      handle.syncDataSync();
    }
    return count / ((performance.now() - start) / 1000);
  } finally {
    handle.close();
    Deno.removeSync(file);
  }
}

function measureReads(
  dir: string,
  entries: readonly Entry[],
  bytes: number,
  rounds: number,
): ReadFigures[] {
  return withLog(dir, (log) => {
    for (let i = 0; i < entries.length; i += 256) log.save({ entries: entries.slice(i, i + 256) });
    const last = log.lastIndex();
    let sink = 0;
    const cases: { name: string; count: number; perEntryBytes: number; run: () => void }[] = [
      {
        name: "entries(), pages of 64 KiB",
        count: last,
        perEntryBytes: bytes,
        run: () => {
          for (let next = 1; next <= last;) next += log.entries(next, last + 1, 64 * 1024).length;
        },
      },
      {
        name: "entries(), one call",
        count: last,
        perEntryBytes: bytes,
        run: () => void log.entries(1, last + 1, Number.MAX_SAFE_INTEGER),
      },
      {
        name: "term(), random index",
        count: 100_000,
        perEntryBytes: NaN,
        run: () => {
          for (let i = 0; i < 100_000; i++) sink += log.term(1 + ((i * 7919) % last));
        },
      },
    ];
    for (const c of cases) c.run(); // warm-up: compiled code and SQLite's page cache
    const seconds = cases.map(() => [] as number[]);
    for (let r = 0; r < rounds * 5; r++) {
      cases.forEach((c, i) => {
        const start = performance.now();
        c.run();
        seconds[i]!.push((performance.now() - start) / 1000);
      });
    }
    if (sink < 0) console.log(sink);
    return cases.map((c, i) => {
      const s = median(seconds[i]!);
      return {
        name: c.name,
        perS: c.count / s,
        mibPerS: (c.count * c.perEntryBytes) / (1 << 20) / s,
      };
    });
  });
}

function machine(dir: string) {
  const cpu = (() => {
    try {
      return /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "unknown";
    } catch {
      return "unknown";
    }
  })();
  const fs = (() => {
    try {
      const real = Deno.realPathSync(dir);
      const mounts = Deno.readTextFileSync("/proc/mounts").trim().split("\n")
        .map((l) => l.split(" "))
        .filter(([, at]) => real === at || real.startsWith(at === "/" ? "/" : `${at}/`))
        .sort((a, b) => b[1]!.length - a[1]!.length);
      return mounts[0] ? `${mounts[0][2]} on ${mounts[0][0]}` : "unknown";
    } catch {
      return "unknown";
    }
  })();
  const db = new DatabaseSync(":memory:");
  const sqlite = db.prepare("SELECT sqlite_version() AS v").get()!.v as string;
  db.close();
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    deno: Deno.version.deno,
    sqlite,
    filesystem: fs,
  };
}

function main(): void {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      dir: { type: "string" },
      entries: { type: "string", default: "4096" },
      bytes: { type: "string", default: "256" },
      rounds: { type: "string", default: "3" },
      json: { type: "string" },
    },
  });
  const count = Number(values.entries);
  const bytes = Number(values.bytes);
  const rounds = Number(values.rounds);
  for (
    const [name, v, min] of [["entries", count, 256], ["bytes", bytes, 0], [
      "rounds",
      rounds,
      1,
    ]] as const
  ) {
    if (!Number.isSafeInteger(v) || v < min) {
      console.error(`storage_bench: --${name} ${v}: expected an integer >= ${min}`);
      Deno.exit(2);
    }
  }
  const dir = values.dir ?? Deno.makeTempDirSync({ prefix: "blixard-storage-bench-" });
  try {
    const entries = makeEntries(count, bytes);
    const overwrites: number[] = [];
    const appends: number[] = [];
    const seconds = new Map<number, number[]>(BATCHES.map((b) => [b, []]));
    const commitSeconds: number[] = [];
    // The floor and the cases interleave round by round, so a slow moment of
    // a shared machine hits them all and the ratios stay fair.
    for (let r = 0; r < rounds; r++) {
      overwrites.push(fsyncFloor(dir, 500, "overwrite"));
      appends.push(fsyncFloor(dir, 500, "append"));
      for (const b of BATCHES) seconds.get(b)!.push(timeSaves(dir, entries, b));
      commitSeconds.push(timeCommitSaves(dir, entries));
    }
    const floor = median(overwrites);
    const floorAppend = median(appends);
    const single = count / median(seconds.get(1)!);
    const saves: SaveFigures[] = BATCHES.map((batch) => {
      const s = median(seconds.get(batch)!);
      return {
        batch,
        savesPerS: Math.ceil(count / batch) / s,
        entriesPerS: count / s,
        mibPerS: (count * bytes) / (1 << 20) / s,
        overSingle: count / s / single,
      };
    });
    const commitOnly = count / median(commitSeconds);
    const reads = measureReads(dir, entries, bytes, rounds);
    const m = machine(dir);
    const f = (n: number, digits = 0) =>
      Number.isNaN(n) ? "-" : n.toLocaleString("en-US", {
        maximumFractionDigits: digits,
        minimumFractionDigits: digits,
      });
    console.log(
      `machine: ${m.cpu}, ${m.cores} cores, ${m.os}, Deno ${m.deno}, SQLite ${m.sqlite}, ${m.filesystem}`,
    );
    console.log(`${count} entries of ${bytes} bytes, median of ${rounds} rounds\n`);
    console.log(
      `floor: fdatasync after a 4 KiB write: ${f(floor)}/s overwriting, ` +
        `${f(floorAppend)}/s appending\n`,
    );
    console.log("| entries per save | saves/s | entries/s | MiB/s | entries/s over single |");
    console.log("| ---: | ---: | ---: | ---: | ---: |");
    for (const s of saves) {
      console.log(
        `| ${s.batch} | ${f(s.savesPerS)} | ${f(s.entriesPerS)} | ${f(s.mibPerS, 1)} | ${
          f(s.overSingle, 1)
        }x |`,
      );
    }
    console.log(
      `\ncommit index alone (not fsynced): ${f(commitOnly)} saves/s, ` +
        `${f(commitOnly / saves[0]!.savesPerS, 1)}x single-entry saves`,
    );
    console.log("\n| read | per s | MiB/s |");
    console.log("| --- | ---: | ---: |");
    for (const r of reads) console.log(`| ${r.name} | ${f(r.perS)} | ${f(r.mibPerS, 1)} |`);
    console.log(
      `\nsingle-entry saves run at ${
        f((saves[0]!.savesPerS / floor) * 100)
      }% of the fdatasync floor: ` +
        `each save waits for one fsync of the WAL; batches share it.`,
    );
    if (values.json) {
      Deno.writeTextFileSync(
        values.json,
        JSON.stringify(
          {
            machine: m,
            count,
            bytes,
            rounds,
            fsyncPerS: floor,
            saves,
            commitOnlyPerS: commitOnly,
            reads,
          },
          null,
          2,
        ),
      );
    }
  } finally {
    if (values.dir === undefined) Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) main();
