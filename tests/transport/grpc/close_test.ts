/**
 * A closed gRPC channel ends its connection without an HTTP/2 GOAWAY: on a
 * GOAWAY a Deno 2.9.6 peer can abort inside nghttp2 (denoland/deno#36788),
 * which took a node's peers down each time it stopped or reloaded. A proxy
 * between the channel and a real HTTP/2 server reads every frame the channel
 * sends.
 */

import http2 from "node:http2";
import { assert, assertEquals } from "../../assert.ts";
import { GrpcChannel } from "../../../src/transport/grpc/client.ts";
import { Code, RpcError } from "../../../src/rpc/errors.ts";
import { Health } from "../../../src/rpc/services.ts";

const FRAME_GOAWAY = 7;
const PREFACE_BYTES = 24;

/** Forwards one connection to `target`; resolves with the frame types the client sent, at its end. */
async function proxyOnce(listener: Deno.TcpListener, target: number): Promise<number[]> {
  const client = await listener.accept();
  const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
  const back = server.readable.pipeTo(client.writable).catch(() => {});
  const types: number[] = [];
  let buffered = new Uint8Array(0);
  let prefaceLeft = PREFACE_BYTES;
  const writer = server.writable.getWriter();
  try {
    for await (const chunk of client.readable) {
      await writer.write(chunk).catch(() => {});
      const all = new Uint8Array(buffered.length + chunk.length);
      all.set(buffered);
      all.set(chunk, buffered.length);
      let at = Math.min(prefaceLeft, all.length);
      prefaceLeft -= at;
      while (all.length - at >= 9) {
        const length = (all[at]! << 16) | (all[at + 1]! << 8) | all[at + 2]!;
        if (all.length - at < 9 + length) break;
        types.push(all[at + 3]!);
        at += 9 + length;
      }
      buffered = all.slice(at);
    }
  } catch {
    // The channel reset the connection: the end we wait for.
  }
  await writer.close().catch(() => {});
  await back;
  return types;
}

Deno.test("closing a gRPC channel ends its connection without sending a GOAWAY", async () => {
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, {
      endStream: true,
    });
  });
  server.on("session", (session) => session.on("error", () => {}));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const serverPort = (server.address() as { port: number }).port;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const frames = proxyOnce(listener, serverPort);
  const channel = new GrpcChannel({ target: `127.0.0.1:${listener.addr.port}` });
  try {
    const ping = Health.methods.find((m) => m.name === "Ping")!;
    const error = await channel.unary(ping, new Uint8Array(), { deadlineMs: 5_000 }).then(
      () => null,
      (e) => e,
    );
    assert(error instanceof RpcError, String(error));
    assertEquals(error.code, Code.UNIMPLEMENTED, "the call reached the server");
  } finally {
    channel.close();
  }
  const types = await frames;
  assert(types.length > 0, "the proxy read the channel's frames");
  assertEquals(types.filter((t) => t === FRAME_GOAWAY), [], `frames sent: ${types.join(",")}`);
  listener.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
