import { assert, assertEquals, assertThrows, thrown } from "../assert.ts";
import fc from "fast-check";
import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FLAG_LAST,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  type FrameHeader,
  frameHeader,
  FrameType,
  FrameWriter,
  methodId,
  Priority,
  ProtocolError,
  writeFrameHeader,
} from "@blixard/agent";
import { chunkSizesArb, concat, frameArb, split } from "./arbitraries.ts";

const request: FrameHeader = {
  type: FrameType.Request,
  flags: FLAG_LAST,
  priority: Priority.Service,
  method: 0x0102,
  requestId: 17n,
  deadlineMs: 250,
};

/** Feeds all chunks and collects every frame; then declares the end of the stream. */
function decodeAll(chunks: readonly Uint8Array[], decoder = new FrameDecoder()): Frame[] {
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let f = decoder.next(); f !== null; f = decoder.next()) frames.push(f);
  }
  decoder.end();
  return frames;
}

function plain(f: Frame) {
  return { ...f, payload: Array.from(f.payload) };
}

function errorOf(fn: () => unknown): ProtocolError {
  return thrown(ProtocolError, fn);
}

Deno.test("any sequence of frames survives any chunking, whole and in order", () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 20 }), chunkSizesArb, (frames, sizes) => {
      const stream = concat(frames.map((f) => encodeFrame(f.header, f.payload)));
      const decoded = decodeAll(split(stream, sizes));
      assertEquals(
        decoded.map(plain),
        frames.map((f) => ({ ...f.header, payload: Array.from(f.payload) })),
      );
    }),
    { numRuns: 300 },
  );
});

Deno.test("a stream fed one byte at a time decodes the same frames", () => {
  const frames = [
    encodeFrame(request, new Uint8Array([1, 2, 3])),
    encodeFrame({ ...request, type: FrameType.Heartbeat, requestId: 0n }),
    encodeFrame({ ...request, requestId: 2n ** 64n - 1n }, new Uint8Array(100).fill(9)),
  ];
  const stream = concat(frames);
  const decoded = decodeAll(Array.from(stream, (b) => new Uint8Array([b])));
  assertEquals(decoded.length, 3);
  assertEquals(Array.from(decoded[0]!.payload), [1, 2, 3]);
  assertEquals(decoded[1]!.type, FrameType.Heartbeat);
  assertEquals(decoded[2]!.requestId, 2n ** 64n - 1n);
  assertEquals(decoded[2]!.payload.length, 100);
});

Deno.test("many frames in one chunk all come out, and the payload is not copied", () => {
  const stream = concat(
    Array.from(
      { length: 50 },
      (_, i) => encodeFrame({ ...request, requestId: BigInt(i) }, new Uint8Array([i])),
    ),
  );
  const frames = decodeAll([stream]);
  assertEquals(frames.map((f) => f.requestId), Array.from({ length: 50 }, (_, i) => BigInt(i)));
  assert(frames[7]!.payload.buffer === stream.buffer, "payload should be a view of the chunk");
});

Deno.test("a zero-length payload is a whole frame", () => {
  const [frame] = decodeAll([encodeFrame(request)]);
  assertEquals(frame!.payload.length, 0);
  assertEquals(frame!.deadlineMs, 250);
});

Deno.test("request ids above 2^53 round-trip exactly", () => {
  for (const id of [2n ** 53n, 2n ** 53n + 1n, 2n ** 63n + 12345n, 2n ** 64n - 1n]) {
    const [frame] = decodeAll([encodeFrame({ ...request, requestId: id })]);
    assertEquals(frame!.requestId, id);
  }
});

