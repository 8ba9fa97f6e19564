/**
 * The process backend with real processes and real signals: exit codes,
 * stop with SIGTERM then SIGKILL, kill, handles that find a VM again, and a
 * pid that names another process never being signalled.
 */

import { assert, assertEquals, assertMatch, rejection } from "../assert.ts";
import { VmBackendError, type VmHandle, type VmObservation } from "../../src/vm/backend.ts";
import { isRunning, processGone } from "../../src/vm/proc.ts";
import { ProcessBackend } from "../../src/vm/process.ts";
import { readRecord, vmIdentity, writeRecord } from "../../src/vm/supervisor.ts";
import { dataDir, shellSpec, spec } from "./helpers.ts";

/** Inspects until the VM is no longer running; fails after `ms`. */
async function ended(b: ProcessBackend, h: VmHandle, ms = 5000): Promise<VmObservation> {
  const until = Date.now() + ms;
  for (;;) {
    const seen = await b.inspect(h);
    if (seen.kind !== "running") return seen;
    if (Date.now() > until) throw new Error(`${h.name} still runs after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("a command's exit code is reported as a failure, with the last line it printed", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(shellSpec("boom", "echo starting; echo 'disk full' >&2; exit 3"), {
    generation: 1,
  });
  assertEquals(await ended(b, h), {
    kind: "exited",
    reason: "command: exit code 3: disk full",
    exit: { code: 3 },
  });
  await b.close();
});

Deno.test("a command that ends at once is still started and reports its exit code, every time", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  // Each start races the command's end against the supervisor noting its pid.
  for (let i = 0; i < 40; i++) {
    const h = await b.start(shellSpec(`quick${i}`, "exit 3"), { generation: 1 });
    const seen = await ended(b, h);
    assertEquals(seen.kind === "exited" && seen.exit, { code: 3 }, `start ${i}`);
  }
  await b.close();
});

Deno.test("a command that exits 0 on its own is stopped, not failed", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(shellSpec("done", "true"), { generation: 1 });
  assertEquals(await ended(b, h), {
    kind: "stopped",
    reason: "command: exit code 0",
    exit: { code: 0 },
  });
  await b.close();
});

Deno.test("stop sends SIGTERM, and a command that ends on it is stopped", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(spec("sleeper"), { generation: 1 });
  assertEquals((await b.inspect(h)).kind, "running");
  assertEquals(await b.stop(h, 5000), {
    kind: "stopped",
    reason: "stopped (SIGTERM): killed by SIGTERM (signal 15)",
    exit: { signal: 15 },
  });
  await b.close();
});

Deno.test("a command that ignores SIGTERM is killed with SIGKILL after the stop timeout", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(
    shellSpec("stubborn", "trap 'echo got SIGTERM' TERM; echo up; while :; do sleep 0.05; done"),
    { generation: 1 },
  );
  // The trap must be set before the signal comes.
  while (!(await Deno.readTextFile(`${h.dir}/output.log`)).includes("up")) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const seen = await b.stop(h, 300);
  assertEquals(seen, {
    kind: "stopped",
    reason: "stopped (SIGKILL after SIGTERM was ignored for 300 ms): killed by SIGKILL (signal 9)",
    exit: { signal: 9 },
  });
  assertMatch(await Deno.readTextFile(`${h.dir}/output.log`), /got SIGTERM/);
  await b.close();
});

Deno.test("kill ends a VM at once with SIGKILL", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(spec("victim"), { generation: 1 });
  assertEquals(await b.kill(h), {
    kind: "stopped",
    reason: "stopped (SIGKILL): killed by SIGKILL (signal 9)",
    exit: { signal: 9 },
  });
  await b.close();
});

Deno.test("a VM killed by someone else is a failure that names the signal", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(spec("victim"), { generation: 1 });
  Deno.kill(h.pid, "SIGKILL");
  assertEquals(await ended(b, h), {
    kind: "exited",
    reason: "command: killed by SIGKILL (signal 9)",
    exit: { signal: 9 },
  });
  await b.close();
});

Deno.test("a process that exits between the open and the read of its /proc file counts as gone", async () => {
  // The race a supervisor loses sometimes: the file opens, the process exits, the read fails.
  const child = new Deno.Command("sleep", { args: ["10"] }).spawn();
  using file = await Deno.open(`/proc/${child.pid}/stat`);
  child.kill("SIGKILL");
  await child.status;
  const error = await rejection(Error, () => file.read(new Uint8Array(1024)));
  assert(processGone(error), `not taken for a gone process: ${error}`);
  // The same error as Deno.readTextFile words it (seen in a reconciler test).
  assert(processGone(new Error("No such process (os error 3): readfile '/proc/20692/stat'")));
  assert(!processGone(new Error("Permission denied (os error 13)")));
});

Deno.test("vm.json records the handle, and a VM whose process runs is not started twice", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(spec("once"), { generation: 7 });
  const recorded = await readRecord(`${dir.path}/vms/once`);
  assertEquals(recorded, h);
  assertEquals([h.version, h.backend, h.generation, h.controlSocket], [1, "process", 7, ""]);
  const e = await rejection(VmBackendError, () => b.start(spec("once"), { generation: 8 }));
  assertEquals(e.code, "ALREADY_RUNNING");
  assertMatch(e.message, new RegExp(`pid ${h.pid}, recorded in .*/vms/once/vm.json\\) still runs`));
  await b.stop(h, 5000);
  await b.close();
});

Deno.test("a recorded pid whose start time differs (a reused pid) is never signalled", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const real = await b.start(spec("reused"), { generation: 1 });
  // As if the VM and its supervisor had died and the kernel had given both pids to others.
  const stale: VmHandle = {
    ...real,
    startTicks: real.startTicks - 1,
    supervisorStartTicks: real.supervisorStartTicks - 1,
  };
  await writeRecord(stale);
  const adopted = await b.adopt(stale);
  assertEquals(adopted.kind, "vanished");
  assertMatch(
    (adopted as { reason: string }).reason,
    new RegExp(`command \\(pid ${real.pid}\\) is gone`),
  );
  await b.stop(stale, 100);
  await b.kill(stale);
  assert(await isRunning(vmIdentity(real)), "the process the pid names now was left alone");
  await b.kill(real);
  await b.close();
});

Deno.test("the command runs in its directory with its own small environment, not the agent's", async () => {
  await using dir = await dataDir();
  Deno.env.set("BLIXARD_TEST_AGENT_SECRET", "do-not-leak");
  const b = new ProcessBackend({ dataDir: dir.path });
  const h = await b.start(shellSpec("envcheck", "pwd; env | sort"), { generation: 1 });
  await ended(b, h);
  Deno.env.delete("BLIXARD_TEST_AGENT_SECRET");
  const out = await Deno.readTextFile(`${h.dir}/output.log`);
  assertMatch(out, new RegExp(`^${h.dir}$`, "m"));
  assertMatch(out, /^BLIXARD_VM_NAME=envcheck$/m);
  assertMatch(out, /^PATH=\/usr\/local\/sbin:/m);
  assert(!out.includes("do-not-leak"));
  await b.close();
});

Deno.test("a program that does not exist is refused at start, naming it", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path });
  const e = await rejection(
    VmBackendError,
    () =>
      b.start(spec("ghost", { options: { command: '["/nonexistent/runner", "--vm"]' } }), {
        generation: 1,
      }),
  );
  assertEquals(e.code, "START_FAILED");
  assertEquals(e.message, 'vm "ghost": program /nonexistent/runner does not exist');
  await b.close();
});

Deno.test("a command's output log is kept under its bound, the previous part in output.log.1", async () => {
  await using dir = await dataDir();
  const b = new ProcessBackend({ dataDir: dir.path, maxLogBytes: 4096 });
  const h = await b.start(
    shellSpec(
      "chatty",
      "i=0; while [ $i -lt 300 ]; do echo line-$i-padding-padding; i=$((i+1)); done; echo ready; sleep 600",
    ),
    { generation: 1 },
  );
  while (!(await Deno.readTextFile(`${h.dir}/output.log`)).includes("ready")) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await b.inspect(h);
  assertEquals((await Deno.stat(`${h.dir}/output.log`)).size, 0);
  assert((await Deno.stat(`${h.dir}/output.log.1`)).size > 4096);
  await b.kill(h);
  await b.close();
});
