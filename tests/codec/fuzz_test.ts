/**
 * Fuzz-style tests: many thousands of random and mutated byte strings fed to
 * the decoders. Each run must end in frames or a typed ProtocolError: never
 * another exception, never a hang, never unbounded memory. fast-check prints
 * the seed of a failing run; pass it back as `{ seed, path }` to replay.
 */

import { assert } from "../assert.ts";
import fc from "fast-check";
import {
  decodeRaftFrame,
  decodeRaftMessage,
  encodeFrame,
  encodeRaftMessage,
  FrameDecoder,
  ProtocolError,
  type RaftMessage,
} from "@blixard/agent";
import { chunkSizesArb, concat, frameArb, raftMessageArb, split } from "./arbitraries.ts";

const MAX_FRAME_BYTES = 64 * 1024;

/**
 * Runs the decoder over `chunks` the way a transport does. Returns the number of
 * frames and whether it ended in a ProtocolError; rethrows anything else.
 * The loop is bounded: each iteration consumes at least one byte or stops.
 */
function drive(chunks: readonly Uint8Array[]): { frames: number; failed: boolean } {
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES });
  let frames = 0;
  let total = 0;
  try {
    for (const chunk of chunks) {
      total += chunk.length;
      decoder.push(chunk);
      for (let f = decoder.next(); f !== null; f = decoder.next()) {
        frames++;
        assert(frames <= total / 24, "more frames than bytes allow");
        // Raft payloads inside are decoded too; errors there are typed as well.
        if (f.method >>> 8 === 6) {
          try {
            decodeRaftFrame(f);
          } catch (e) {
            if (!(e instanceof ProtocolError)) throw e;
          }
        }
      }
      // Bounded memory: never more buffered than received, nor more than one frame's worth.
      assert(decoder.bufferedBytes <= total);
      assert(decoder.bufferedBytes <= chunk.length + MAX_FRAME_BYTES + 24);
    }
    decoder.end();
    return { frames, failed: false };
  } catch (e) {
    if (e instanceof ProtocolError) return { frames, failed: true };
    throw e;
  }
}

/** Mutations of a valid stream: flip, overwrite, insert, delete, truncate. */
const mutationArb = fc.array(
  fc.tuple(
    fc.constantFrom("flip", "set", "insert", "delete", "truncate"),
    fc.nat(),
    fc.nat({ max: 255 }),
  ),
  { minLength: 1, maxLength: 6 },
);

function mutate(bytes: Uint8Array, mutations: readonly [string, number, number][]): Uint8Array {
  let out = Array.from(bytes);
  for (const [op, pos, value] of mutations) {
    const at = out.length === 0 ? 0 : pos % out.length;
    if (op === "flip") out[at] = (out[at] ?? 0) ^ (1 << (value % 8));
    else if (op === "set") out[at] = value;
    else if (op === "insert") out.splice(at, 0, value);
    else if (op === "delete") out.splice(at, 1);
    else out = out.slice(0, at);
  }
  return new Uint8Array(out);
}

Deno.test("20,000 random byte strings each end in frames or a typed error", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), chunkSizesArb, (bytes, sizes) => {
      drive(split(bytes, sizes));
    }),
    { numRuns: 20_000 },
  );
});

Deno.test("random bytes behind a valid header prefix reach every check, each typed", () => {
  // Random bytes rarely start with "BX"; these do, so the later fields get fuzzed too.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 3, maxLength: 300 }), chunkSizesArb, (bytes, sizes) => {
      bytes[0] = 0x42;
      bytes[1] = 0x58;
      bytes[2] = 1;
      drive(split(bytes, sizes));
    }),
    { numRuns: 20_000 },
  );
});

Deno.test("10,000 mutated valid streams each end in frames or a typed error", () => {
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 6 }),
      mutationArb,
      chunkSizesArb,
      (frames, mutations, sizes) => {
        const stream = concat(frames.map((f) => encodeFrame(f.header, f.payload)));
        drive(split(mutate(stream, mutations), sizes));
      },
    ),
    { numRuns: 10_000 },
  );
});

Deno.test("10,000 mutated Raft payloads decode to a message or a typed error", () => {
  fc.assert(
    fc.property(raftMessageArb, mutationArb, (msg: RaftMessage, mutations) => {
      try {
        decodeRaftMessage(mutate(encodeRaftMessage(msg), mutations));
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
      }
    }),
    { numRuns: 10_000 },
  );
});
