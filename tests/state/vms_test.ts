/**
 * VMs in the replicated cluster state: created where the proposer placed
 * them, started and stopped by generation, reported by their node only,
 * moved off a lost node or marked lost, deleted; and the event history that
 * WatchEvents resumes from, kept across snapshots and bounded.
 */

import { create } from "@bufbuild/protobuf";
import { assert, assertEquals } from "../assert.ts";
import {
  VmDesiredState,
  VmEventKind,
  VmSpecSchema,
  VmState,
} from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { ClusterState, type Command, encodeCommand } from "../../src/state/cluster_state.ts";
import { VM_EVENT_HISTORY } from "../../src/state/vms.ts";

const spec = (name: string) =>
  create(VmSpecSchema, {
    name,
    vcpus: 1,
    memoryMib: 64n,
    backend: "process",
    backendOptions: { command: '["/bin/sleep","60"]' },
  });

function apply(s: ClusterState, c: Command) {
  return s.apply(s.appliedIndex + 1, encodeCommand(c));
}

Deno.test("a VM is created where the proposer placed it, PENDING and desired running", () => {
  const s = new ClusterState();
  const r = apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 2, atMs: 1_000 });
  assert(r.ok && r.kind === "vm");
  assertEquals(r.vm.status?.state, VmState.PENDING);
  assertEquals(r.vm.status?.nodeId, 2n);
  assertEquals(r.vm.spec?.desiredState, VmDesiredState.RUNNING);
  assertEquals(s.vmEventsAfter(0)!.map((e) => e.kind), [VmEventKind.CREATED]);
});

Deno.test("a second VM of the same name, or an invalid spec, is refused and changes nothing", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 1, atMs: 1 });
  const again = apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 2, atMs: 2 });
  assertEquals(again.ok ? "" : again.code, "ALREADY_EXISTS");
  const bad = apply(s, {
    kind: "vm_create",
    spec: { ...spec("Bad_Name"), vcpus: 0 },
    nodeId: 1,
    atMs: 3,
  });
  assert(!bad.ok && bad.code === "INVALID_ARGUMENT");
  assert(bad.message.includes("name") && bad.message.includes("vcpus"), bad.message);
  assertEquals(s.vms().map((v) => v.vm?.spec?.name), ["web"]);
});

Deno.test("Start and Stop set the desired state and a new generation; force is remembered", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 1, atMs: 1 });
  apply(s, {
    kind: "vm_desired",
    name: "web",
    desiredState: VmDesiredState.STOPPED,
    force: true,
    atMs: 2,
  });
  assertEquals(s.vm("web")?.generation, 2n);
  assertEquals(s.vm("web")?.forceStop, true);
  apply(s, {
    kind: "vm_desired",
    name: "web",
    desiredState: VmDesiredState.RUNNING,
    force: false,
    atMs: 3,
  });
  assertEquals(s.vm("web")?.generation, 3n);
  assertEquals(s.vm("web")?.vm?.spec?.desiredState, VmDesiredState.RUNNING);
  const missing = apply(s, {
    kind: "vm_desired",
    name: "nope",
    desiredState: 1,
    force: false,
    atMs: 4,
  });
  assertEquals(missing.ok ? "" : missing.code, "NOT_FOUND");
});

Deno.test("only the node a VM is placed on reports its state; a late report from elsewhere changes nothing", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 2, atMs: 1 });
  apply(s, {
    kind: "vm_report",
    name: "web",
    nodeId: 2,
    state: VmState.RUNNING,
    reason: "",
    atMs: 5_000,
  });
  const vm = s.vm("web")!.vm!;
  assertEquals(vm.status?.state, VmState.RUNNING);
  assertEquals(vm.status?.startedAt?.seconds, 5n);
  const stale = apply(s, {
    kind: "vm_report",
    name: "web",
    nodeId: 3,
    state: VmState.FAILED,
    reason: "x",
    atMs: 6,
  });
  assert(stale.ok && stale.kind === "vm_unchanged");
  assertEquals(s.vm("web")!.vm!.status?.state, VmState.RUNNING);
});

