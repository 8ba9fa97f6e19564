/**
 * The server side of the service framework: implementations registered
 * against declarations, and calls dispatched to them from request bytes.
 *
 * Owns: {@link RpcRouter}. Imports `services.ts`, `errors.ts` and
 * `@bufbuild/protobuf`; nothing of the transports, which hand it bytes and a
 * context and get bytes (or an {@link RpcError}) back.
 *
 * @module
 */

import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, RpcError } from "./errors.ts";
import type { CallContext, MethodInfo, ServiceImpl, ServiceInfo, ServiceName } from "./services.ts";

/** A registered method, ready to be called with request bytes. */
export interface BoundMethod {
  readonly info: MethodInfo;
  /** Unary: decodes the request, runs the handler, encodes the response. */
  readonly unary?: (request: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;
  /** Server streaming: decodes the request, yields each encoded response. */
  readonly stream?: (request: Uint8Array, ctx: CallContext) => AsyncIterable<Uint8Array>;
}

type AnyHandler = (request: unknown, ctx: CallContext) => unknown;

function decodeRequest(info: MethodInfo, bytes: Uint8Array): unknown {
  try {
    return fromBinary(info.desc.input, bytes);
  } catch (e) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `${info.label}: malformed request (${bytes.length} bytes): ${(e as Error).message}`,
    );
  }
}

function encodeResponse(info: MethodInfo, output: DescMessage, value: unknown): Uint8Array {
  if (value === null || typeof value !== "object") {
    throw new RpcError(Code.INTERNAL, `${info.label}: handler returned ${value}, not a message`);
  }
  // deno-lint-ignore no-explicit-any
  return toBinary(output, create(output, value as any));
}

/**
 * Maps wire method ids to implementations.
 *
 * @example
 * ```ts
 * import { RpcRouter } from "./router.ts";
 * import { Health } from "./services.ts";
 * const router = new RpcRouter().register(Health, {
 *   check: () => ({ status: 1, nodeId: 1n }),
 *   ping: (req) => ({ payload: req.payload, clientSendTimeNs: req.clientSendTimeNs }),
 * });
 * ```
 */
export class RpcRouter {
  readonly #methods = new Map<number, BoundMethod>();
  readonly #services = new Set<ServiceName>();

  /** Registers an implementation of every method of `service`. */
  register<S extends ServiceInfo>(service: S, impl: ServiceImpl<S["desc"]>): this {
    if (this.#services.has(service.name)) {
      throw new Error(`rpc: service ${service.name} is already registered`);
    }
    for (const info of service.methods) {
      const handler = (impl as unknown as Record<string, AnyHandler>)[info.desc.localName];
      if (typeof handler !== "function") {
        throw new Error(`rpc: implementation of ${service.name} has no ${info.desc.localName}()`);
      }
      const output = info.desc.output;
      const bound: BoundMethod = info.kind === "unary"
        ? {
          info,
          unary: async (bytes, ctx) =>
            encodeResponse(info, output, await handler.call(impl, decodeRequest(info, bytes), ctx)),
        }
        : {
          info,
          stream: async function* (bytes, ctx) {
            const items = handler.call(impl, decodeRequest(info, bytes), ctx) as AsyncIterable<
              unknown
            >;
            for await (const item of items) yield encodeResponse(info, output, item);
          },
        };
      this.#methods.set(info.wireId, bound);
    }
    this.#services.add(service.name);
    return this;
  }

  /** The registered method for a frame's method field. */
  resolve(wireId: number): BoundMethod | undefined {
    return this.#methods.get(wireId);
  }

  /** Whether `service` has an implementation here. */
  serves(service: ServiceName): boolean {
    return this.#services.has(service);
  }

  /** Names of the registered services. */
  services(): ServiceName[] {
    return [...this.#services];
  }
}
