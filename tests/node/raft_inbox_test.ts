/**
 * The consensus inbox: refuses senders that may not send Raft, holds a
 * bounded amount per priority class, drops and counts past it, and gives
 * votes and heartbeats before appends and snapshot chunks.
 */

import { assert, assertEquals } from "../assert.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import { Code } from "../../src/rpc/errors.ts";
import { principalsOf } from "../../src/node/principals.ts";
import { RaftInbox } from "../../src/node/raft_inbox.ts";
import { Priority } from "../../src/codec/frame.ts";

const PEER2 = "2e3b00af3210d605f0342890e2091e570b5e69c70ef877829531e2a82e7c4b9d";
const OPERATOR = "148f81d5008304f3421be3d630c6eabe92bcc41f5cfaace22507c0a7b45b0bd2";
const principals = principalsOf(configOrThrow(parseConfig(`
[node]
id = 1
[cluster]
operator_keys = ["${OPERATOR}"]
[[cluster.peers]]
id = 2
endpoint_id = "${PEER2}"
grpc_address = "127.0.0.1:7402"
`)));
const fromPeer2 = { transport: "iroh" as const, id: PEER2 };

const vote: RaftMessage = {
  kind: RaftMessageKind.VoteRequest,
  from: 2,
  to: 1,
  term: 5,
  lastLogIndex: 10,
  lastLogTerm: 4,
  transfer: false,
};
const chunk = (offset: number): RaftMessage => ({
  kind: RaftMessageKind.InstallSnapshot,
  from: 2,
  to: 1,
  term: 5,
  snapshotIndex: 100,
  snapshotTerm: 5,
  offset,
  done: false,
  data: new Uint8Array(1024),
});

Deno.test("an operator's Raft message is refused with PERMISSION_DENIED and nothing is queued", () => {
  const inbox = new RaftInbox({ principals: () => principals });
  const offer = inbox.offer([vote], { transport: "iroh", id: OPERATOR });
  assertEquals(offer.accepted, 0);
  assertEquals(offer.denied?.code, Code.PERMISSION_DENIED);
  assertEquals(inbox.size, 0);
  assertEquals(inbox.stats.denied, { grpc: 0, iroh: 1 });
});

Deno.test("a delivery with one message claiming another node's id is refused whole", () => {
  const inbox = new RaftInbox({ principals: () => principals });
  const offer = inbox.offer([vote, { ...vote, from: 3 }], fromPeer2);
  assertEquals(offer.denied?.code, Code.PERMISSION_DENIED);
  assertEquals(inbox.size, 0);
});

Deno.test("the sender of an authorized delivery is reported as heard from; a refused one is not", () => {
  const heard: number[] = [];
  const inbox = new RaftInbox({ principals: () => principals, onHeard: (id) => heard.push(id) });
  inbox.offer([vote], { transport: "iroh", id: OPERATOR });
  inbox.offer([vote, { ...vote, from: 3 }], fromPeer2);
  assertEquals(heard, []);
  inbox.offer([vote], fromPeer2);
  assertEquals(heard, [2]);
  assert(inbox.lastHeardMs(2) !== undefined);
});

Deno.test("votes are taken before snapshot chunks that arrived earlier", () => {
  const inbox = new RaftInbox({ principals: () => principals });
  inbox.offer([chunk(0), chunk(1024)], fromPeer2);
  inbox.offer([vote], fromPeer2);
  assertEquals(inbox.take()?.message.kind, RaftMessageKind.VoteRequest);
  assertEquals((inbox.take()?.message as { offset: number }).offset, 0);
  assertEquals((inbox.take()?.message as { offset: number }).offset, 1024);
  assertEquals(inbox.take(), undefined);
});

Deno.test("a full class drops what does not fit and counts it, while other classes have room", () => {
  const inbox = new RaftInbox({
    principals: () => principals,
    limits: { [Priority.Snapshot]: { maxMessages: 100, maxBytes: 3 * 1100 } },
  });
  const offer = inbox.offer([chunk(0), chunk(1), chunk(2), chunk(3), chunk(4)], fromPeer2);
  assertEquals(offer.accepted, 3);
  assertEquals(inbox.stats.dropped[Priority.Snapshot], 2);
  assertEquals(inbox.offer([vote], fromPeer2).accepted, 1);
  assertEquals(inbox.size, 4);
  assert(inbox.bytes <= 3 * 1100);
});

Deno.test("the consumer is told once per turn that messages wait", async () => {
  let told = 0;
  const inbox = new RaftInbox({ principals: () => principals, onReady: () => told++ });
  inbox.offer([vote], fromPeer2);
  inbox.offer([vote], fromPeer2);
  assertEquals(told, 0);
  await Promise.resolve();
  assertEquals(told, 1);
});
