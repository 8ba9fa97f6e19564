/**
 * An established Iroh (QUIC) connection to one peer.
 *
 * Owns: {@link IrohConnection}, {@link IrohBiStream}. Imports the binding's
 * types, `bytes.ts`, `errors.ts` and `stream.ts`.
 *
 * @module
 */

import type { RawConnection } from "./binding.ts";
import { arrayToText, textToArray } from "./bytes.ts";
import {
  CloseCode,
  type CloseInfo,
  type IrohError,
  parseCloseReason,
  toIrohError,
} from "./errors.ts";
import { IrohRecvStream, IrohSendStream } from "./stream.ts";

/** Both halves of a bidirectional stream. */
export interface IrohBiStream {
  readonly send: IrohSendStream;
  readonly recv: IrohRecvStream;
}

/** A connection whose handshake is complete; the remote id is authenticated. */
export class IrohConnection {
  /** The binding's connection, for calls this wrapper does not cover. */
  readonly raw: RawConnection;
  /** The peer's endpoint id (lowercase hex), proven by the TLS handshake. */
  readonly remoteId: string;
  /** The ALPN both sides agreed on. */
  readonly alpn: string;
  /** `"client"` if this side dialled. */
  readonly side: "client" | "server";

  constructor(raw: RawConnection) {
    this.raw = raw;
    this.remoteId = raw.remoteId().toString();
    this.alpn = arrayToText(raw.alpn());
    this.side = raw.side() === "Client" ? "client" : "server";
  }

  /** Opens a bidirectional stream. The peer sees it once this side writes to it. */
  async openBi(): Promise<IrohBiStream> {
    try {
      return this.#bi(await this.raw.openBi());
    } catch (e) {
      throw this.#error(e, "openBi");
    }
  }

  /** Waits for the peer to open a bidirectional stream. */
  async acceptBi(): Promise<IrohBiStream> {
    try {
      return this.#bi(await this.raw.acceptBi());
    } catch (e) {
      throw this.#error(e, "acceptBi");
    }
  }

  /** Opens a unidirectional stream towards the peer. */
  async openUni(): Promise<IrohSendStream> {
    try {
      return new IrohSendStream(await this.raw.openUni(), this.raw, this.remoteId);
    } catch (e) {
      throw this.#error(e, "openUni");
    }
  }

  /** Waits for the peer to open a unidirectional stream. */
  async acceptUni(): Promise<IrohRecvStream> {
    try {
      return new IrohRecvStream(await this.raw.acceptUni(), this.raw, this.remoteId);
    } catch (e) {
      throw this.#error(e, "acceptUni");
    }
  }

  /**
   * Closes the connection at once: pending and later operations on both
   * sides fail with `CONNECTION_CLOSED` (or `NOT_ALLOWED` for that code).
   * Data not yet delivered is dropped; `finish` streams first for a clean end.
   */
  close(code: number = CloseCode.Normal, reason = ""): void {
    if (!Number.isInteger(code) || code < 0) {
      throw new RangeError(`close: code ${code}: expected a non-negative integer`);
    }
    this.raw.close(BigInt(code), textToArray(reason));
  }

  /** Resolves when the connection is closed, for whatever reason. Never rejects. */
  async closed(): Promise<CloseInfo> {
    return parseCloseReason(await this.raw.closed());
  }

  /** Why the connection closed, or `null` while it is open. */
  closeInfo(): CloseInfo | null {
    const text = this.raw.closeReason();
    return text === null ? null : parseCloseReason(text);
  }

  /**
   * The path QUIC uses now: `"direct"` (UDP to the peer's address),
   * `"relay"`, or `"none"` while no path is selected (or the connection closed).
   */
  selectedPath(): "direct" | "relay" | "none" {
    let paths;
    try {
      paths = this.raw.paths();
    } catch {
      return "none";
    }
    const selected = paths.find((p) => p.isSelected);
    return selected === undefined ? "none" : selected.isRelay ? "relay" : "direct";
  }

  /** Round-trip time of the selected path, in whole milliseconds, if known. */
  rttMs(): number | null {
    return this.raw.rtt();
  }

  #bi(raw: { send: IrohSendStream["raw"]; recv: IrohRecvStream["raw"] }): IrohBiStream {
    return {
      send: new IrohSendStream(raw.send, this.raw, this.remoteId),
      recv: new IrohRecvStream(raw.recv, this.raw, this.remoteId),
    };
  }

  #error(e: unknown, operation: string): IrohError {
    return toIrohError(e, {
      operation,
      remoteId: this.remoteId,
      closeReason: this.raw.closeReason(),
    });
  }
}
