/**
 * FrameStream over a real Iroh stream: frames queued in one turn of the event
 * loop leave in one binding write, and what arrives is every frame in order.
 * The send half is the real one, with its writeArray counted.
 */

import { assert, assertEquals } from "../../assert.ts";
import { FLAG_LAST, type Frame, FrameType, Priority } from "../../../mod.ts";
import { FrameStream } from "../../../src/transport/iroh/frame_stream.ts";
import type { IrohBiStream } from "../../../src/transport/iroh/connection.ts";
import { loopbackEndpoint, within } from "./helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

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
  ...opts,
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
  ...opts,
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
