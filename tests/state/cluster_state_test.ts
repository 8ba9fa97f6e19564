/**
 * The replicated cluster state: metadata revisions, compare-and-set, the
 * namespace's limits, members, and snapshots that restore to the same state
 * byte for byte.
 */

import fc from "fast-check";
import { assert, assertEquals, assertThrows } from "../assert.ts";
import {
  ClusterState,
  type Command,
  encodeCommand,
  METADATA_LIMITS,
  StateError,
} from "../../src/state/cluster_state.ts";
import { create } from "@bufbuild/protobuf";
import { MemberRecordSchema } from "../../src/rpc/gen/blixard/v1/state_pb.ts";

function applyAll(state: ClusterState, commands: readonly Command[]) {
  return commands.map((c) => state.apply(state.appliedIndex + 1, encodeCommand(c)));
}

Deno.test("a key's revision is the log index of its last write, so revisions only grow", () => {
  const s = new ClusterState();
  s.apply(1, new Uint8Array()); // the leader's no-op
  const [a, b] = applyAll(s, [
    { kind: "metadata_put", key: "rack", value: "r1" },
    { kind: "metadata_put", key: "rack", value: "r2" },
  ]);
  assertEquals(a, { ok: true, kind: "metadata_put", revision: 2 });
  assertEquals(b, { ok: true, kind: "metadata_put", revision: 3 });
  assertEquals(s.getMetadata("rack")?.value, "r2");
  assertEquals(s.getMetadata("rack")?.revision, 3n);
});

Deno.test("a deleted key written again gets a new revision: compare-and-set cannot be fooled", () => {
  const s = new ClusterState();
  const results = applyAll(s, [
    { kind: "metadata_put", key: "owner", value: "alice" }, // 1
    { kind: "metadata_delete", key: "owner" }, // 2
    { kind: "metadata_put", key: "owner", value: "mallory" }, // 3
    { kind: "metadata_cas", key: "owner", expectedRevision: 1, value: "bob" }, // 4
    { kind: "metadata_cas", key: "owner", expectedRevision: 3, value: "bob" }, // 5
    { kind: "metadata_cas", key: "fresh", expectedRevision: 0, value: "x" }, // 6
    { kind: "metadata_cas", key: "fresh", expectedRevision: 0, value: "y" }, // 7
    { kind: "metadata_delete", key: "gone" }, // 8
  ]);
  assertEquals(results[1], { ok: true, kind: "metadata_delete", existed: true });
  assertEquals(results[3], { ok: true, kind: "metadata_cas", succeeded: false, revision: 3 });
  assertEquals(results[4], { ok: true, kind: "metadata_cas", succeeded: true, revision: 5 });
  assertEquals(results[5], { ok: true, kind: "metadata_cas", succeeded: true, revision: 6 });
  assertEquals(results[6], { ok: true, kind: "metadata_cas", succeeded: false, revision: 6 });
  assertEquals(results[7], { ok: true, kind: "metadata_delete", existed: false });
  assertEquals(s.getMetadata("owner")?.value, "bob");
});

Deno.test("keys and values past their limits are refused with a reason, and nothing changes", () => {
  const s = new ClusterState();
  const [empty, control, long, big] = applyAll(s, [
    { kind: "metadata_put", key: "", value: "v" },
    { kind: "metadata_put", key: "a\nb", value: "v" },
    { kind: "metadata_put", key: "k".repeat(METADATA_LIMITS.maxKeyBytes + 1), value: "v" },
    { kind: "metadata_put", key: "k", value: "é".repeat(METADATA_LIMITS.maxValueBytes / 2 + 1) },
  ]);
  assertEquals(empty, {
    ok: false,
    code: "INVALID_ARGUMENT",
    message: "metadata key: empty; expected 1 to 256 bytes",
  });
  assert(!control!.ok && control!.message.includes("control characters"));
  assert(!long!.ok && long!.message.includes("257 bytes; expected at most 256"));
  assert(!big!.ok && big!.message.includes("65538 bytes; expected at most 65536"));
  assertEquals(s.metadataSize, 0);
  assertEquals(s.appliedIndex, 4, "refused commands still take their place in the log");
});

Deno.test("the namespace refuses a new key past its key count, but still takes updates", () => {
  const s = new ClusterState();
  const n = METADATA_LIMITS.maxKeys;
  for (let i = 1; i <= n; i++) {
    const r = s.apply(i, encodeCommand({ kind: "metadata_put", key: `k${i}`, value: "" }));
    assert(r.ok);
  }
  const over = s.apply(n + 1, encodeCommand({ kind: "metadata_put", key: "one-more", value: "" }));
  assertEquals(over.ok ? "" : over.code, "RESOURCE_EXHAUSTED");
  const update = s.apply(n + 2, encodeCommand({ kind: "metadata_put", key: "k1", value: "new" }));
  assert(update.ok);
  assertEquals(s.metadataSize, n);
});

Deno.test("entries must be applied in log order, each once", () => {
  const s = new ClusterState();
  s.apply(1, new Uint8Array());
  const e = assertThrowsState(() => s.apply(3, new Uint8Array()));
  assertEquals(e.code, "DATA_LOSS");
  assert(e.message.includes("entry 3 applied after 1"));
  assertThrowsState(() => s.apply(1, new Uint8Array()));
});

