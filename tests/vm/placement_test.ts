/**
 * Placement: the least allocated alive node that fits, ties by id, a pin
 * that pins, and errors that say what was asked and what is free.
 */

import { assertEquals, thrown } from "../assert.ts";
import { PlacementError, type PlacementNode, placeVm } from "../../src/vm/placement.ts";
import { spec } from "./helpers.ts";

function node(id: number, o: Partial<PlacementNode> = {}): PlacementNode {
  return {
    nodeId: BigInt(id),
    vcpus: 8,
    memoryMib: 16384n,
    allocatedVcpus: 0,
    allocatedMemoryMib: 0n,
    alive: true,
    backends: ["process"],
    ...o,
  };
}

const vm = (vcpus = 2, memoryMib = 2048n, nodeId = 0n) => spec("web", { vcpus, memoryMib, nodeId });

Deno.test("a VM goes to the least allocated node", () => {
  assertEquals(
    placeVm(vm(), [
      node(1, { allocatedVcpus: 4 }),
      node(2, { allocatedVcpus: 2 }),
      node(3, { allocatedMemoryMib: 12000n }),
    ]),
    2n,
  );
});

Deno.test("load is the larger of the cpu and memory fractions, so a memory-full node loses", () => {
  // node 1: 1/8 cpus but 14/16 GiB memory once placed; node 2: 4/8 cpus, 2/16 GiB.
  assertEquals(
    placeVm(vm(1, 2048n), [
      node(1, { allocatedMemoryMib: 12288n }),
      node(2, { allocatedVcpus: 3 }),
    ]),
    2n,
  );
});

Deno.test("equal load is broken by the lower node id, whatever the order given", () => {
  assertEquals(placeVm(vm(), [node(3), node(1), node(2)]), 1n);
});

Deno.test("a node that is down, or too small, is skipped", () => {
  assertEquals(
    placeVm(vm(4), [
      node(1, { alive: false }),
      node(2, { vcpus: 2 }),
      node(3, { allocatedVcpus: 7 }),
      node(4, { allocatedVcpus: 4 }),
    ]),
    4n,
  );
});

Deno.test("when nothing fits, the error names the VM and what each node has free", () => {
  const e = thrown(
    PlacementError,
    () =>
      placeVm(vm(4, 8192n), [
        node(2, { allocatedVcpus: 6 }),
        node(1, { allocatedMemoryMib: 12288n }),
        node(3, { alive: false }),
      ]),
  );
  assertEquals(e.code, "NO_NODE_FITS");
  assertEquals(
    e.message,
    'no node can run vm "web" (4 vcpus, 8192 MiB, backend "process"): node 1: 8 vcpus and 4096 MiB free; ' +
      "node 2: 2 vcpus and 16384 MiB free; node 3: down",
  );
  assertEquals(
    thrown(PlacementError, () => placeVm(vm(), [])).message,
    'no node can run vm "web" (2 vcpus, 2048 MiB, backend "process"): the cluster has no members',
  );
});

Deno.test("a node_id pins the VM to that node, even when another is emptier", () => {
  assertEquals(placeVm(vm(2, 2048n, 1n), [node(1, { allocatedVcpus: 6 }), node(2)]), 1n);
});

Deno.test("a pinned node that is unknown, down or full is an error that says which", () => {
  const cases: [PlacementNode[], string, string][] = [
    [
      [node(1)],
      "PINNED_NODE_UNKNOWN",
      'cannot place vm "web" (2 vcpus, 2048 MiB, backend "process") on node 5: no such member (members: 1)',
    ],
    [
      [node(5, { alive: false })],
      "PINNED_NODE_DOWN",
      'cannot place vm "web" (2 vcpus, 2048 MiB, backend "process") on node 5: the node is down',
    ],
    [
      [node(5, { backends: ["qemu"] })],
      "PINNED_NODE_NO_BACKEND",
      'cannot place vm "web" (2 vcpus, 2048 MiB, backend "process") on node 5: node 5: no "process" backend (runs "qemu")',
    ],
    [
      [node(5, { allocatedVcpus: 7 })],
      "PINNED_NODE_FULL",
      'cannot place vm "web" (2 vcpus, 2048 MiB, backend "process") on node 5: node 5: 1 vcpus and 16384 MiB free',
    ],
  ];
  for (const [nodes, code, message] of cases) {
    const e = thrown(PlacementError, () => placeVm(vm(2, 2048n, 5n), nodes));
    assertEquals([e.code, e.message], [code, message]);
  }
});

Deno.test("a node that does not run the VM's backend is skipped, and the error says so", () => {
  assertEquals(
    placeVm(vm(), [node(1, { backends: ["qemu"] }), node(2, { allocatedVcpus: 6 })]),
    2n,
  );
  const e = thrown(PlacementError, () => placeVm(vm(), [node(1, { backends: [] })]));
  assertEquals(
    e.message,
    'no node can run vm "web" (2 vcpus, 2048 MiB, backend "process"): node 1: runs no VM backend (or has not announced its capacity yet)',
  );
});

Deno.test("over-allocated nodes count as having nothing free", () => {
  const e = thrown(
    PlacementError,
    () => placeVm(vm(), [node(1, { allocatedVcpus: 10, allocatedMemoryMib: 20000n })]),
  );
  assertEquals(
    e.message,
    'no node can run vm "web" (2 vcpus, 2048 MiB, backend "process"): node 1: 0 vcpus and 0 MiB free',
  );
});