Deno.test("a VM on a lost node is moved, or marked LOST, only if it is still there", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("a"), nodeId: 2, atMs: 1 });
  apply(s, { kind: "vm_create", spec: spec("b"), nodeId: 2, atMs: 1 });
  apply(s, {
    kind: "vm_place",
    name: "a",
    fromNodeId: 2,
    nodeId: 3,
    reason: "node 2 lost",
    atMs: 9,
  });
  apply(s, {
    kind: "vm_place",
    name: "b",
    fromNodeId: 2,
    nodeId: 0,
    reason: "node 2 lost",
    atMs: 9,
  });
  assertEquals([s.vm("a")!.vm!.status?.nodeId, s.vm("a")!.vm!.status?.state], [
    3n,
    VmState.PENDING,
  ]);
  assertEquals([s.vm("b")!.vm!.status?.nodeId, s.vm("b")!.vm!.status?.state], [0n, VmState.LOST]);
  const late = apply(s, {
    kind: "vm_place",
    name: "a",
    fromNodeId: 2,
    nodeId: 4,
    reason: "x",
    atMs: 10,
  });
  assert(late.ok && late.kind === "vm_unchanged");
});

Deno.test("a VM marked LOST in place is taken up again by its node's next report", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("c"), nodeId: 2, atMs: 1 });
  const place = {
    kind: "vm_place",
    name: "c",
    fromNodeId: 2,
    nodeId: 2,
    reason: "node 2 not heard from for 30 s",
    atMs: 5,
  } as const;
  apply(s, place);
  assertEquals([s.vm("c")!.vm!.status?.nodeId, s.vm("c")!.vm!.status?.state], [2n, VmState.LOST]);
  const again = apply(s, { ...place, atMs: 6 });
  assert(again.ok && again.kind === "vm_unchanged", "marked once, not once per check");
  apply(s, {
    kind: "vm_report",
    name: "c",
    nodeId: 2,
    state: VmState.RUNNING,
    reason: "",
    atMs: 7,
  });
  assertEquals(s.vm("c")!.vm!.status?.state, VmState.RUNNING);
});

Deno.test("deleting a VM removes it and says so in the history", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 1, atMs: 1 });
  apply(s, { kind: "vm_delete", name: "web", atMs: 2 });
  assertEquals(s.vms(), []);
  const events = s.vmEventsAfter(0)!;
  assertEquals(events.map((e) => [e.kind, Number(e.index)]), [[VmEventKind.CREATED, 1], [
    VmEventKind.DELETED,
    2,
  ]]);
  assertEquals(events[1]!.vm?.spec?.name, "web");
});

Deno.test("the event history resumes from any kept revision, survives a snapshot, and refuses one it dropped", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 1, atMs: 1 });
  for (let i = 0; i < VM_EVENT_HISTORY * 2; i++) {
    apply(s, {
      kind: "vm_report",
      name: "web",
      nodeId: 1,
      state: i % 2 ? VmState.RUNNING : VmState.STOPPED,
      reason: "",
      atMs: i,
    });
  }
  const last = s.appliedIndex;
  assertEquals(s.vmEventsAfter(last - 3)!.length, 3);
  assertEquals(s.vmEventsAfter(1), null, "the first reports are no longer kept");
  const restored = ClusterState.restore(s.snapshot());
  assertEquals(restored.vmEventsAfter(last - 3), s.vmEventsAfter(last - 3));
  assertEquals(restored.vmEventsAfter(1), null);
  assertEquals(restored.snapshot(), s.snapshot());
});

Deno.test("a retried VM command with the same request id is applied once", () => {
  const s = new ClusterState();
  apply(s, { kind: "vm_create", spec: spec("web"), nodeId: 1, atMs: 1, requestId: "r1" });
  const retry = apply(s, {
    kind: "vm_create",
    spec: spec("web"),
    nodeId: 2,
    atMs: 2,
    requestId: "r1",
  });
  assert(retry.ok, "a retry is not 'already exists'");
  assertEquals(s.vm("web")!.vm!.status?.nodeId, 1n);
});