Deno.test("a payload of exactly max_frame_bytes is accepted, one byte more is refused", () => {
  const max = 4096;
  const [frame] = decodeAll(
    [encodeFrame(request, new Uint8Array(max).fill(7))],
    new FrameDecoder({ maxFrameBytes: max }),
  );
  assertEquals(frame!.payload.length, max);

  const e = errorOf(() =>
    decodeAll(
      [encodeFrame(request, new Uint8Array(max + 1))],
      new FrameDecoder({ maxFrameBytes: max }),
    )
  );
  assertEquals(e.code, "FRAME_TOO_LARGE");
  assertEquals(e.value, max + 1);
  assert(e.message.includes("payload length 4097 exceeds max_frame_bytes 4096"), e.message);
  assert(e.message.includes("request 17"), e.message);
});

Deno.test("the default limit is 16 MiB: a 16 MiB payload decodes, 16 MiB + 1 is refused from its header alone", () => {
  assertEquals(DEFAULT_MAX_FRAME_BYTES, 16 * 1024 * 1024);
  const big = new Uint8Array(DEFAULT_MAX_FRAME_BYTES);
  big[big.length - 1] = 0xaa;
  const [frame] = decodeAll(split(encodeFrame(request, big), [65536]));
  assertEquals(frame!.payload.length, DEFAULT_MAX_FRAME_BYTES);
  assertEquals(frame!.payload[DEFAULT_MAX_FRAME_BYTES - 1], 0xaa);

  const decoder = new FrameDecoder();
  decoder.push(frameHeader(request, DEFAULT_MAX_FRAME_BYTES + 1));
  assertEquals(errorOf(() => decoder.next()).code, "FRAME_TOO_LARGE");
});

Deno.test("a hostile length is refused as soon as its bytes arrive, before the rest of the header", () => {
  const header = frameHeader(request, 0xffff_ffff);
  const decoder = new FrameDecoder();
  decoder.push(header.subarray(0, 19));
  assertEquals(decoder.next(), null);
  decoder.push(header.subarray(19, 20));
  const e = errorOf(() => decoder.next());
  assertEquals(e.code, "FRAME_TOO_LARGE");
  assertEquals(e.value, 0xffff_ffff);
});

Deno.test("an accepted but huge length allocates nothing until its bytes arrive", () => {
  // Allow 1 GiB frames, claim one, send only the header and 1 KiB: memory must not move.
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 30 });
  const before = Deno.memoryUsage();
  decoder.push(frameHeader(request, 1 << 30));
  decoder.push(new Uint8Array(1024));
  assertEquals(decoder.next(), null);
  const after = Deno.memoryUsage();
  const grown = after.external + after.heapUsed - before.external - before.heapUsed;
  assert(grown < 16 << 20, `memory grew by ${grown} bytes for a frame that has not arrived`);
  assertEquals(decoder.bufferedBytes, 1024);
  assertEquals(errorOf(() => decoder.end()).code, "TRUNCATED");
});

Deno.test("each malformed header field becomes a typed error naming the field and the value", () => {
  const good = encodeFrame(request, new Uint8Array([1]));
  const cases: [string, number, number, string, string][] = [
    ["magic", 0, 0x41, "BAD_MAGIC", "magic 0x4158"],
    [
      "version",
      2,
      2,
      "UNSUPPORTED_VERSION",
      "version 2 is not supported: this node speaks version 1",
    ],
    ["type 0", 3, 0, "UNKNOWN_FRAME_TYPE", "type 0: expected 1..7"],
    ["type 8", 3, 8, "UNKNOWN_FRAME_TYPE", "type 8: expected 1..7"],
    ["flags", 4, 0x81, "RESERVED_FLAGS", "flags 0x81 set reserved bits 0x80"],
    ["priority", 5, 5, "UNKNOWN_PRIORITY", "priority 5: expected 0..4"],
  ];
  for (const [name, offset, value, code, text] of cases) {
    const bad = good.slice();
    bad[offset] = value;
    const e = errorOf(() => decodeAll([bad]));
    assertEquals(e.code, code, name);
    assert(e.message.includes(text), `${name}: ${e.message}`);
  }
  const e = errorOf(() => decodeAll([Object.assign(good.slice(), { 2: 9 })]));
  assertEquals(e.supportedVersions, [1]);
});

