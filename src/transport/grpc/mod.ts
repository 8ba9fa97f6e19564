/**
 * The gRPC transport: the services of an RpcRouter served over
 * `@grpc/grpc-js`, and channels to call peers, with TLS or mutual TLS from
 * PEM files. The same implementations answer here and over Iroh.
 *
 * Owns: nothing itself; re-exports this folder's public surface. Imports
 * only this folder.
 *
 * @example Serve and call on loopback
 * ```ts ignore
 * import { GrpcChannel, GrpcRpcServer } from "./mod.ts";
 *
 * const server = new GrpcRpcServer({ router, bind: "127.0.0.1:0" });
 * const { port } = await server.start();
 * const health = createClient(Health, new GrpcChannel({ target: `127.0.0.1:${port}` }));
 * console.log(await health.check({}));
 * ```
 *
 * @module
 */

export { GrpcChannel, type GrpcChannelOptions, GrpcRpcClient } from "./client.ts";
export { GrpcTransportError, type GrpcTransportErrorCode } from "./errors.ts";
export {
  type GrpcPeerInfo,
  GrpcRpcServer,
  type GrpcRpcServerOptions,
  type GrpcServerStats,
  type GrpcServerTls,
} from "./server.ts";
export type { GrpcClientTls } from "./tls.ts";
export { RAFT_SEND_PATH } from "./wire.ts";
