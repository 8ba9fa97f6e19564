/**
 * The low-level Iroh layer: the node's key file, endpoints, connections and
 * streams over `@number0/iroh`, in `Uint8Array`s with typed errors.
 *
 * Owns: nothing itself; re-exports this folder's public surface. The Iroh RPC
 * transport builds on it. Imports of this folder point only at the binding
 * and `node:path`; nothing here knows frames, services or Raft.
 *
 * @example Dial a peer and echo
 * ```ts ignore
 * import { createEndpoint, loadOrCreateSecretKey } from "./mod.ts";
 *
 * const { secretKey } = await loadOrCreateSecretKey("/var/lib/blixard/iroh_secret_key");
 * await using endpoint = await createEndpoint({ secretKey, relayMode: "disabled" });
 * const conn = await endpoint.connect(ticketFromConfig);
 * const { send, recv } = await conn.openBi();
 * await send.write(new TextEncoder().encode("ping"));
 * console.log(await recv.read());
 * ```
 *
 * @module
 */

export { bindingErrorText } from "./binding.ts";
export { arrayToText, textToArray, toArray, toBytes } from "./bytes.ts";
export { type IrohBiStream, IrohConnection } from "./connection.ts";
export {
  companionBindAddr,
  createEndpoint,
  DEFAULT_ALPN,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_PENDING_HANDSHAKES,
  type EndpointAllowlist,
  type IncomingAddr,
  IncomingConnection,
  IrohEndpoint,
  type IrohEndpointOptions,
  isAllowed,
  normalizeEndpointId,
  parseTicket,
  type PeerAddr,
  type PeerTarget,
  preHandshakeVerdict,
  type RelayModeOption,
  toTicket,
} from "./endpoint.ts";
export {
  CloseCode,
  type CloseInfo,
  IrohError,
  type IrohErrorCode,
  parseCloseReason,
} from "./errors.ts";
export {
  DEFAULT_SECRET_KEY_FILE_NAME,
  defaultSecretKeyPath,
  endpointIdOf,
  formatSecretKey,
  type LoadedSecretKey,
  loadOrCreateSecretKey,
  parseSecretKey,
  readSecretKeyFile,
  SECRET_KEY_BYTES,
  SecretKeyError,
  type SecretKeyErrorCode,
} from "./secret_key.ts";
export { DEFAULT_READ_CHUNK_BYTES, IrohRecvStream, IrohSendStream } from "./stream.ts";
