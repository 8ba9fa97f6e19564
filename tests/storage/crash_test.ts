/**
 * Crash safety, proven by SIGKILL: a writer process
 * (tests/fixtures/storage_writer.ts) saves what a Raft follower would, and is
 * killed at random moments, again and again, on the same file. After each
 * kill the file must pass `PRAGMA integrity_check`, open, and hold exactly
 * what the writer acknowledged, or that plus the one write it had started:
 * nothing lost, nothing half-written. Entries a later acknowledged write
 * overwrote or compacted are checked by the model (tests/storage/log_model.ts).
 *
 * Runs for about 20 s (`BLIXARD_CRASH_MS`), at least 5 kills. The run's seed
 * is printed on failure; `BLIXARD_CRASH_SEED=<seed>` replays the same writes
 * and kill plans (the kill moments themselves depend on the machine's speed).
 *
 * What SIGKILL cannot show: a power cut, which also loses what the kernel had
 * not written to the device. That is `synchronous = FULL`'s job
 * (src/storage/raft_log_file.ts), and is not simulated here.
 */

import { DatabaseSync } from "node:sqlite";
import { SqliteLogStorage } from "../../src/storage/raft_log.ts";
import { type LogState, readLogState } from "../fixtures/storage_log_state.ts";
import { random } from "../fixtures/storage_writer.ts";
import { applyOp, difference, EMPTY_LOG, parseWriterOutput } from "./log_model.ts";
import { tempDir } from "./helpers.ts";
import { within } from "../wait.ts";

const writer = new URL("../fixtures/storage_writer.ts", import.meta.url).pathname;
const seed = Number(Deno.env.get("BLIXARD_CRASH_SEED") ?? Math.floor(Math.random() * 2 ** 32));
const budgetMs = Number(Deno.env.get("BLIXARD_CRASH_MS") ?? 20_000);
const MIN_KILLS = 5;

/** How one writer run ends: after a time, or after some acknowledged writes. */
type KillPlan = { afterMs: number } | { afterAcks: number; jitterMs: number };

interface RunResult {
  readonly stdout: string;
  readonly acksSeen: number;
}

/** Runs a writer on `file` until `plan` says, then SIGKILLs it. */
async function runAndKill(file: string, writerSeed: number, plan: KillPlan): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", writer, file, String(writerSeed)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  let acks = 0;
  let wake: (() => void) | undefined;
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += chunk;
      acks += chunk.match(/^ack /gm)?.length ?? 0;
      wake?.();
    }
  })();
  const stderr = new Response(child.stderr).text();
  let exitedEarly = false;
  const exited = child.status.then(() => {
    exitedEarly = true;
    wake?.();
  });

  if ("afterMs" in plan) {
    await Promise.race([new Promise((r) => setTimeout(r, plan.afterMs)), exited]);
  } else {
    await within(
      new Promise<void>((resolve) => {
        wake = () => {
          if (acks >= plan.afterAcks || exitedEarly) resolve();
        };
        wake();
      }),
      30_000,
      `the writer to acknowledge ${plan.afterAcks} writes`,
    );
    await new Promise((r) => setTimeout(r, plan.jitterMs));
  }
  if (!exitedEarly) child.kill("SIGKILL");
  const status = await child.status;
  await reading;
  const errors = await stderr;
  if (status.signal !== "SIGKILL") {
    throw new Error(`the writer exited by itself (code ${status.code}):\n${errors.slice(-3000)}`);
  }
  return { stdout, acksSeen: acks };
}

/** What the file holds now, read as a restarting node would; checks SQLite's integrity first. */
function inspect(file: string): LogState {
  const db = new DatabaseSync(file);
  try {
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    const result = db.prepare("PRAGMA integrity_check").all().map((r) => r.integrity_check);
    if (result.join() !== "ok") throw new Error(`integrity_check: ${result.join("; ")}`);
  } finally {
    db.close();
  }
  const log = SqliteLogStorage.open(file);
  try {
    return readLogState(log);
  } finally {
    log.close();
  }
}

Deno.test("a log killed at random moments keeps every acknowledged write and nothing half-written", async () => {
  using dir = tempDir();
  const file = `${dir.path}/raft.db`;
  const rand = random(seed);
  let expected = EMPTY_LOG;
  let kills = 0;
  let acked = 0;
  let inFlightLanded = 0;
  const started = Date.now();
  try {
    while (kills < MIN_KILLS || Date.now() - started < budgetMs) {
      const writerSeed = Math.floor(rand() * 2 ** 32);
      const plan: KillPlan = rand() < 0.5 ? { afterMs: Math.floor(rand() * 600) } : {
        afterAcks: Math.floor(rand() * [1, 5, 50, 400][Math.floor(rand() * 4)]!),
        jitterMs: Math.floor(rand() * 3),
      };
      const run = await runAndKill(file, writerSeed, plan);
      const report = parseWriterOutput(run.stdout);
      for (const op of report.acked) expected = applyOp(expected, op);
      const observed = inspect(file);
      const withPending = report.pending && applyOp(expected, report.pending);
      const missed = difference(observed, expected);
      if (missed !== undefined && (!withPending || difference(observed, withPending))) {
        throw new Error(
          `after kill ${kills + 1} (writer seed ${writerSeed}, ${JSON.stringify(plan)}, ` +
            `${report.acked.length} writes acknowledged, write ${report.pending?.n} in flight): ` +
            `against the acknowledged state: ${missed}` +
            (withPending ? `; with the write in flight: ${difference(observed, withPending)}` : ""),
        );
      }
      if (missed !== undefined) inFlightLanded++;
      expected = observed;
      acked += report.acked.length;
      kills++;
    }
  } catch (e) {
    throw new Error(
      `crash test failed; seed ${seed} (replay: BLIXARD_CRASH_SEED=${seed} ` +
        `npx deno test -A tests/storage/crash_test.ts): ${(e as Error).message}`,
      { cause: e },
    );
  }
  console.log(
    `crash test: ${kills} kills, ${acked} acknowledged writes checked, ` +
      `${inFlightLanded} in-flight writes found complete, log ${expected.first}..${expected.last} (seed ${seed})`,
  );
});