Deno.test("a stream cut inside a header or a payload ends with a TRUNCATED error", () => {
  const frame = encodeFrame(request, new Uint8Array(10));
  let e = errorOf(() => decodeAll([frame.subarray(0, 10)]));
  assertEquals(e.code, "TRUNCATED");
  assert(e.message.includes("10 of 24 header bytes"), e.message);
  e = errorOf(() => decodeAll([frame.subarray(0, 30)]));
  assertEquals(e.code, "TRUNCATED");
  assert(e.message.includes("6 of 10 payload bytes"), e.message);
});

Deno.test("garbage is refused from its first byte, and the decoder stays failed", () => {
  const decoder = new FrameDecoder({ source: "endpoint 3f2a" });
  decoder.push(new Uint8Array([0x47])); // "G" of "GET / HTTP/1.1"
  const e = errorOf(() => decoder.next());
  assertEquals(e.code, "BAD_MAGIC");
  assert(e.message.endsWith("(from endpoint 3f2a)"), e.message);
  assert(errorOf(() => decoder.next()) === e);
  assert(errorOf(() => decoder.push(encodeFrame(request))) === e);
  assertEquals(decoder.bufferedBytes, 0);
});

Deno.test("frames before garbage in the same chunk are still delivered", () => {
  const decoder = new FrameDecoder();
  decoder.push(concat([encodeFrame(request), encodeFrame(request), new Uint8Array(24)]));
  assert(decoder.next() !== null);
  assert(decoder.next() !== null);
  assertEquals(errorOf(() => decoder.next()).code, "BAD_MAGIC");
});

Deno.test("encoding refuses fields the header cannot carry", () => {
  const buf = new Uint8Array(24);
  const bad: [Partial<FrameHeader>, string][] = [
    [{ type: 0 as FrameType }, "type"],
    [{ flags: 2 }, "flags"],
    [{ priority: 5 as Priority }, "priority"],
    [{ method: 0x10000 }, "method"],
    [{ requestId: -1n }, "request id"],
    [{ requestId: 2n ** 64n }, "request id"],
    [{ deadlineMs: -1 }, "deadline"],
    [{ deadlineMs: 2 ** 32 }, "deadline"],
  ];
  for (const [patch, field] of bad) {
    const e = errorOf(() => writeFrameHeader(buf, 0, { ...request, ...patch }, 0));
    assertEquals(e.code, "INVALID_ARGUMENT");
    assertEquals(e.field, field);
  }
  assertEquals(errorOf(() => writeFrameHeader(buf, 1, request, 0)).code, "INVALID_ARGUMENT");
  assertThrows(() => methodId(256, 1), ProtocolError);
  assertEquals(methodId(6, 7), 0x0607);
});

Deno.test("a pooled writer coalesces frames into one chunk and reuses its memory", () => {
  const writer = new FrameWriter(32);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 100; i++) {
      writer.append({ ...request, requestId: BigInt(i) }, new Uint8Array(i % 7).fill(i));
    }
    const frames = decodeAll([writer.bytes().slice()]);
    assertEquals(frames.length, 100);
    assertEquals(frames[99]!.requestId, 99n);
    assertEquals(Array.from(frames[13]!.payload), new Array(6).fill(13));
    const buffer = writer.buffer;
    writer.clear();
    assertEquals(writer.length, 0);
    writer.append(request);
    assert(writer.buffer === buffer, "clear should keep the grown buffer");
    writer.clear();
  }
});

Deno.test("a header sent apart from its payload frames the payload without copying it", () => {
  const payload = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
  const header = frameHeader({ ...request, priority: Priority.Snapshot }, payload.length);
  assertEquals(header.length, FRAME_HEADER_BYTES);
  const [frame] = decodeAll([header, payload]);
  assertEquals(frame!.priority, Priority.Snapshot);
  assert(frame!.payload === payload || frame!.payload.buffer === payload.buffer);
  assertEquals(frame!.payload[12345], 12345 & 0xff);
});
