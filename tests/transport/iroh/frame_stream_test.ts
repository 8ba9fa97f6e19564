/**
 * FrameStream over a real Iroh stream: frames queued in one turn of the event
 * loop leave in one binding write, and what arrives is every frame in order;
 * what it holds for its peer is counted, and it reads nothing while that
 * count is paused. The send half is the real one, with its writeArray counted.
 */

import { assert, assertEquals } from "../../assert.ts";
import { FLAG_LAST, type Frame, FrameType, Priority } from "../../../mod.ts";
import { FrameStream } from "../../../src/transport/iroh/frame_stream.ts";
import { OutboundBuffer } from "../../../src/rpc/outbound.ts";
import { encodeFrame } from "../../../mod.ts";
import type { IrohBiStream } from "../../../src/transport/iroh/connection.ts";
import { loopbackEndpoint, within } from "./helpers.ts";
import { eventually } from "../../wait.ts";

async function pair() {
  const server = await loopbackEndpoint();
  const client = await loopbackEndpoint([]);
  const accepted = server.acceptIncoming().then((i) => i!.accept({ allow: new Set([client.id]) }));
  const conn = await client.connect(server.ticket());
  const local = await conn.openBi();
  const serverConn = await accepted;
  return { server, client, conn, serverConn, local };
}

function counted(bi: IrohBiStream): { bi: IrohBiStream; writes: number[] } {
  const writes: number[] = [];
  const send = bi.send;
  const original = send.writeArray.bind(send);
  send.writeArray = (bytes: number[]) => {
    writes.push(bytes.length);
    return original(bytes);
  };
  return { bi, writes };
}

function frame(i: number) {
  return {
    type: FrameType.Request,
    flags: FLAG_LAST,
    priority: Priority.Service,
    method: 0x0101,
    requestId: BigInt(i),
    deadlineMs: 0,
  } as const;
}

Deno.test({
  name: "100 frames queued in one turn leave in one write, and arrive whole and in order",
  async fn() {
    const { server, client, serverConn, local } = await pair();
    try {
      const { bi, writes } = counted(local);
      const out = new FrameStream(bi, { onFrame() {}, onClose() {} }, {
        maxFrameBytes: 1 << 20,
        source: "test",
      });
      for (let i = 0; i < 100; i++) out.send(frame(i), new Uint8Array([i]));
      await out.flushed();
      assertEquals(writes, [100 * 25]);

      const remote = await serverConn.acceptBi();
      const got: Frame[] = [];
      const done = Promise.withResolvers<void>();
      new FrameStream(remote, {
        onFrame(f) {
          got.push(f);
          if (got.length === 100) done.resolve();
        },
        onClose() {},
      }, { maxFrameBytes: 1 << 20, source: "test" }).start();
      await within(done.promise, 5000, "100 frames");
      assertEquals(got.map((f) => f.requestId), Array.from({ length: 100 }, (_, i) => BigInt(i)));
      assertEquals(got.map((f) => f.payload[0]), Array.from({ length: 100 }, (_, i) => i));
    } finally {
      await Promise.all([server.close(), client.close()]);
    }
  },
});

Deno.test({
  name: "frames sent while a write is in flight go out together in the next write",
  async fn() {
    const { server, client, local } = await pair();
    try {
      const { bi, writes } = counted(local);
      const out = new FrameStream(bi, { onFrame() {}, onClose() {} }, {
        maxFrameBytes: 1 << 20,
        source: "test",
      });
      out.send(frame(0));
      await Promise.resolve(); // the first flush starts and its write is in flight
      await Promise.resolve();
      for (let i = 1; i <= 50; i++) out.send(frame(i));
      await out.flushed();
      assert(writes.length <= 2, `expected at most 2 writes, got ${writes.length}`);
      assertEquals(writes.reduce((a, b) => a + b, 0), 51 * 24);
    } finally {
      await Promise.all([server.close(), client.close()]);
    }
  },
});

Deno.test({
  name: "what a stream queues is counted against its connection's bound until the binding takes it",
  async fn() {
    const { server, client, local } = await pair();
    try {
      const outbound = new OutboundBuffer(1 << 20, { onOverflow() {} });
      const out = new FrameStream(local, { onFrame() {}, onClose() {} }, {
        maxFrameBytes: 1 << 20,
        source: "test",
        outbound,
      });
      out.send(frame(0), new Uint8Array(1000));
      out.send(frame(1), new Uint8Array(1000));
      assertEquals(outbound.bytes, 2 * 1024);
      assertEquals(out.outboundBytes, 2 * 1024);
      await out.flushed();
      assertEquals(outbound.bytes, 0);
      // Closed with bytes queued: they are dropped, and no longer counted.
      out.send(frame(2), new Uint8Array(1000));
      out.close(null);
      assertEquals(outbound.bytes, 0);
    } finally {
      await Promise.all([server.close(), client.close()]);
    }
  },
});

Deno.test({
  name: "a stream reads nothing from its peer while its connection's outbound count is paused",
  async fn() {
    const { server, client, serverConn, local } = await pair();
    try {
      const outbound = new OutboundBuffer(1000, { onOverflow() {} });
      outbound.add(600); // past half: paused
      const got: bigint[] = [];
      await local.send.write(encodeFrame(frame(0)));
      const remote = await serverConn.acceptBi();
      new FrameStream(remote, { onFrame: (f) => got.push(f.requestId), onClose() {} }, {
        maxFrameBytes: 1 << 20,
        source: "test",
        outbound,
      }).start();
      await local.send.write(encodeFrame(frame(1)));
      await new Promise((r) => setTimeout(r, 300));
      assertEquals(got, [], "frames were read while paused");
      outbound.release(400); // a quarter: resumed
      await eventually("the frames arrived after resuming", () => got.length === 2);
      assertEquals(got, [0n, 1n]);
    } finally {
      await Promise.all([server.close(), client.close()]);
    }
  },
});

Deno.test({
  name:
    "after refusing a frame, a stream knows that frame's method and request id if its header arrived",
  async fn() {
    const { server, client, serverConn, local } = await pair();
    try {
      const closed = Promise.withResolvers<Error | null>();
      // A good frame first, so the refused one starts mid-chunk.
      const bad = encodeFrame({ ...frame(0), method: 0x0304, requestId: 1n << 40n });
      bad[2] = 9;
      const bytes = new Uint8Array([...encodeFrame(frame(7), new Uint8Array(5)), ...bad]);
      await local.send.write(bytes);
      const remote = await serverConn.acceptBi();
      const fs = new FrameStream(remote, { onFrame() {}, onClose: closed.resolve }, {
        maxFrameBytes: 1 << 20,
        source: "test",
      });
      fs.start();
      const error = await within(closed.promise, 3000, "the stream to fail");
      assert(error !== null && /version 9/.test(error.message), String(error));
      assertEquals(fs.refusedHeader(), { method: 0x0304, requestId: 1n << 40n });
    } finally {
      await Promise.all([server.close(), client.close()]);
    }
  },
});
