/**
 * What one VM event means for `vm create|start|stop` waiting (pure): the
 * state a VM had before a start or stop took effect is never taken for
 * its outcome.
 */

import { create } from "@bufbuild/protobuf";
import { assertEquals, rejection } from "../assert.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import type { Client } from "../../src/rpc/services.ts";
import {
  VmEventKind,
  VmEventSchema,
  type VmService,
  VmState,
} from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import {
  resumingWatch,
  type Verdict,
  verdictOf,
  type VmGoal,
  type WatchRequest,
} from "../../src/cli/vm_wait.ts";

function event(kind: VmEventKind, state: VmState) {
  return create(VmEventSchema, { kind, vm: { spec: { name: "web" }, status: { state } } });
}

const { SPEC_CHANGED, STATUS_CHANGED, EXISTING, DELETED } = VmEventKind;
const { PENDING, STARTING, RUNNING, STOPPING, STOPPED, FAILED, LOST } = VmState;

Deno.test("a wait ends on the state asked for, on a VM that ended otherwise, LOST or deleted; never on the state before the change", () => {
  const cases: [VmGoal, VmEventKind, VmState, Verdict][] = [
    // A start of a running VM: the change itself shows it running.
    ["running", SPEC_CHANGED, RUNNING, "reached"],
    // A start of a failed or stopped VM: that state is from before the start.
    ["running", SPEC_CHANGED, FAILED, undefined],
    ["running", SPEC_CHANGED, STOPPED, undefined],
    ["running", STATUS_CHANGED, STARTING, undefined],
    ["running", STATUS_CHANGED, RUNNING, "reached"],
    ["running", STATUS_CHANGED, FAILED, "failed"],
    ["running", STATUS_CHANGED, STOPPED, "failed"],
    // After a create, what the watch shows first is the new VM's own state.
    ["running", EXISTING, PENDING, undefined],
    ["running", EXISTING, FAILED, "failed"],
    ["running", EXISTING, RUNNING, "reached"],
    ["stopped", SPEC_CHANGED, STOPPED, "reached"],
    ["stopped", SPEC_CHANGED, FAILED, undefined],
    ["stopped", STATUS_CHANGED, STOPPING, undefined],
    ["stopped", STATUS_CHANGED, STOPPED, "reached"],
    ["stopped", STATUS_CHANGED, FAILED, "failed"],
    ["running", SPEC_CHANGED, LOST, "failed"],
    ["stopped", STATUS_CHANGED, LOST, "failed"],
    ["running", DELETED, RUNNING, "failed"],
  ];
  for (const [goal, kind, state, expected] of cases) {
    assertEquals(
      verdictOf(goal, event(kind, state)),
      expected,
      `${goal}: ${VmEventKind[kind]} ${VmState[state]}`,
    );
  }
});

Deno.test("a watch that a node cannot serve for a moment is opened again after the last revision seen, and other errors end it", async () => {
  // A scripted client: each call answers from its script, and records what it was asked.
  const asked: WatchRequest[] = [];
  const scripts: (readonly (bigint | RpcError)[])[] = [
    [1n, 2n, new RpcError(Code.UNAVAILABLE, "no leader confirmed the read in time")],
    [3n, new RpcError(Code.DEADLINE_EXCEEDED, "the node ended the call")],
    [4n, new RpcError(Code.OUT_OF_RANGE, "compacted")],
  ];
  const client = {
    async *watchEvents(request: WatchRequest) {
      asked.push({ ...request });
      for (const step of scripts[asked.length - 1] ?? []) {
        if (step instanceof RpcError) throw step;
        yield create(VmEventSchema, { index: step, kind: VmEventKind.STATUS_CHANGED });
      }
    },
  } as unknown as Client<typeof VmService>;
  const resumed: Code[] = [];
  const seen: bigint[] = [];
  const error = await rejection(RpcError, async () => {
    const events = resumingWatch(
      client,
      { name: "web", includeExisting: true },
      new AbortController().signal,
      { minIntervalMs: 0, onResume: (e) => resumed.push(e.code) },
    );
    for await (const event of events) seen.push(event.index);
  });
  assertEquals(seen, [1n, 2n, 3n, 4n]);
  assertEquals(resumed, [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]);
  assertEquals(error.code, Code.OUT_OF_RANGE);
  assertEquals(asked, [
    { name: "web", includeExisting: true },
    { name: "web", includeExisting: false, fromRevision: 2n },
    { name: "web", includeExisting: false, fromRevision: 3n },
  ]);
});
