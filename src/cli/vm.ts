/**
 * `blixard vm create|start|stop|delete|get|list|watch`: the cluster's VMs
 * (proto/blixard/v1/vm.proto) from the command line.
 *
 * Owns: the vm subcommands, their help and output (human and JSON,
 * docs/cli.md), and what a refused change tells the operator. Imports the Vm
 * service declaration and messages, and this folder's target, common, spec,
 * wait and formatting modules.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { createClient } from "../rpc/client.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import type { Client } from "../rpc/services.ts";
import { Vm as VmDeclaration } from "../rpc/services.ts";
import {
  ListVmsResponseSchema,
  type Vm,
  VmDesiredState,
  VmEventSchema,
  VmSchema,
  type VmService,
  type VmSpec,
  type VmState,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import {
  CliError,
  ExitCode,
  type OptionSpecs,
  printJson,
  type Subcommand,
  usage,
  withSubcommands,
} from "./common.ts";
import {
  callFailed,
  type ClientRun,
  clientSubcommand,
  protoJson,
  type Target,
  TARGET_OPTIONS,
  targetHelp,
  type TargetValues,
} from "./target.ts";
import {
  CREATE_SPEC_OPTIONS,
  type CreateSpecValues,
  DEFAULT_MEMORY_MIB,
  specOf,
} from "./vm_args.ts";
import { resumingWatch, seconds, type VmGoal, waitForVm } from "./vm_wait.ts";
import {
  eventLine,
  nodeName,
  parseState,
  printVm,
  printVmTable,
  STATE_NAMES,
  vmStateLine,
} from "./vm_show.ts";

/** How long the vm commands that wait wait, by default, ms. */
export const DEFAULT_WAIT_MS = 60_000;
/** The longest one call may take, ms, whatever the command's own timeout. */
const CALL_MS = 30_000;

