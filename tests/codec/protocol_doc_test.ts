/**
 * docs/protocol.md is part of the contract: its worked examples are decoded
 * here from the document's own text, so the document and the code cannot
 * disagree without this test failing.
 */

import { assert, assertEquals } from "../assert.ts";
import { decodeRaftFrame, type Frame, FrameDecoder } from "@blixard/agent";

const doc = await Deno.readTextFile(new URL("../../docs/protocol.md", import.meta.url));

interface Example {
  readonly bytes: Uint8Array;
  readonly rows: readonly { field: string; bytes: string; value: string }[];
}

function parseHex(text: string): Uint8Array {
  const digits = text.trim().split(/\s+/).filter((s) => s !== "");
  return new Uint8Array(digits.map((d) => {
    assert(/^[0-9a-f]{2}$/.test(d), `bad hex byte ${d}`);
    return parseInt(d, 16);
  }));
}

function example(name: string): Example {
  const start = doc.indexOf(`<!-- example: ${name} -->`);
  assert(start >= 0, `docs/protocol.md has no example "${name}"`);
  const rest = doc.slice(start);
  const hex = /```hex\n([\s\S]*?)```/.exec(rest);
  assert(hex, `example ${name} has no hex block`);
  const afterHex = rest.slice(hex.index + hex[0].length);
  const rows = [];
  for (const line of afterHex.split("\n").map((l) => l.trim())) {
    if (rows.length > 0 && !line.startsWith("|")) break;
    const cells = line.split("|").slice(1, -1).map((c) => c.trim());
    if (cells.length !== 3 || cells[0] === "field" || cells[0]!.startsWith("---")) continue;
    rows.push({ field: cells[0]!, bytes: cells[1]!.replaceAll("`", ""), value: cells[2]! });
  }
  assert(rows.length > 0, `example ${name} has no field table`);
  return { bytes: parseHex(hex[1]!), rows };
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The value a table row names, read from the decoded frame. */
function actual(frame: Frame, raw: Uint8Array, field: string): string {
  switch (field) {
    case "magic":
      return "0x" + hex(raw.subarray(0, 2));
    case "version":
      return String(raw[2]);
    case "type":
    case "flags":
    case "priority":
    case "method":
      return String(frame[field]);
    case "request id":
      return String(frame.requestId);
    case "payload length":
      return String(frame.payload.length);
    case "deadline":
      return String(frame.deadlineMs);
    case "payload":
      return hex(frame.payload);
  }
  const raft = /^raft (\w+)$/.exec(field);
  assert(raft, `unknown field "${field}" in the doc's table`);
  const msg = decodeRaftFrame(frame) as unknown as Record<string, unknown>;
  assert(raft[1]! in msg, `the decoded Raft message has no field ${raft[1]}`);
  return String(msg[raft[1]!]);
}

for (const name of ["request-frame", "heartbeat-frame"]) {
  Deno.test(`the ${name} example in docs/protocol.md decodes to the values its table states`, () => {
    const { bytes, rows } = example(name);
    // The table's byte column, in order, is exactly the hex block.
    assertEquals(rows.map((r) => r.bytes.replaceAll(" ", "")).join(""), hex(bytes));

    const decoder = new FrameDecoder();
    decoder.push(bytes);
    const frame = decoder.next();
    assert(frame !== null, "the example is not a whole frame");
    decoder.end();
    for (const row of rows) assertEquals(actual(frame, bytes, row.field), row.value, row.field);
  });
}
