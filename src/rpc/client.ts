/**
 * The client side of the service framework: typed clients over any
 * transport that can move request and response bytes.
 *
 * Owns: {@link CallTransport}, {@link createClient}. Imports `services.ts`,
 * `errors.ts` and `@bufbuild/protobuf`.
 *
 * @module
 */

import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, RpcError } from "./errors.ts";
import type { CallOptions, Client, MethodInfo, ServiceInfo } from "./services.ts";

/** What a transport adapter offers clients: bytes in, bytes out. */
export interface CallTransport {
  unary(method: MethodInfo, request: Uint8Array, options?: CallOptions): Promise<Uint8Array>;
  serverStream(
    method: MethodInfo,
    request: Uint8Array,
    options?: CallOptions,
  ): AsyncIterable<Uint8Array>;
}

function decodeResponse(method: MethodInfo, schema: DescMessage, bytes: Uint8Array): unknown {
  try {
    return fromBinary(schema, bytes);
  } catch (e) {
    throw new RpcError(
      Code.INTERNAL,
      `${method.label}: malformed response (${bytes.length} bytes): ${(e as Error).message}`,
    );
  }
}

/**
 * A typed client of `service` over `transport`: one method per declared
 * method, taking a message (or its init object) and returning the decoded
 * response, or an async iterable of them for server streaming.
 *
 * @example
 * ```ts ignore
 * const health = createClient(Health, irohTransportTo(peer));
 * const res = await health.ping({ payload: new Uint8Array(8) }, { deadlineMs: 500 });
 * ```
 */
export function createClient<S extends ServiceInfo>(
  service: S,
  transport: CallTransport,
): Client<S["desc"]> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const { input, output } = method.desc;
    // deno-lint-ignore no-explicit-any
    const encode = (request: any) => toBinary(input, create(input, request));
    client[method.desc.localName] = method.kind === "unary"
      ? async (request: unknown, options?: CallOptions) =>
        decodeResponse(method, output, await transport.unary(method, encode(request), options))
      : async function* (request: unknown, options?: CallOptions) {
        for await (const bytes of transport.serverStream(method, encode(request), options)) {
          yield decodeResponse(method, output, bytes);
        }
      };
  }
  return Object.freeze(client) as Client<S["desc"]>;
}
