/**
 * TLS credentials of gRPC channels, from the PEM files the config names.
 *
 * Owns: {@link channelCredentials}. Imports `@grpc/grpc-js`, `node:tls`,
 * `util/address.ts` (pure host:port parsing) and this folder's wire and
 * error modules.
 *
 * Why not just `credentials.createSsl`: grpc-js always passes the target's
 * host to `tls.connect` as `servername` (SNI), and Deno's `node:tls` throws
 * on an IP address there ("options.servername must not be an IP address";
 * Node only warns, and RFC 6066 §3 forbids IP literals in SNI). Peers are
 * usually addressed by IP, so for an IP target without an explicit server
 * name the channel connects with its own small connector: no SNI, the
 * certificate checked against the IP address (its IP SAN), the same CA and
 * client certificate. Every other target uses grpc-js's own credentials.
 *
 * @module
 */

import type { Buffer } from "node:buffer";
import * as tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { HostPort } from "../../util/address.ts";
import { GrpcTransportError } from "./errors.ts";
import { readPem } from "./wire.ts";

/** TLS of a channel. With only `caFile`: TLS; with `certFile` and `keyFile` too: mutual TLS. */
export interface GrpcClientTls {
  /** PEM CA bundle the server's certificate must chain to. Default: the system's roots. */
  readonly caFile?: string;
  /** PEM client certificate chain, for mutual TLS. Set together with `keyFile`. */
  readonly certFile?: string;
  /** PEM private key of `certFile`. */
  readonly keyFile?: string;
  /** The name the server's certificate must carry, when it is not the target's host. */
  readonly serverName?: string;
}

type Connector = ReturnType<grpc.ChannelCredentials["_createSecureConnector"]>;
type Target = Parameters<grpc.ChannelCredentials["_createSecureConnector"]>[0];

/** TLS to an IP address: no SNI, the certificate checked against the address. */
class IpTargetCredentials extends grpc.ChannelCredentials {
  readonly #context: tls.SecureContext;
  readonly #host: string;

  constructor(context: tls.SecureContext, host: string) {
    super();
    this.#context = context;
    this.#host = host;
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(
    _target: Target,
    _options: grpc.ChannelOptions,
    callCredentials?: grpc.CallCredentials,
  ): Connector {
    const context = this.#context;
    const host = this.#host;
    return {
      connect(socket) {
        return new Promise((resolve, reject) => {
          const secured = tls.connect({
            socket,
            secureContext: context,
            host,
            ALPNProtocols: ["h2"],
          }, () => {
            if (!secured.authorized) {
              reject(secured.authorizationError ?? new Error("server certificate not trusted"));
              return;
            }
            resolve({ socket: secured, secure: true });
          });
          secured.on("error", reject);
        });
      },
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => callCredentials ?? grpc.CallCredentials.createEmpty(),
      destroy() {},
    };
  }
}

/** The credentials of a channel to `target` with `options`; reads the PEM files now. */
export function channelCredentials(
  options: GrpcClientTls,
  target: HostPort,
): grpc.ChannelCredentials {
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    const [has, lacks] = options.certFile === undefined
      ? ["key_file", "cert_file"]
      : ["cert_file", "key_file"];
    throw new GrpcTransportError(
      "INVALID_ARGUMENT",
      `grpc client TLS: ${has} needs ${lacks} as well (mutual TLS takes both)`,
    );
  }
  const ca = options.caFile === undefined ? null : readPem(options.caFile, "grpc.tls.ca_file");
  const cert = options.certFile === undefined
    ? null
    : readPem(options.certFile, "grpc.tls.cert_file");
  const key = options.keyFile === undefined ? null : readPem(options.keyFile, "grpc.tls.key_file");
  try {
    if (target.kind !== "name" && options.serverName === undefined) {
      return new IpTargetCredentials(secureContext(ca, cert, key), target.host);
    }
    return grpc.credentials.createSsl(ca, key, cert);
  } catch (e) {
    throw new GrpcTransportError("TLS_FILE", `grpc client TLS: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

function secureContext(ca: Buffer | null, cert: Buffer | null, key: Buffer | null) {
  return tls.createSecureContext({
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
  });
}