const BASE_OPTIONS = {
  ...TARGET_OPTIONS,
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const READ_OPTIONS = { ...BASE_OPTIONS, timeout: { type: "string", default: "5000" } } as const;

const WAIT_OPTIONS = {
  ...BASE_OPTIONS,
  timeout: { type: "string", default: `${DEFAULT_WAIT_MS}` },
  wait: { type: "boolean" },
  "no-wait": { type: "boolean" },
} as const;

const CREATE_OPTIONS = { ...WAIT_OPTIONS, ...CREATE_SPEC_OPTIONS } as const;
const START_OPTIONS = WAIT_OPTIONS;
const STOP_OPTIONS = { ...WAIT_OPTIONS, force: { type: "boolean" } } as const;
const DELETE_OPTIONS = { ...BASE_OPTIONS, timeout: { type: "string", default: "10000" } } as const;
const GET_OPTIONS = READ_OPTIONS;
const LIST_OPTIONS = {
  ...READ_OPTIONS,
  node: { type: "string" },
  state: { type: "string" },
} as const;
const WATCH_OPTIONS = {
  ...BASE_OPTIONS,
  timeout: { type: "string" },
  node: { type: "string" },
  from: { type: "string" },
  existing: { type: "boolean" },
} as const;

const TARGET_HELP = (timeout: string) => targetHelp("any member", timeout, "Reaching the cluster:");

const WAIT_HELP = `  --no-wait      return once the cluster has committed the change (--wait,
                 the default, waits as said above)
  --json         print the VM (a Vm in proto3 JSON, docs/cli.md) as the wait
                 ended, or as the cluster answered with --no-wait`;

const CREATE_HELP = `Usage: blixard vm create NAME [options] (--ticket T | --addr A)
       blixard vm create NAME [options] (--ticket T | --addr A) -- ARGV...
       blixard vm create [NAME] --spec FILE (--ticket T | --addr A) [options]

Creates VM NAME. The cluster places it on a node that runs its backend and
has room for it (or the node of --node), and that node starts it. The
command waits until it runs, printing each state it passes through on stderr
with the time since the command began, then its final state. The spec is
checked here first, with the rules every node applies: a bad one is refused
(exit status 2) naming the field and the option.

The VM:
  --vcpus N        vCPUs (default 1)
  --memory MIB     memory in MiB, or with a unit: 512M, 2G (default ${DEFAULT_MEMORY_MIB})
  --backend B      qemu or process; the default is process when a command is
                   given, else qemu. Its node must list it in [vm] backends
  --kernel PATH    qemu: the kernel to boot (required)
  --initrd PATH    qemu: its initramfs
  --cmdline S      qemu: the kernel command line (default
                   "console=ttyS0 reboot=t panic=-1")
  --image PATH     qemu: a root disk image, the guest's /dev/vda
  --command C      process: what to run, as a JSON array
                   ('["/usr/bin/sleep","600"]') or words split at spaces;
                   or give the argv (ARGV...) after --
  --option K=V     a backend option (docs/vm.md); repeat for more
  --restart P      never, on-failure (default) or always: what happens when
                   the VM ends while it should run
  --label K=V      a label of the operator's (team=web), shown by 'vm get';
                   repeat for more
  --node N         pin the VM to node N
  --stopped        create it stopped ('blixard vm start NAME' starts it);
                   nothing to wait for
  --spec FILE      the whole VmSpec in proto3 JSON (- for stdin) instead of
                   the options above; NAME, if given, fills in its name

A relative path is made absolute against the current directory: paths name
files on the node that runs the VM.

Waiting:
${WAIT_HELP}

Exit status 1 when the cluster refuses the VM, or the VM fails, stops or is
lost before it runs, or does not run within --timeout (the cluster goes on
trying: 'blixard vm watch NAME' follows it).

${TARGET_HELP(`how long to wait until it runs (default ${DEFAULT_WAIT_MS})`)}`;

const START_HELP = `Usage: blixard vm start NAME (--ticket T | --addr A) [options]

Sets VM NAME's desired state to running and waits until its node runs it,
printing each state on stderr, then the final one. A VM that runs already
stays as it is; one that failed or stopped is started again, whatever its
restart policy.

Options:
${WAIT_HELP}

Exit status 1 when NAME does not exist, or the VM fails, stops or is lost
before it runs, or does not run within --timeout.

${TARGET_HELP(`how long to wait until it runs (default ${DEFAULT_WAIT_MS})`)}`;

const STOP_HELP = `Usage: blixard vm stop NAME [--force] (--ticket T | --addr A) [options]

Sets VM NAME's desired state to stopped and waits until its node has
stopped it, printing each state on stderr, then the final one. A graceful
stop asks the guest to shut down (qemu: the ACPI power button; process:
SIGTERM) and forces it off after its stop_timeout_ms option (default 30000).

Options:
  --force        kill it at once (SIGKILL) instead
${WAIT_HELP}

Exit status 1 when NAME does not exist, or the VM fails or is lost instead
of stopping, or has not stopped within --timeout.

${TARGET_HELP(`how long to wait until it stopped (default ${DEFAULT_WAIT_MS})`)}`;

const DELETE_HELP = `Usage: blixard vm delete NAME (--ticket T | --addr A) [options]

Removes VM NAME from the cluster, and returns once the removal is committed.
Its node then stops it (gracefully, as 'vm stop' does) and removes its
directory. Exit status 1 when NAME does not exist.

Options:
  --json         print {"name": NAME} once deleted (docs/cli.md)

${TARGET_HELP("how long to wait for the answer (default 10000)")}`;

const GET_HELP = `Usage: blixard vm get NAME (--ticket T | --addr A) [options]

Prints VM NAME: its state and node (and why it stopped or failed), what was
asked for (desired state, backend, vCPUs, memory, kernel, options), and when
it was created, last changed state and last started. The read is
linearizable. Exit status 1 when NAME does not exist.

Options:
  --json         print the Vm in proto3 JSON (docs/cli.md)

${TARGET_HELP("how long to wait for the answer (default 5000)")}`;

const LIST_HELP = `Usage: blixard vm list [--node N] [--state S] (--ticket T | --addr A) [options]

Prints the cluster's VMs, by name: NAME, STATE, NODE, VCPUS, MEMORY,
BACKEND, AGE (since it was created) and REASON (why it last stopped or
failed). The read is linearizable.

Options:
  --node N       only the VMs placed on node N
  --state S      only the VMs in state S: ${STATE_NAMES.slice(0, 4).join(", ")},
                 ${STATE_NAMES.slice(4).join(", ")}
  --json         print the ListVmsResponse in proto3 JSON (docs/cli.md)

${TARGET_HELP("how long to wait for the answer (default 5000)")}`;

const WATCH_HELP = `Usage: blixard vm watch [NAME] [--node N] [--existing] [--from REV]
                        (--ticket T | --addr A) [options]

Prints the cluster's VM changes as they happen, one line each: when, the
revision (#REV: the Raft log index of the change), the VM, what changed
(created, spec, status, deleted) and its state and node afterwards. Runs
until Ctrl-C (exit status 0), --timeout, or the member stops answering
(exit status 1).

Options:
  --node N       only the VMs placed on node N
  --existing     first one line per VM as it is now (existing)
  --from REV     first the changes after revision REV (the #REV of the last
                 line seen), then the new ones; the cluster keeps the last
                 10000 changes, and an older REV fails: use --existing
  --json         one VmEvent a line, in proto3 JSON (docs/cli.md)

${TARGET_HELP("stop watching after MS (default: until Ctrl-C)")}`;

const HELP = `Usage: blixard vm create|start|stop|delete|get|list|watch ... (--ticket T | --addr A)

The cluster's microVMs. Any member answers: changes are committed through
Raft on the leader, which places new VMs; each VM's node starts and stops
it. Changes need an operator key (Iroh) or, over gRPC, mutual TLS or a
plaintext listener on loopback.

Commands:
  create NAME   create a VM and wait until it runs
  start NAME    start a VM and wait until it runs
  stop NAME     stop a VM and wait until it stopped
  delete NAME   remove a VM (its node stops it)
  get NAME      a VM's state and spec
  list          every VM: state, node, size, backend
  watch [NAME]  follow the changes, as they happen

'blixard vm COMMAND -h' for a command's options.`;

/** The parsed options of any vm subcommand (each has a subset). */
interface VmValues extends TargetValues, CreateSpecValues {
  timeout?: string;
  json?: boolean;
  help?: boolean;
  wait?: boolean;
  "no-wait"?: boolean;
  force?: boolean;
  state?: string;
  from?: string;
  existing?: boolean;
}

/** What a vm subcommand runs with. */
interface Run extends ClientRun<VmValues> {
  readonly target: Target;
  readonly client: Client<typeof VmService>;
  /** `performance.now()` when the command began. */
  readonly startedAt: number;
  /** create: the checked spec. */
  readonly spec?: VmSpec;
  /** list and watch: `--node`, `--state`, `--from`, checked. */
  readonly filters: Filters;
}

/** The checked filters of list and watch. */
interface Filters {
  readonly nodeId?: bigint;
  readonly state?: VmState;
  readonly fromRevision?: bigint;
}

/** `blixard vm`. */
export const VM_COMMAND = withSubcommands("vm", HELP, {
  create: subcommand("create", CREATE_HELP, CREATE_OPTIONS, createCommand),
  start: subcommand("start", START_HELP, START_OPTIONS, (r) => changeCommand(r, "running")),
  stop: subcommand("stop", STOP_HELP, STOP_OPTIONS, (r) => changeCommand(r, "stopped")),
  delete: subcommand("delete", DELETE_HELP, DELETE_OPTIONS, deleteCommand),
  get: subcommand("get", GET_HELP, GET_OPTIONS, getCommand),
  list: subcommand("list", LIST_HELP, LIST_OPTIONS, listCommand),
  watch: subcommand("watch", WATCH_HELP, WATCH_OPTIONS, watchCommand),
});

/** The positionals each subcommand takes: [at least, at most]. */
const ARITY: Readonly<Record<string, readonly [number, number]>> = {
  create: [0, 1],
  start: [1, 1],
  stop: [1, 1],
  delete: [1, 1],
  get: [1, 1],
  list: [0, 0],
  watch: [0, 1],
};

function subcommand(
  sub: string,
  help: string,
  options: OptionSpecs,
  run: (r: Run) => Promise<number>,
): Subcommand {
  const name = `vm ${sub}`;
  return clientSubcommand<VmValues>(name, help, options, true, async (r) => {
    const startedAt = performance.now();
    const [min, max] = ARITY[sub]!;
    const own = r.positionals.slice(0, r.beforeTerminator);
    // Only create takes arguments after --: the command of a process VM.
    if (sub !== "create" && own.length < r.positionals.length) {
      throw usage(
        name,
        `${name}: unexpected argument ${JSON.stringify(r.positionals[own.length])}`,
      );
    }
    if (own.length > max) {
      throw usage(name, `${name}: unexpected argument ${JSON.stringify(own[max])}`);
    }
    if (own.length < min) throw usage(name, `${name}: NAME is required`);
    if (r.values.wait && r.values["no-wait"]) {
      throw usage(name, `${name}: --wait and --no-wait cannot both be given`);
    }
    // A bad spec is refused before any node is called, or a target even asked for.
    const spec = sub === "create"
      ? (await specOf(name, r.values, own[0], r.positionals.slice(r.beforeTerminator))).spec
      : undefined;
    const filters = filtersOf(name, r.values);
    const target = await r.dialer.member();
    const client = createClient(VmDeclaration, target.channel);
    return await run({ ...r, target, client, startedAt, filters, ...(spec ? { spec } : {}) });
  });
}

/**
 * A failed call as the operator reads it. A refused change needs no advice
 * of ours: the node says what would allow it, and over Iroh callFailed adds
 * the endpoint id to list.
 */
function failed(r: Run, what: string, e: unknown): unknown {
  return callFailed(`${r.name}: ${what}`, e, r.target);
}

/** What is left of the command's time for one call, ms. */
function callMs(r: Run): number {
  const left = r.timeoutMs - (performance.now() - r.startedAt);
  return Math.max(1, Math.min(CALL_MS, Math.round(left)));
}

/** A vm subcommand's NAME (already checked to be there). */
function nameOf(r: Run): string {
  return r.positionals[0]!;
}

async function createCommand(r: Run): Promise<number> {
  const spec = r.spec!;
  const name = spec.name;
  let vm: Vm | undefined;
  try {
    vm = (await r.client.create({ spec }, { deadlineMs: callMs(r) })).vm;
  } catch (e) {
    throw failed(r, `the cluster did not create vm ${JSON.stringify(name)}`, e);
  }
  const placed = vm ? ` on ${nodeName(vm.status?.nodeId ?? 0n)}` : "";
  if (r.values["no-wait"] || spec.desiredState === VmDesiredState.STOPPED) {
    if (r.values.json) printJson(protoJson(VmSchema, vm!));
    else console.log(`vm ${name} created${placed}: ${vm ? vmStateLine(vm) : "?"}`);
    return ExitCode.Ok;
  }
  console.error(`vm ${name} created${placed}; waiting until it runs`);
  return await waitAndReport(r, name, "running");
}

async function changeCommand(r: Run, goal: VmGoal): Promise<number> {
  const name = nameOf(r);
  const verb = goal === "running" ? "start" : "stop";
  const change = () =>
    (goal === "running"
      ? r.client.start({ name }, { deadlineMs: callMs(r) })
      : r.client.stop({ name, force: r.values.force ?? false }, { deadlineMs: callMs(r) }))
      .catch((e) => {
        throw failed(r, `the cluster did not ${verb} vm ${JSON.stringify(name)}`, e);
      });
  if (r.values["no-wait"]) {
    const res = await change();
    if (r.values.json) printJson(protoJson(VmSchema, res.vm!));
    else console.log(`vm ${name}: desired ${goal}; ${res.vm ? vmStateLine(res.vm) : "?"}`);
    return ExitCode.Ok;
  }
  // NOT_FOUND before anything is watched: a watch of a VM that does not exist shows nothing.
  try {
    await r.client.get({ name }, { deadlineMs: callMs(r) });
  } catch (e) {
    throw failed(r, `cannot ${verb} vm ${JSON.stringify(name)}`, e);
  }
  return await waitAndReport(r, name, goal, change);
}

/** Waits for `goal` (making `change` first, if given) and prints how it ended. */
async function waitAndReport(
  r: Run,
  name: string,
  goal: VmGoal,
  change?: () => Promise<unknown>,
): Promise<number> {
  const left = Math.max(1, r.timeoutMs - (performance.now() - r.startedAt));
  let result;
  try {
    result = await waitForVm({
      client: r.client,
      name,
      goal,
      ...(change ? { change } : {}),
      timeoutMs: left,
      startedAt: r.startedAt,
      progress: (line) => console.error(line),
    });
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw failed(r, `lost track of vm ${JSON.stringify(name)}`, e);
  }
  const { outcome, vm, elapsedMs } = result;
  if (r.values.json && vm) printJson(protoJson(VmSchema, vm));
  const state = vm ? vmStateLine(vm) : "not seen";
  if (outcome === "reached") {
    if (!r.values.json) console.log(`vm ${name}: ${state} (${seconds(elapsedMs)})`);
    return ExitCode.Ok;
  }
  if (outcome === "timeout") {
    console.error(
      `blixard: ${r.name}: vm ${name} is ${state} after ${seconds(elapsedMs)}, not ${goal} ` +
        `(--timeout ${r.timeoutMs}); the cluster goes on: 'blixard vm watch ${name}' follows it`,
    );
    return ExitCode.Failure;
  }
  console.error(`blixard: ${r.name}: vm ${name} is ${state}, not ${goal} (${seconds(elapsedMs)})`);
  return ExitCode.Failure;
}

async function deleteCommand(r: Run): Promise<number> {
  const name = nameOf(r);
  try {
    await r.client.delete({ name }, { deadlineMs: r.timeoutMs });
  } catch (e) {
    throw failed(r, `the cluster did not delete vm ${JSON.stringify(name)}`, e);
  }
  if (r.values.json) printJson({ name });
  else console.log(`vm ${name} deleted; its node stops it and removes its directory`);
  return ExitCode.Ok;
}

async function getCommand(r: Run): Promise<number> {
  const name = nameOf(r);
  let vm: Vm | undefined;
  try {
    vm = (await r.client.get({ name }, { deadlineMs: r.timeoutMs })).vm;
  } catch (e) {
    throw failed(r, `cannot get vm ${JSON.stringify(name)}`, e);
  }
  if (!vm) throw new CliError(`${r.name}: the member answered without vm ${JSON.stringify(name)}`);
  if (r.values.json) printJson(protoJson(VmSchema, vm));
  else printVm(vm, Date.now());
  return ExitCode.Ok;
}

/** `--node`, `--state` and `--from`, each checked (usage errors). */
function filtersOf(name: string, values: VmValues): Filters {
  const { node, state, from } = values;
  const filters: { -readonly [K in keyof Filters]: Filters[K] } = {};
  if (node !== undefined) {
    if (!/^\d{1,16}$/.test(node) || Number(node) < 1 || Number(node) > Number.MAX_SAFE_INTEGER) {
      throw usage(name, `${name}: --node ${node}: expected a node id, 1 to 2^53-1`);
    }
    filters.nodeId = BigInt(node);
  }
  if (state !== undefined) {
    filters.state = parseState(state);
    if (filters.state === undefined) {
      throw usage(name, `${name}: --state ${state}: expected ${STATE_NAMES.join(", ")}`);
    }
  }
  if (from !== undefined) {
    if (!/^\d{1,16}$/.test(from) || Number(from) > Number.MAX_SAFE_INTEGER) {
      throw usage(name, `${name}: --from ${from}: expected a revision, 0 to 2^53-1`);
    }
    filters.fromRevision = BigInt(from);
  }
  return filters;
}

async function listCommand(r: Run): Promise<number> {
  const { nodeId, state } = r.filters;
  // The cluster answers in pages (at most 1000 VMs or 4 MiB each); this shows them all.
  const vms: Vm[] = [];
  let pageToken = "";
  do {
    let page;
    try {
      page = await r.client.list({
        ...(nodeId !== undefined ? { nodeId } : {}),
        ...(state !== undefined ? { state } : {}),
        pageToken,
      }, { deadlineMs: r.timeoutMs });
    } catch (e) {
      throw failed(r, "cannot list VMs", e);
    }
    vms.push(...page.vms);
    // A token that does not move on would never end: the cluster orders by name.
    if (page.nextPageToken !== "" && page.nextPageToken <= pageToken) {
      throw new CliError(`${r.name}: the member's pages do not move on (${page.nextPageToken})`);
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  const res = create(ListVmsResponseSchema, { vms });
  if (r.values.json) {
    printJson(protoJson(ListVmsResponseSchema, res));
    return ExitCode.Ok;
  }
  if (res.vms.length === 0) {
    console.error(nodeId === undefined && state === undefined ? "no VMs" : "no VMs match");
    return ExitCode.Ok;
  }
  printVmTable(res.vms, Date.now());
  return ExitCode.Ok;
}

async function watchCommand(r: Run): Promise<number> {
  const { nodeId, fromRevision } = r.filters;
  const abort = new AbortController();
  let interrupted = false;
  const stop = () => {
    interrupted = true;
    abort.abort();
  };
  const timer = Number.isFinite(r.timeoutMs) ? setTimeout(stop, r.timeoutMs) : undefined;
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const request = {
    name: r.positionals[0] ?? "",
    ...(nodeId !== undefined ? { nodeId } : {}),
    includeExisting: r.values.existing ?? false,
    fromRevision: fromRevision ?? 0n,
  };
  let lastRevision = request.fromRevision;
  try {
    const events = resumingWatch(r.client, request, abort.signal, {
      // Not faster than once a second, whatever the member's deadline. A node ends a watch at
      // its longest deadline, or cannot serve it for a moment (no leader confirmed its read).
      minIntervalMs: 1_000,
      onResume: (e) => {
        if (e.code === Code.UNAVAILABLE) console.error(`${r.name}: ${e.message}; watching again`);
      },
    });
    for await (const event of events) {
      if (r.values.json) printJson(protoJson(VmEventSchema, event));
      else console.log(eventLine(event));
      if (event.index > lastRevision) lastRevision = event.index;
    }
    if (interrupted) return ExitCode.Ok;
    throw new CliError(`${r.name}: the member ended the watch`);
  } catch (e) {
    if (interrupted) return ExitCode.Ok;
    if (e instanceof RpcError && e.code === Code.OUT_OF_RANGE) {
      throw new CliError(
        `${r.name}: ${e.message}\n  the cluster no longer has the changes after revision ` +
          `${lastRevision}: start again with --existing`,
      );
    }
    throw failed(r, "the watch ended", e);
  } finally {
    clearTimeout(timer);
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}
