/**
 * A gRPC client written at the byte level, for behaviour no real client
 * has: it sends HTTP/2 requests over a plain TCP socket and never reads what
 * comes back, not even the server's SETTINGS. Only what such a client needs:
 * the connection preface, SETTINGS, WINDOW_UPDATE, and HEADERS (HPACK
 * literals without indexing or Huffman) plus DATA for each unary call.
 */

const text = new TextEncoder();

/** One HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length << 8);
  out[3] = type;
  out[4] = flags;
  view.setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [value];
  const out = [max];
  for (value -= max; value >= 128; value >>>= 7) out.push((value & 0x7f) | 0x80);
  out.push(value);
  return out;
}

/** A header field as a literal without indexing, new name (RFC 7541 §6.2.2). */
function literal(name: string, value: string): number[] {
  const n = text.encode(name);
  const v = text.encode(value);
  return [0x00, ...hpackInt(n.length, 7), ...n, ...hpackInt(v.length, 7), ...v];
}

const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_SETTINGS = 4;
const FRAME_WINDOW_UPDATE = 8;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const MAX_WINDOW = 0x7fff_ffff;
/** The server's default SETTINGS_MAX_FRAME_SIZE. */
const MAX_DATA_FRAME = 16_384;

/** A client that calls and never reads. */
export class NonReadingGrpcClient {
  readonly #conn: Deno.TcpConn;
  #nextStream = 1;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /**
   * Connects and opens HTTP/2. With `window: "open"` it grants the server the
   * largest flow-control windows, so the server may push every answer into
   * the socket; with `"closed"` it keeps the defaults and never updates them,
   * so answers wait inside the server's HTTP/2 session.
   */
  static async connect(port: number, window: "open" | "closed"): Promise<NonReadingGrpcClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const client = new NonReadingGrpcClient(conn);
    const settings = new Uint8Array(window === "open" ? 6 : 0);
    if (window === "open") {
      new DataView(settings.buffer).setUint16(0, SETTINGS_INITIAL_WINDOW_SIZE);
      new DataView(settings.buffer).setUint32(2, MAX_WINDOW);
    }
    await client.#write(text.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    await client.#write(frame(FRAME_SETTINGS, 0, 0, settings));
    if (window === "open") {
      const increment = new Uint8Array(4);
      new DataView(increment.buffer).setUint32(0, MAX_WINDOW - 65_535);
      await client.#write(frame(FRAME_WINDOW_UPDATE, 0, 0, increment));
    }
    // The server's SETTINGS are never read, but they must be acknowledged.
    await client.#write(frame(FRAME_SETTINGS, ACK, 0, new Uint8Array(0)));
    return client;
  }

  /**
   * Sends one unary call of `path` with `message` (protobuf bytes, at most
   * 64 KiB so it fits the server's stream window); resolves with the bytes
   * written once the socket took them.
   */
  async call(path: string, message: Uint8Array): Promise<number> {
    const stream = this.#nextStream;
    this.#nextStream += 2;
    const headers = new Uint8Array([
      ...literal(":method", "POST"),
      ...literal(":scheme", "http"),
      ...literal(":path", path),
      ...literal(":authority", "localhost"),
      ...literal("content-type", "application/grpc"),
      ...literal("te", "trailers"),
    ]);
    const body = new Uint8Array(5 + message.length);
    new DataView(body.buffer).setUint32(1, message.length);
    body.set(message, 5);
    let bytes = await this.#write(frame(FRAME_HEADERS, END_HEADERS, stream, headers));
    for (let at = 0; at < body.length; at += MAX_DATA_FRAME) {
      const end = Math.min(body.length, at + MAX_DATA_FRAME);
      const flags = end === body.length ? END_STREAM : 0;
      bytes += await this.#write(frame(FRAME_DATA, flags, stream, body.subarray(at, end)));
    }
    return bytes;
  }

  /** Closes the socket; a write waiting on it fails. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // closed by the server already
    }
  }

  async #write(bytes: Uint8Array): Promise<number> {
    for (let at = 0; at < bytes.length;) at += await this.#conn.write(bytes.subarray(at));
    return bytes.length;
  }
}
