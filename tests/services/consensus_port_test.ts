/**
 * Every consensus error code becomes the RPC status whose meaning matches
 * what the caller knows about its write (src/services/consensus_port.ts).
 */

import { assert, assertEquals } from "../assert.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { toRpcError } from "../../src/services/consensus_port.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";

const EXPECTED: Record<ConsensusError["code"], number> = {
  NOT_LEADER: Code.UNAVAILABLE,
  UNAVAILABLE: Code.UNAVAILABLE,
  LOST: Code.ABORTED,
  REFUSED: Code.FAILED_PRECONDITION,
  STOPPED: Code.UNKNOWN,
  FAILED: Code.UNKNOWN,
  UNKNOWN: Code.UNKNOWN,
};

Deno.test("each consensus error code maps to the RPC status a caller acts on, naming the call", () => {
  for (const [code, rpc] of Object.entries(EXPECTED)) {
    const mapped = toRpcError(new ConsensusError(code as ConsensusError["code"], "why"), "x.Put");
    assert(mapped instanceof RpcError, `${code} was not mapped`);
    assertEquals(mapped.code, rpc, code);
    assert(mapped.message.startsWith("x.Put: why"), mapped.message);
    if (rpc === Code.UNKNOWN) assert(mapped.message.includes("same request id"), mapped.message);
  }
});
