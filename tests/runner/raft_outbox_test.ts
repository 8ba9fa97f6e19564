/**
 * The outbox of consensus, over links whose sends the test completes by
 * hand: votes do not wait behind snapshot chunks, a peer that takes nothing
 * costs at most the queue's bounds, and every message not handed to a
 * transport is counted with its reason. The same over real transports is
 * in raft_egress_test.ts.
 */

import { assert, assertEquals } from "../assert.ts";
import { Priority } from "../../src/codec/frame.ts";
import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import { fixedRoute, type RaftLink, RaftOutbox } from "../../src/runner/raft_outbox.ts";

const vote: RaftMessage = {
  kind: RaftMessageKind.VoteRequest,
  from: 1,
  to: 2,
  term: 7,
  lastLogIndex: 3,
  lastLogTerm: 6,
  transfer: false,
};
const chunk = (offset: number, bytes = 64 * 1024): RaftMessage => ({
  kind: RaftMessageKind.InstallSnapshot,
  from: 1,
  to: 2,
  term: 7,
  snapshotIndex: 100,
  snapshotTerm: 6,
  offset,
  done: false,
  data: new Uint8Array(bytes),
});

/** A link whose sends stay pending until the test settles them. */
function heldLink() {
  const pending: { message: RaftMessage; settle: (ok: boolean) => void }[] = [];
  const link: RaftLink = {
    transport: "iroh",
    sendRaft: (message) =>
      new Promise<void>((resolve, reject) =>
        pending.push({
          message,
          settle: (ok) => ok ? resolve() : reject(new Error("connection lost")),
        })
      ),
    probe: () => Promise.resolve(),
  };
  return { link, pending };
}

const turn = () => new Promise((r) => setTimeout(r, 0));

Deno.test("a vote is sent at once while snapshot chunks wait for their window", async () => {
  const { link, pending } = heldLink();
  const outbox = new RaftOutbox({ routeFor: () => fixedRoute(link) });
  for (let i = 0; i < 6; i++) assert(outbox.send(chunk(i)));
  outbox.send(vote);
  // Two chunks in flight (the snapshot window), four queued, and the vote already sent.
  assertEquals(pending.map((p) => p.message.kind), [
    RaftMessageKind.InstallSnapshot,
    RaftMessageKind.InstallSnapshot,
    RaftMessageKind.VoteRequest,
  ]);
  assertEquals(outbox.peer(2).queuedMessages, 4);
  for (const p of pending.splice(0)) p.settle(true);
  await turn();
  assertEquals(outbox.stats.sent[Priority.Election], 1);
  assertEquals(outbox.stats.byTransport.iroh, 3);
  outbox.close();
});

Deno.test("a peer that takes nothing costs at most the queue's bounds; the rest is dropped and counted", () => {
  const { link, pending } = heldLink();
  const dropped: string[] = [];
  const outbox = new RaftOutbox({
    routeFor: () => fixedRoute(link),
    limits: { [Priority.Snapshot]: { maxMessages: 8, maxBytes: 1 << 20, maxInFlight: 2 } },
    onDrop: (peer, m, reason) => dropped.push(`${peer}:${m.kind}:${reason}`),
  });
  let accepted = 0;
  for (let i = 0; i < 100; i++) if (outbox.send(chunk(i, 256 * 1024))) accepted++;
  // Two in flight, and what fits in 1 MiB of queue: four chunks of 256 KiB and change.
  assertEquals(pending.length, 2);
  assert(outbox.peer(2).queuedBytes <= 1 << 20);
  assertEquals(accepted, 2 + 3);
  assertEquals(outbox.stats.dropped.queue_full[Priority.Snapshot], 95);
  assertEquals(dropped.length, 95);
  assertEquals(dropped[0], `2:${RaftMessageKind.InstallSnapshot}:queue_full`);
  outbox.close();
});

Deno.test("a failed send is counted and reported, and the class goes on with the next", async () => {
  const { link, pending } = heldLink();
  const reasons: string[] = [];
  const outbox = new RaftOutbox({
    routeFor: () => fixedRoute(link),
    onDrop: (_p, _m, reason) => reasons.push(reason),
  });
  outbox.send(vote);
  outbox.send({ ...vote, term: 8 });
  pending.shift()!.settle(false);
  await turn();
  assertEquals(reasons, ["send_failed"]);
  assertEquals(outbox.stats.dropped.send_failed[Priority.Election], 1);
  pending.shift()!.settle(true);
  await turn();
  assertEquals(outbox.stats.sent[Priority.Election], 1);
  outbox.close();
});

Deno.test("a peer with no route drops what is sent to it, saying so", () => {
  const reasons: string[] = [];
  const outbox = new RaftOutbox({
    routeFor: () => null,
    onDrop: (_p, _m, reason) => reasons.push(reason),
  });
  assertEquals(outbox.send(vote), false);
  assertEquals(reasons, ["no_route"]);
  outbox.close();
});

Deno.test("messages queued when a route changes go over the new route", async () => {
  const first = heldLink();
  const second = heldLink();
  let route = fixedRoute(first.link);
  const outbox = new RaftOutbox({ routeFor: () => route });
  for (let i = 0; i < 4; i++) outbox.send(chunk(i));
  assertEquals(first.pending.length, 2);
  route = fixedRoute(second.link);
  outbox.rerouteAll();
  // Sends still in flight on the old route hold memory: they keep their window slots.
  assertEquals(second.pending.length, 0);
  for (const p of first.pending.splice(0)) p.settle(true);
  await turn();
  assertEquals(second.pending.length, 2, "the queued chunks went over the new route");
  for (const p of second.pending.splice(0)) p.settle(true);
  await turn();
  assertEquals(outbox.stats.sent[Priority.Snapshot], 4);
  outbox.close();
});

Deno.test("a route lookup that throws is no route: the message is dropped and counted, nothing breaks", () => {
  const reasons: string[] = [];
  const outbox = new RaftOutbox({
    routeFor: () => {
      throw new Error("endpoint id is not a valid public key");
    },
    onDrop: (_p, _m, reason) => reasons.push(reason),
  });
  assertEquals(outbox.send(vote), false);
  outbox.rerouteAll();
  assertEquals(reasons, ["no_route"]);
  outbox.close();
});
