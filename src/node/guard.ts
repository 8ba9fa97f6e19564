/**
 * The gate in front of the calls that change cluster state: a caller the
 * principals do not authenticate as a peer or an operator gets
 * PERMISSION_DENIED before the call does anything.
 *
 * Owns: {@link guardChanges}. Imports `rpc/` types and the principals'
 * refusal type.
 *
 * @module
 */

import { Code, RpcError } from "../rpc/errors.ts";
import type { CallContext, PeerInfo } from "../rpc/services.ts";
import type { Refusal } from "./principals.ts";

/** Whether `peer` may do `what` ("vm.Create"); null when it may. */
export type AuthorizeChange = (peer: PeerInfo, what: string) => Refusal | null;

/**
 * `impl` with each of `methods` checked first: a refused caller gets
 * PERMISSION_DENIED naming the call and why, and the method never runs.
 * The other methods are passed through as they are.
 */
export function guardChanges<T extends object>(
  service: string,
  impl: T,
  methods: readonly (keyof T & string)[],
  authorize: AuthorizeChange,
): T {
  const guarded: Record<string, unknown> = { ...impl as Record<string, unknown> };
  for (const method of methods) {
    const handler = impl[method] as (req: unknown, ctx: CallContext) => unknown;
    const what = `${service}.${method[0]!.toUpperCase()}${method.slice(1)}`;
    guarded[method] = (req: unknown, ctx: CallContext) => {
      const refusal = authorize(ctx.peer, what);
      if (refusal) throw new RpcError(Code.PERMISSION_DENIED, `${what}: ${refusal.reason}`);
      return handler.call(impl, req, ctx);
    };
  }
  return guarded as T;
}
