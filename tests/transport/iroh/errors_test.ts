import assert from "node:assert/strict";
import {
  bindingErrorText,
  CloseCode,
  IrohError,
  isAllowed,
  normalizeEndpointId,
  parseCloseReason,
  preHandshakeVerdict,
} from "../../../src/transport/iroh/mod.ts";
import { toIrohError } from "../../../src/transport/iroh/errors.ts";

const ID = "5c5c6c1acd59a850d543b4f4f3258cdb9ea04425a3a615111540d0b77d91f6b5";

Deno.test("binding error text loses its backtrace and source paths", () => {
  const raw = new Error(
    "ConnectError::Connecting (/root/.cargo/registry/src/iroh-1.0.2/src/endpoint.rs:1060:20)\n" +
      "Caused by:\n" +
      "    ConnectingError::ConnectionError (/root/.rustup/lib/rustlib/src/core/src/task/poll.rs:258:39)\n" +
      "    aborted by peer: the server refused to accept a new connection\n\n" +
      "Stack backtrace:\n   0: <anyhow::Error>::msg\n   1: anyhow::__private::format_err",
  );
  assert.equal(
    bindingErrorText(raw),
    "ConnectError::Connecting: ConnectingError::ConnectionError: aborted by peer: the server refused to accept a new connection",
  );
});

Deno.test("close reasons parse into who closed, the code and the reason", () => {
  assert.deepEqual(parseCloseReason("closed by peer: endpoint not allowed (code 403)"), {
    byPeer: true,
    code: 403,
    reason: "endpoint not allowed",
  });
  assert.deepEqual(parseCloseReason("closed by peer: 0"), { byPeer: true, code: 0, reason: "" });
  assert.deepEqual(parseCloseReason("closed"), {
    byPeer: false,
    code: undefined,
    reason: "closed",
  });
  assert.deepEqual(parseCloseReason("timed out"), {
    byPeer: false,
    code: undefined,
    reason: "timed out",
  });
});

Deno.test("binding failures map to codes a caller can match", () => {
  const ctx = { operation: "read", remoteId: ID };
  const code = (text: string, closeReason: string | null = null) =>
    toIrohError(new Error(text), { ...ctx, closeReason }).code;
  assert.equal(code("Reset(5)"), "STREAM_RESET");
  assert.equal(toIrohError(new Error("Reset(5)"), ctx).closeCode, 5);
  assert.equal(code("Stopped(6)"), "STREAM_STOPPED");
  assert.equal(code("FinishedEarly(2)"), "STREAM_FINISHED_EARLY");
  assert.equal(code("TooLong"), "TOO_LONG");
  assert.equal(code("ConnectionLost(LocallyClosed)"), "CONNECTION_CLOSED");
  assert.equal(code("LocallyClosed", "closed"), "CONNECTION_CLOSED");
  assert.equal(
    code(
      'ConnectionLost(ApplicationClosed(ApplicationClose { error_code: 403, reason: b"endpoint not allowed" }))',
    ),
    "NOT_ALLOWED",
  );
  assert.equal(code("anything", "closed by peer: endpoint not allowed (code 403)"), "NOT_ALLOWED");
  assert.equal(code("anything", "closed by peer: bye (code 9)"), "CONNECTION_CLOSED");
  assert.equal(
    code("ConnectError::Connect: Endpoint is closed"),
    "ENDPOINT_CLOSED",
  );
  assert.equal(
    code("ConnectError::Connecting: ConnectingError::ConnectionError: timed out"),
    "CONNECT_FAILED",
  );
  assert.equal(code("Failed to convert u32 to u8"), "BINDING_ERROR");
  const passthrough = new IrohError("TIMEOUT", "x");
  assert.equal(toIrohError(passthrough, ctx), passthrough);
  assert.equal(CloseCode.NotAllowed, 403);
});

Deno.test("only a relay-vouched, disallowed id is refused before the handshake", () => {
  const allow = new Set([ID]);
  const other = "ab".repeat(32);
  assert.equal(
    preHandshakeVerdict({ kind: "relay", addr: "https://r.example", endpointId: other }, allow),
    "refuse",
  );
  assert.equal(
    preHandshakeVerdict({ kind: "relay", addr: "https://r.example", endpointId: ID }, allow),
    "handshake",
  );
  assert.equal(
    preHandshakeVerdict({ kind: "ip", addr: "10.0.0.1:7", endpointId: undefined }, allow),
    "handshake",
  );
  assert.equal(isAllowed((id) => id === ID, ID), true);
  assert.equal(isAllowed(allow, other), false);
});

Deno.test("endpoint ids normalise to lowercase hex; garbage names the value", () => {
  assert.equal(normalizeEndpointId(ID), ID);
  assert.equal(normalizeEndpointId(ID.toUpperCase()), ID);
  assert.throws(
    () => normalizeEndpointId("nope"),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /"nope"/.test(e.message),
  );
});
