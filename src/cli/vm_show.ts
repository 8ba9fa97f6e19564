/**
 * How VMs read on a terminal: state names, the `vm get` block, the `vm list`
 * table, one line per `vm watch` event, and short ages.
 *
 * Owns: the human forms of `Vm`, `VmEvent` and `VmState` for the vm
 * commands, `status` and `demo` (docs/cli.md). Imports the generated VM
 * messages, the spec's option readers and this folder's table printer.
 *
 * @module
 */

import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Vm,
  VmDesiredState,
  type VmEvent,
  VmEventKind,
  VmState,
} from "../rpc/gen/blixard/v1/vm_pb.ts";
import { restartPolicyOf } from "../vm/spec.ts";
import { printTable } from "./call.ts";
import { formatDuration } from "./common.ts";

/** `RUNNING`, `FAILED`, ...: a state as docs/vm.md names it. */
export function stateName(state: VmState): string {
  return VmState[state] ?? `STATE_${state}`;
}

/** The states `--state` accepts, lowercase, in the order the proto lists them. */
export const STATE_NAMES: readonly string[] = Object.values(VmState)
  .filter((v): v is VmState => typeof v === "number" && v !== VmState.UNSPECIFIED)
  .map((s) => stateName(s).toLowerCase());

/** The state named `text` (any case, with or without `VM_STATE_`), or undefined. */
export function parseState(text: string): VmState | undefined {
  const key = text.toUpperCase().replace(/^VM_STATE_/, "");
  const value = (VmState as unknown as Record<string, unknown>)[key];
  return typeof value === "number" && value !== VmState.UNSPECIFIED ? value : undefined;
}

/** `running`, `stopped`: what the operator asked for. */
export function desiredName(desired: VmDesiredState): string {
  return desired === VmDesiredState.STOPPED ? "stopped" : "running";
}

/** `created`, `status`, ...: an event's kind in a watch line. */
export function eventKindName(kind: VmEventKind): string {
  switch (kind) {
    case VmEventKind.EXISTING:
      return "existing";
    case VmEventKind.CREATED:
      return "created";
    case VmEventKind.SPEC_CHANGED:
      return "spec";
    case VmEventKind.STATUS_CHANGED:
      return "status";
    case VmEventKind.DELETED:
      return "deleted";
    default:
      return `kind${kind}`;
  }
}

/** Milliseconds since the epoch of `t`, or undefined when unset. */
export function msOf(t: Timestamp | undefined): number | undefined {
  return t === undefined ? undefined : timestampMs(t);
}

/** `42s`, `12m`, `3h`, `5d`: one unit, for tables. */
export function shortAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** `node 2`, or `no node` while unplaced. */
export function nodeName(id: bigint): string {
  return id === 0n ? "no node" : `node ${id}`;
}

/** `RUNNING on node 2`, with `: reason` when there is one. */
export function vmStateLine(vm: Vm): string {
  const status = vm.status;
  const state = stateName(status?.state ?? VmState.UNSPECIFIED);
  const reason = status?.exitReason ? `: ${status.exitReason}` : "";
  return `${state} on ${nodeName(status?.nodeId ?? 0n)}${reason}`;
}

/** `2026-12-03T10:02:03.123Z (3m 2s ago)`, or `-`. */
function when(t: Timestamp | undefined, nowMs: number): string {
  const ms = msOf(t);
  if (ms === undefined || ms === 0) return "-";
  return `${new Date(ms).toISOString()} (${formatDuration(Math.max(0, nowMs - ms))} ago)`;
}

/** The `vm get` block: every field of the spec and the status, one a line. */
export function printVm(vm: Vm, nowMs: number): void {
  const spec = vm.spec;
  const status = vm.status;
  if (spec === undefined) {
    console.log("(a VM without a spec)");
    return;
  }
  const { restart: _r, command, initrd, cmdline, ...others } = spec.backendOptions;
  const rows: [string, string][] = [
    ["state", vmStateLine(vm)],
    ["desired", desiredName(spec.desiredState)],
    ["backend", spec.backend],
    ["vcpus", `${spec.vcpus}`],
    ["memory", `${spec.memoryMib} MiB`],
  ];
  if (spec.kernel) rows.push(["kernel", spec.kernel]);
  if (initrd !== undefined) rows.push(["initrd", initrd]);
  if (cmdline !== undefined) rows.push(["cmdline", cmdline]);
  if (spec.image) rows.push(["image", spec.image]);
  if (command !== undefined) rows.push(["command", command]);
  rows.push(["restart", restartPolicyOf(spec)]);
  const options = Object.entries(others).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  if (options.length > 0) rows.push(["options", options.map(([k, v]) => `${k}=${v}`).join(" ")]);
  const labels = Object.entries(spec.labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  if (labels.length > 0) rows.push(["labels", labels.map(([k, v]) => `${k}=${v}`).join(" ")]);
  rows.push(["pinned", spec.nodeId === 0n ? "no (placed by the cluster)" : `node ${spec.nodeId}`]);
  rows.push(["created", when(status?.createdAt, nowMs)]);
  rows.push(["state since", when(status?.stateChangedAt, nowMs)]);
  rows.push(["started", when(status?.startedAt, nowMs)]);
  console.log(`vm ${spec.name}`);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`  ${`${k}:`.padEnd(width + 1)}  ${v}`);
}

/** The `vm list` table, one row a VM. */
export function printVmTable(vms: readonly Vm[], nowMs: number): void {
  const rows = vms.map((vm) => {
    const spec = vm.spec;
    const status = vm.status;
    return [
      spec?.name ?? "?",
      stateName(status?.state ?? VmState.UNSPECIFIED),
      status?.nodeId ? `${status.nodeId}` : "-",
      `${spec?.vcpus ?? 0}`,
      `${spec?.memoryMib ?? 0n} MiB`,
      spec?.backend || "-",
      shortAge(nowMs - (msOf(status?.createdAt) ?? nowMs)),
      status?.exitReason ?? "",
    ];
  });
  printTable(["NAME", "STATE", "NODE", "VCPUS", "MEMORY", "BACKEND", "AGE", "REASON"], rows);
}

/**
 * One `vm watch` line:
 * `2026-12-03T10:02:03.123Z  #41  web  status  RUNNING on node 2`.
 */
export function eventLine(event: VmEvent): string {
  const time = msOf(event.time);
  const at = time === undefined ? "-" : new Date(time).toISOString();
  const name = event.vm?.spec?.name ?? "?";
  const what = event.kind === VmEventKind.SPEC_CHANGED
    ? `desired ${desiredName(event.vm?.spec?.desiredState ?? VmDesiredState.UNSPECIFIED)}, ` +
      (event.vm ? vmStateLine(event.vm) : "")
    : event.vm
    ? vmStateLine(event.vm)
    : "";
  return `${at}  #${event.index}  ${name}  ${eventKindName(event.kind)}  ${what}`;
}