Deno.test("bytes that are not a command, or a snapshot of an unknown format, are DATA_LOSS", () => {
  const s = new ClusterState();
  assertEquals(assertThrowsState(() => s.apply(1, new Uint8Array([0xff, 0xff]))).code, "DATA_LOSS");
  assertEquals(
    assertThrowsState(() => ClusterState.restore(new Uint8Array([8, 99]))).code,
    "DATA_LOSS",
  );
});

Deno.test("members are recorded and forgotten by membership entries, and updated by commands", () => {
  const s = new ClusterState();
  const record = create(MemberRecordSchema, { nodeId: 2n, grpcAddress: "10.0.0.2:7400", vcpus: 8 });
  s.applyMembership(1, { nodeId: 2, record });
  assertEquals(s.members().map((m) => m.grpcAddress), ["10.0.0.2:7400"]);
  const updated = create(MemberRecordSchema, {
    nodeId: 2n,
    grpcAddress: "10.0.0.9:7400",
    vcpus: 8,
  });
  assert(s.apply(2, encodeCommand({ kind: "member_update", member: updated })).ok);
  assertEquals(s.member(2)?.grpcAddress, "10.0.0.9:7400");
  const stranger = create(MemberRecordSchema, { nodeId: 7n });
  const r = s.apply(3, encodeCommand({ kind: "member_update", member: stranger }));
  assertEquals(r.ok ? "" : r.code, "NOT_FOUND");
  s.applyMembership(4, { nodeId: 2 });
  assertEquals(s.members(), []);
});

Deno.test("a retried write with the same request id is answered with the first result and applied once", () => {
  const s = new ClusterState();
  const [first, other, retry, retriedCas] = applyAll(s, [
    { kind: "metadata_put", key: "k", value: "x", requestId: "req-1" },
    { kind: "metadata_put", key: "k", value: "y" },
    { kind: "metadata_put", key: "k", value: "x", requestId: "req-1" },
    { kind: "metadata_cas", key: "k", expectedRevision: 99, value: "z", requestId: "req-1" },
  ]);
  assertEquals(first, { ok: true, kind: "metadata_put", revision: 1 });
  assertEquals(other, { ok: true, kind: "metadata_put", revision: 2 });
  assertEquals(retry, first);
  assertEquals(retriedCas, first, "the id names the first write, whatever the retry says");
  assertEquals(s.getMetadata("k")?.value, "y");
  assertEquals(s.getMetadata("k")?.revision, 2n);
});

Deno.test("the results kept for retries are bounded: the oldest are forgotten first", () => {
  const s = new ClusterState();
  const n = METADATA_LIMITS.maxRecentWrites;
  for (let i = 1; i <= n + 1; i++) {
    s.apply(
      i,
      encodeCommand({ kind: "metadata_put", key: "k", value: `${i}`, requestId: `r${i}` }),
    );
  }
  assertEquals(s.recentWrite("r1"), undefined);
  assertEquals(s.recentWrite("r2"), { ok: true, kind: "metadata_put", revision: 2 });
  const r = s.apply(
    n + 2,
    encodeCommand({ kind: "metadata_put", key: "k", value: "x", requestId: "bad id" }),
  );
  assertEquals(r.ok ? "" : r.code, "INVALID_ARGUMENT");
});

const keyArb = fc.constantFrom("a", "b", "c");
const idArb = fc.option(fc.constantFrom("r1", "r2", "r3"), { nil: undefined });
type MetadataCommand = Exclude<Command, { kind: "member_update" }>;
const withId = (c: MetadataCommand, id: string | undefined): Command =>
  id === undefined ? c : { ...c, requestId: id };
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  fc.tuple(keyArb, fc.string({ maxLength: 8 }), idArb).map(([key, value, id]) =>
    withId({ kind: "metadata_put", key, value }, id)
  ),
  fc.tuple(keyArb, idArb).map(([key, id]) => withId({ kind: "metadata_delete", key }, id)),
  fc.tuple(keyArb, fc.nat(12), fc.string({ maxLength: 8 }), idArb).map((
    [key, expectedRevision, value, id],
  ) => withId({ kind: "metadata_cas", key, expectedRevision, value }, id)),
);

Deno.test("a snapshot taken anywhere, restored and fed the rest of the log, ends byte for byte the same", () => {
  fc.assert(
    fc.property(fc.array(commandArb, { maxLength: 40 }), fc.nat(40), (commands, cut) => {
      const whole = new ClusterState();
      applyAll(whole, commands);
      const at = Math.min(cut, commands.length);
      const first = new ClusterState();
      applyAll(first, commands.slice(0, at));
      const restored = ClusterState.restore(first.snapshot());
      assertEquals(restored.snapshot(), first.snapshot());
      applyAll(restored, commands.slice(at));
      assertEquals(restored.snapshot(), whole.snapshot());
    }),
    { seed: 20261203, numRuns: 300 },
  );
});

function assertThrowsState(fn: () => unknown): StateError {
  let caught: unknown;
  assertThrows(() => {
    try {
      fn();
    } catch (e) {
      caught = e;
      throw e;
    }
  });
  assert(caught instanceof StateError, String(caught));
  return caught;
}
