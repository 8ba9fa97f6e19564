/**
 * What one VM event means for `vm create|start|stop` waiting (pure): the
 * state a VM had before a start or stop took effect is never taken for
 * its outcome.
 */

import { create } from "@bufbuild/protobuf";
import { assertEquals } from "../assert.ts";
import { VmEventKind, VmEventSchema, VmState } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { type Verdict, verdictOf, type VmGoal } from "../../src/cli/vm_wait.ts";

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
