/**
 * `blixard demo`: the first command a newcomer runs. It starts a 3-node
 * cluster on loopback (generated keys and configs in a temporary
 * directory, gRPC and Iroh both), boots a microVM in it with the qemu
 * backend (the host's kernel and a busybox initramfs built on the fly), shows
 * the cluster and the VM, says what to try next, and on Ctrl-C or SIGTERM
 * stops the VM and the nodes and removes the directory.
 *
 * Owns: the demo command, its output and its `--json` summary (docs/cli.md),
 * and the choice of backend. Imports the guest builder and the VM directory
 * helpers of `src/vm/`, the Vm, Status and Monitoring declarations, the Iroh
 * key helpers, and this folder's local cluster, target, wait and formatting
 * modules.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "../rpc/client.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import type { Client } from "../rpc/services.ts";
import { Monitoring, Status, Vm as VmDeclaration } from "../rpc/services.ts";
import type { GetClusterStatusResponse, StatusService } from "../rpc/gen/blixard/v1/status_pb.ts";
import { type Vm, type VmService, VmSpecSchema, VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { create } from "@bufbuild/protobuf";
import { endpointIdOf, loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import { buildGuest, GUEST_READY_LINE, type GuestImage } from "../vm/guest.ts";
import { killAndWait, listRecords, readRecord, vmDir } from "../vm/supervisor.ts";
import { QEMU_FILES } from "../vm/qemu.ts";
import { printStatus } from "./call.ts";
import { CliError, ExitCode, printJson, usage } from "./common.ts";
import { LocalCluster, type LocalNode, selfInvocation } from "./local_cluster.ts";
import { Dialer, parseMs, rpcFailure } from "./target.ts";
import { printVmTable, vmStateLine } from "./vm_show.ts";
import { seconds, waitForVm } from "./vm_wait.ts";

/** The options of `blixard demo`. */
export const DEMO_OPTIONS = {
  backend: { type: "string" },
  keep: { type: "boolean" },
  timeout: { type: "string", default: "180000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** Nodes in the demo cluster. */
const NODES = 3;
/** The demo VM's name. */
export const DEMO_VM = "demo";
/** How long the VM has to stop when the demo ends, before the nodes stop anyway, ms. */
const VM_STOP_MS = 20_000;
/** The demo VM's graceful stop timeout (its `stop_timeout_ms`), ms. */
const GUEST_STOP_MS = 5_000;
/** How often the demo looks for the leader and for the guest's ready line, ms. */
const POLL_MS = 100;
/** How long a create refused for now (members not announced yet) is asked again, ms. */
const CREATE_RETRY_MS = 15_000;
/** The process backend's stand-in for a guest: says it is ready, then sleeps until stopped. */
const PROCESS_GUEST = ["/bin/sh", "-c", `echo ${GUEST_READY_LINE}; exec sleep infinity`];

export const DEMO_HELP =
  `Usage: blixard demo [--backend qemu|process] [--keep] [--json] [--timeout MS]

Starts a cluster of ${NODES} nodes on this machine (loopback only, gRPC and Iroh
both, keys and configs generated in a new temporary directory) and boots a
microVM in it with the qemu backend: the host's kernel (Debian's
linux-image-cloud-amd64) and a busybox initramfs built on the fly
(busybox-static). It shows each step, the time from the command to the
booted guest, the cluster's status and VMs, and the commands to try next in
another terminal. Then it waits.

Ctrl-C (SIGINT) or SIGTERM stops the VM through the cluster, then the
nodes, and removes the directory. A second Ctrl-C skips the graceful stop.

Without qemu-system-x86_64, a kernel or a static busybox, it says so and uses
the process backend: a shell that prints the same ready line and sleeps.

Options:
  --backend B    qemu or process: use this one, or fail (default: qemu if it
                 can run here, else process)
  --keep         keep the directory (configs, logs, VM files) at the end
  --timeout MS   how long the cluster and the guest have to get ready
                 (default 180000)
  --json         once ready, print one JSON line with the directory, the
                 nodes, the VM and the boot time (docs/cli.md) instead of the
                 tables`;

/** The parsed options of `blixard demo`. */
interface DemoValues {
  backend?: string;
  keep?: boolean;
  timeout: string;
  json?: boolean;
  help?: boolean;
}

/** Which backend the demo VM runs with, and why. */
interface BackendChoice {
  readonly backend: "qemu" | "process";
  /** Why qemu is not used; absent when it is. */
  readonly fallback?: string;
  readonly guest?: GuestImage;
}

/** What `--json` prints once ready (docs/cli.md). */
interface DemoSummary {
  dir: string;
  operatorKey: string;
  nodes: {
    id: number;
    pid: number;
    grpcAddress: string;
    metricsAddress: string;
    ticket: string;
    dataDir: string;
  }[];
  leaderId: number;
  backend: string;
  fallbackReason: string | null;
  vm: {
    name: string;
    nodeId: number;
    state: string;
    pid: number | null;
    consoleLog: string;
  };
  bootMs: number;
}

/** Lines on stderr, for the steps. */
function say(line: string): void {
  console.error(`demo: ${line}`);
}

/** Runs `blixard demo ...`; resolves once everything is stopped. */
export async function demoCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: DEMO_OPTIONS }) as { values: DemoValues };
  if (values.help) {
    console.log(DEMO_HELP);
    return ExitCode.Ok;
  }
  if (values.backend !== undefined && values.backend !== "qemu" && values.backend !== "process") {
    throw usage("demo", `demo: --backend ${values.backend}: expected "qemu" or "process"`);
  }
  const timeoutMs = parseMs("demo", "timeout", values.timeout);

  // Signals from the start: a Ctrl-C while the cluster starts cleans up too.
  const stopping = new AbortController();
  const forcing = new AbortController();
  const onSignal = () => {
    if (stopping.signal.aborted) forcing.abort();
    stopping.abort();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const dir = await Deno.makeTempDir({ prefix: "blixard-demo-" });
  const demo = new Demo(dir, values, timeoutMs, stopping.signal, forcing.signal);
  let code: number = ExitCode.Ok;
  try {
    await demo.run();
  } catch (e) {
    if (!stopping.signal.aborted) {
      console.error(`blixard: demo: ${e instanceof Error ? e.message : e}`);
      code = e instanceof CliError ? e.exitCode : ExitCode.Failure;
    }
  } finally {
    await demo.cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  return code;
}

/** One run of the demo: what it started, so that cleanup stops exactly that. */
class Demo {
  readonly #dir: string;
  readonly #values: DemoValues;
  readonly #timeoutMs: number;
  readonly #stopping: AbortSignal;
  readonly #forcing: AbortSignal;
  readonly #dialer: Dialer;
  #cluster: LocalCluster | undefined;
  #client: Client<typeof VmService> | undefined;
  #vmCreated = false;

  constructor(
    dir: string,
    values: DemoValues,
    timeoutMs: number,
    stopping: AbortSignal,
    forcing: AbortSignal,
  ) {
    this.#dir = dir;
    this.#values = values;
    this.#timeoutMs = timeoutMs;
    this.#stopping = stopping;
    this.#forcing = forcing;
    this.#dialer = new Dialer("demo", { relay: "disabled" }, 5_000);
  }

  /** Milliseconds left of `--timeout`, counted from the process start. */
  #left(): number {
    return this.#timeoutMs - performance.now();
  }

  /** Throws if the demo is being stopped or its time is up; says which step was late. */
  async #check(step: string): Promise<void> {
    this.#stopping.throwIfAborted();
    const exited = await this.#cluster?.exitedNode();
    if (exited !== undefined) throw new CliError(`${step}: ${exited}`);
    if (this.#left() <= 0) {
      throw new CliError(
        `${step}: not done after ${this.#timeoutMs} ms (--timeout); the node logs are in ${this.#dir}` +
          (this.#values.keep ? "" : " (run again with --keep to keep them)"),
      );
    }
  }

  async run(): Promise<void> {
    const choice = await chooseBackend(this.#values.backend, join(this.#dir, "guest"));
    if (choice.fallback !== undefined) {
      say(`qemu cannot run here: ${choice.fallback}`);
      say("using the process backend instead: a shell that prints the ready line and sleeps");
    } else if (choice.backend === "process") {
      say("process backend (--backend process): a shell that prints the ready line and sleeps");
    } else {
      say(
        `qemu backend: kernel ${choice.guest!.kernel}, busybox initramfs ${choice.guest!.initrd}`,
      );
    }

    const operatorKey = join(this.#dir, "operator_key");
    const { secretKey } = await loadOrCreateSecretKey(operatorKey);
    const cluster = await LocalCluster.create({
      dir: this.#dir,
      size: NODES,
      operatorId: endpointIdOf(secretKey),
      backends: choice.backend === "qemu" ? ["qemu", "process"] : ["process"],
    });
    this.#cluster = cluster;
    say(`starting ${NODES} nodes in ${this.#dir} (configs nodeN.toml, logs nodeN.log)`);
    cluster.start();

    const first = cluster.nodes[0]!;
    const channel = this.#dialer.grpc(first.grpcAddress, undefined).channel;
    const status = createClient(Status, channel);
    const client = createClient(VmDeclaration, channel);
    this.#client = client;
    const leader = await this.#leader(status);
    say(`node ${leader.leaderId} leads (term ${leader.term}) after ${seconds(performance.now())}`);

    const vm = await this.#createVm(client, choice);
    const node = cluster.nodes.find((n) => BigInt(n.id) === vm.status?.nodeId);
    if (node === undefined) {
      throw new CliError(`vm ${DEMO_VM} runs on node ${vm.status?.nodeId}, not one of the demo's`);
    }
    const dir = vmDir(node.dataDir, DEMO_VM);
    const consoleLog = join(dir, choice.backend === "qemu" ? QEMU_FILES.serial : "output.log");
    say(`waiting for the guest's ready line in ${consoleLog}`);
    await this.#readyLine(consoleLog);
    const bootMs = performance.now();
    say(
      `guest booted: ${GUEST_READY_LINE} on its console ${seconds(bootMs)} after the command began`,
    );

    const record = await readRecord(dir).catch(() => undefined);
    const [cluster2, raft, resources, list] = await Promise.all([
      status.getClusterStatus({}, { deadlineMs: 5_000 }),
      status.getRaftStatus({}, { deadlineMs: 5_000 }),
      createClient(Monitoring, channel).getResourceSummary({}, { deadlineMs: 5_000 })
        .catch(() => null),
      client.list({}, { deadlineMs: 5_000 }),
    ]);
    const shown = list.vms.find((v) => v.spec?.name === DEMO_VM) ?? vm;
    if (this.#values.json) {
      const summary: DemoSummary = {
        dir: this.#dir,
        operatorKey,
        nodes: cluster.nodes.map((n) => ({
          id: n.id,
          pid: n.process!.pid,
          grpcAddress: n.grpcAddress,
          metricsAddress: n.metricsAddress,
          ticket: n.ticket,
          dataDir: n.dataDir,
        })),
        leaderId: Number(cluster2.leaderId),
        backend: choice.backend,
        fallbackReason: choice.fallback ?? null,
        vm: {
          name: DEMO_VM,
          nodeId: node.id,
          state: VmState[shown.status?.state ?? VmState.UNSPECIFIED] ?? "UNSPECIFIED",
          pid: record?.pid ?? null,
          consoleLog,
        },
        bootMs: Math.round(bootMs),
      };
      printJson(summary);
    } else {
      console.log(
        `\nblixard demo: ${NODES} nodes and a ${choice.backend} VM, guest booted ${
          seconds(bootMs)
        } after the command\n`,
      );
      printStatus(cluster2, raft, resources);
      console.log("");
      printVmTable(list.vms, Date.now());
      console.log("");
      console.log(this.#nextSteps(cluster.nodes, node, consoleLog, choice, operatorKey));
    }
    say("running; Ctrl-C stops the VM and the nodes");
    await new Promise<void>((resolve) =>
      this.#stopping.aborted
        ? resolve()
        : this.#stopping.addEventListener("abort", () => resolve(), { once: true })
    );
  }

  /** Waits until node 1 knows a leader. */
  async #leader(status: Client<typeof StatusService>): Promise<GetClusterStatusResponse> {
    for (;;) {
      await this.#check("waiting for a leader");
      const answer = await status.getClusterStatus({}, { deadlineMs: 1_000 }).catch(() => null);
      if (answer && answer.leaderId !== 0n) return answer;
      await pause(POLL_MS);
    }
  }

  /** Creates the demo VM and waits until it runs. */
  async #createVm(client: Client<typeof VmService>, choice: BackendChoice): Promise<Vm> {
    const spec = create(VmSpecSchema, { name: DEMO_VM, vcpus: 1, memoryMib: 256n });
    if (choice.backend === "qemu") {
      spec.backend = "qemu";
      spec.kernel = choice.guest!.kernel;
      // A guest stopped before it listens to the power button is quit well within VM_STOP_MS.
      spec.backendOptions = { initrd: choice.guest!.initrd, stop_timeout_ms: `${GUEST_STOP_MS}` };
    } else {
      spec.backend = "process";
      spec.backendOptions = { command: JSON.stringify(PROCESS_GUEST) };
    }
    say(`creating vm ${DEMO_VM} (${choice.backend}, 1 vCPU, 256 MiB)`);
    const retryUntil = performance.now() + CREATE_RETRY_MS;
    let created: Vm | undefined;
    for (;;) {
      await this.#check(`creating vm ${DEMO_VM}`);
      try {
        created = (await client.create({ spec }, { deadlineMs: 10_000 })).vm;
        this.#vmCreated = true;
        break;
      } catch (e) {
        // Right after the election, members may not have announced their capacity yet.
        const later = e instanceof RpcError && (e.code === Code.UNAVAILABLE ||
          e.code === Code.FAILED_PRECONDITION || e.code === Code.RESOURCE_EXHAUSTED);
        if (!later || performance.now() > retryUntil) {
          throw new CliError(
            `the cluster did not create vm ${DEMO_VM}: ${
              e instanceof RpcError ? rpcFailure(e) : e
            }`,
          );
        }
        await pause(250);
      }
    }
    say(`vm ${DEMO_VM} created on node ${created?.status?.nodeId}; waiting until it runs`);
    const result = await waitForVm({
      client,
      name: DEMO_VM,
      goal: "running",
      timeoutMs: Math.max(1, this.#left()),
      startedAt: 0,
      progress: (line) => console.error(line),
      signal: this.#stopping,
    });
    this.#stopping.throwIfAborted();
    if (result.outcome !== "reached" || result.vm === undefined) {
      const state = result.vm ? vmStateLine(result.vm) : "not seen";
      throw new CliError(`vm ${DEMO_VM} is ${state}, not running; node logs in ${this.#dir}`);
    }
    return result.vm;
  }

  /** Waits until `file` holds the guest's ready line. */
  async #readyLine(file: string): Promise<void> {
    for (;;) {
      await this.#check(`waiting for ${GUEST_READY_LINE} in ${file}`);
      const text = await Deno.readTextFile(file).catch(() => "");
      if (text.includes(GUEST_READY_LINE)) return;
      await pause(POLL_MS);
    }
  }

  /** What to try in another terminal, with this cluster's real addresses. */
  #nextSteps(
    nodes: readonly LocalNode[],
    vmNode: LocalNode,
    consoleLog: string,
    choice: BackendChoice,
    operatorKey: string,
  ): string {
    const b = selfInvocation();
    const addr = `--addr ${nodes[0]!.grpcAddress}`;
    const other = nodes.find((n) => n.id !== nodes[0]!.id) ?? nodes[0]!;
    const second = choice.backend === "qemu"
      ? `${b} vm create web --kernel ${choice.guest!.kernel} --initrd ${
        choice.guest!.initrd
      } ${addr}`
      : `${b} vm create web ${addr} -- /bin/sleep 600`;
    return [
      "Try, in another terminal:",
      `  ${b} status ${addr}`,
      `  ${b} vm list ${addr}`,
      `  ${b} vm get ${DEMO_VM} ${addr}`,
      `  ${b} vm watch --existing ${addr}`,
      `  ${second}`,
      `  ${b} vm stop ${DEMO_VM} ${addr}`,
      `  ${b} vm start ${DEMO_VM} ${addr}`,
      `  ${b} status --ticket ${other.ticket} --key ${operatorKey}    # over Iroh`,
      `  curl -s http://${nodes[0]!.metricsAddress}/readyz    # and /metrics, /healthz`,
      `  tail -f ${consoleLog}    # vm ${DEMO_VM}'s console, on node ${vmNode.id}`,
      "",
      `Files: ${this.#dir} (nodeN.toml, nodeN.log, data in nodeN/)`,
      `Ctrl-C stops the VM and the nodes and ${
        this.#values.keep ? "keeps" : "removes"
      } that directory.`,
    ].join("\n");
  }

  /**
   * Stops what the run started: the VM through the cluster (skipped by a
   * second signal), the nodes, any VM process still running after them (by
   * its recorded pid and start time), and the directory unless `--keep`.
   */
  async cleanup(): Promise<void> {
    const cluster = this.#cluster;
    if (cluster !== undefined && this.#client !== undefined && this.#vmCreated) {
      await this.#stopVm(this.#client);
    }
    if (cluster !== undefined) {
      say(`stopping ${NODES} nodes`);
      await cluster.stop();
      for (const n of cluster.nodes) {
        const { handles } = await listRecords(n.dataDir).catch(() => ({ handles: [] }));
        for (const handle of handles) {
          // Only a VM the cluster did not stop gets here; killAndWait checks it is the same process.
          await killAndWait(handle, "demo cleanup", 5_000).catch((e) =>
            say(`could not stop vm ${handle.name}'s process ${handle.pid}: ${e.message}`)
          );
        }
      }
    }
    await this.#dialer.close();
    if (this.#values.keep) {
      say(`kept ${this.#dir}`);
    } else {
      await Deno.remove(this.#dir, { recursive: true }).catch((e) =>
        say(`could not remove ${this.#dir}: ${e.message}`)
      );
      say(`removed ${this.#dir}`);
    }
  }

  /** Stops the demo VM through the cluster, gracefully, within {@link VM_STOP_MS}. */
  async #stopVm(client: Client<typeof VmService>): Promise<void> {
    if (this.#forcing.aborted || (await this.#cluster?.exitedNode()) !== undefined) return;
    say(`stopping vm ${DEMO_VM}`);
    const startedAt = performance.now();
    try {
      const result = await waitForVm({
        client,
        name: DEMO_VM,
        goal: "stopped",
        change: () => client.stop({ name: DEMO_VM, force: false }, { deadlineMs: 5_000 }),
        timeoutMs: VM_STOP_MS,
        startedAt,
        progress: (line) => console.error(line),
        signal: this.#forcing,
      });
      if (result.outcome !== "reached") {
        say(`vm ${DEMO_VM} did not stop (${result.outcome}); its process is killed instead`);
      }
    } catch (e) {
      say(`could not stop vm ${DEMO_VM}: ${e instanceof Error ? e.message : e}`);
    }
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A program on PATH, or undefined. */
async function onPath(program: string): Promise<string | undefined> {
  for (const d of (Deno.env.get("PATH") ?? "").split(":")) {
    if (d === "") continue;
    const path = join(d, program);
    const info = await Deno.stat(path).catch(() => undefined);
    if (info?.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
  }
  return undefined;
}

/**
 * qemu when it can run here (qemu-system-x86_64 on PATH, a kernel, a static
 * busybox to build the guest from), else the process backend with the
 * reason; `wanted` forces one (qemu then fails rather than fall back).
 */
async function chooseBackend(wanted: string | undefined, guestDir: string): Promise<BackendChoice> {
  if (wanted === "process") return { backend: "process" };
  let why: string;
  if (await onPath("qemu-system-x86_64") === undefined) {
    why = "no qemu-system-x86_64 on PATH (apt-get install qemu-system-x86)";
  } else {
    try {
      return { backend: "qemu", guest: await buildGuest({ outDir: guestDir }) };
    } catch (e) {
      why = e instanceof Error ? e.message : String(e);
    }
  }
  if (wanted === "qemu") throw new CliError(`--backend qemu: ${why}`);
  return { backend: "process", fallback: why };
}
