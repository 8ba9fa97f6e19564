/**
 * How grpc-js's client errors become RpcErrors: the server's code and
 * message kept, local failures named by call and peer, and a write to a
 * closed connection counted as the transport's failure.
 */

import { assert, assertEquals } from "../../assert.ts";
import { fromServiceError, statusOf } from "../../../src/transport/grpc/errors.ts";
import { Code, isTransportFailure, RpcError } from "../../../src/rpc/errors.ts";

Deno.test("a server's status keeps its code and message exactly", () => {
  const e = fromServiceError({ code: 5, details: 'vm "web-1" does not exist' }, "vm.Get", "p:1");
  assertEquals([e.code, e.message], [Code.NOT_FOUND, 'vm "web-1" does not exist']);
  assert(!isTransportFailure(e));
});

Deno.test("failures grpc-js makes up locally name the call and the peer", () => {
  const e = fromServiceError(
    { code: 4, details: "Deadline exceeded after 0.151s" },
    "health.Ping",
    "10.0.0.2:7400",
  );
  assertEquals(e.code, Code.DEADLINE_EXCEEDED);
  assertEquals(e.message, "health.Ping: 10.0.0.2:7400: Deadline exceeded after 0.151s");
  // A server message that already names the call is not prefixed again.
  const s = fromServiceError(
    { code: 4, details: "health.Ping: deadline of 200 ms passed on the server" },
    "health.Ping",
    "p:1",
  );
  assertEquals(s.message, "health.Ping: deadline of 200 ms passed on the server");
});

Deno.test("a write to a connection the peer closed is UNAVAILABLE, not INTERNAL", () => {
  const e = fromServiceError(
    {
      code: 13,
      details: "Received RST_STREAM with code 2 triggered by internal client error: write EPIPE",
    },
    "health.Check",
    "127.0.0.1:7400",
  );
  assertEquals(e.code, Code.UNAVAILABLE);
  assert(isTransportFailure(e));
  // Deno reports the same EPIPE by its message alone (seen while a reload stopped a listener).
  const ended = fromServiceError(
    {
      code: 13,
      details:
        "Received RST_STREAM with code 2 triggered by internal client error: This socket has been ended by the other party",
    },
    "health.Check",
    "127.0.0.1:7400",
  );
  assertEquals(ended.code, Code.UNAVAILABLE);
  // A handler's own INTERNAL stays INTERNAL.
  assertEquals(fromServiceError({ code: 13, details: "boom" }, "a.B", "p:1").code, Code.INTERNAL);
});

Deno.test("a code outside gRPC's is UNKNOWN", () => {
  assertEquals(fromServiceError({ code: 99, details: "?" }, "a.B", "p:1").code, Code.UNKNOWN);
  assertEquals(fromServiceError(new Error("odd"), "a.B", "p:1").code, Code.UNKNOWN);
});

Deno.test("a handler's RpcError answers with its code; anything else is INTERNAL", () => {
  assertEquals(statusOf(new RpcError(Code.NOT_FOUND, "gone")), { code: 5, details: "gone" });
  assertEquals(statusOf(new TypeError("bad")), { code: 13, details: "bad" });
});
