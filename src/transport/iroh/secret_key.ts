/**
 * The node's Ed25519 secret key file: load it, or create it on first start.
 *
 * Owns: the key file format, its permission check, and atomic creation.
 * Imports `binding.ts` only to derive the endpoint id.
 *
 * Format: 64 hexadecimal characters (the 32-byte Ed25519 seed that the
 * binding's `SecretKey.fromBytes` and `EndpointBuilder.secretKey` take),
 * optionally followed by one newline. Written lowercase with a newline.
 * Hex, not raw bytes, because the binding has no string form for secret keys
 * to stay compatible with, and hex survives `cat`, copy-paste into a secrets
 * store and diffing, and a truncated or edited file is detected by length.
 *
 * Security (DESIGN §10): created with mode 0600 under a 0700 directory; an
 * existing file that grants any permission to group or others is refused, as
 * `ssh` refuses a private key. Creation writes a temporary file in the same
 * directory, fsyncs it, then links it into place (which fails if another
 * process created the key first: that key wins and is loaded), then fsyncs the
 * directory. A crash leaves either no key file or a complete one, never a
 * half-written key. A malformed key file is refused, never regenerated:
 * regenerating would silently change the node's identity.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { binding } from "./binding.ts";
import { toArray } from "./bytes.ts";

/** Bytes in an Ed25519 secret key (seed). */
export const SECRET_KEY_BYTES = 32;

/** File name of the key under the data directory when the config names none. */
export const DEFAULT_SECRET_KEY_FILE_NAME = "iroh_secret_key";

/** Key files larger than this are refused before reading (64 hex + CRLF fits easily). */
const MAX_KEY_FILE_BYTES = 1024;

/** Machine-readable reason of a {@link SecretKeyError}. */
export type SecretKeyErrorCode =
  /** Group or others have some permission on the key file. */
  | "INSECURE_PERMISSIONS"
  /** The file's content is not 64 hex characters (plus an optional newline). */
  | "MALFORMED"
  /** The path exists but is not a regular file. */
  | "NOT_A_FILE"
  /** Reading, writing or syncing failed; the message has the OS error. */
  | "IO";

/**
 * The key file cannot be used. The message names the path, what was found
 * and how to fix it.
 */
export class SecretKeyError extends Error {
  override readonly name = "SecretKeyError";
  readonly code: SecretKeyErrorCode;
  readonly path: string;
  /** Permission bits found (e.g. `0o644`), set on `INSECURE_PERMISSIONS`. */
  readonly mode: number | undefined;

  constructor(
    code: SecretKeyErrorCode,
    path: string,
    message: string,
    options: { mode?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = path;
    this.mode = options.mode;
  }
}

/** A key read from or written to its file. */
export interface LoadedSecretKey {
  /** The 32-byte Ed25519 seed. */
  readonly secretKey: Uint8Array;
  /** The key file. */
  readonly path: string;
  /** True when this call generated the key and wrote the file. */
  readonly created: boolean;
}

/** `<dataDir>/iroh_secret_key`. */
export function defaultSecretKeyPath(dataDir: string): string {
  return join(dataDir, DEFAULT_SECRET_KEY_FILE_NAME);
}

/**
 * Loads the key at `path`, or generates one and writes it there if the file
 * does not exist. Missing parent directories are created with mode 0700.
 *
 * @throws {SecretKeyError} when the file is readable by group or others,
 * malformed, not a regular file, or cannot be read or written.
 *
 * @example
 * ```ts ignore
 * const { secretKey, created } = await loadOrCreateSecretKey(defaultSecretKeyPath("/var/lib/blixard"));
 * const endpoint = await createEndpoint({ secretKey });
 * ```
 */
export async function loadOrCreateSecretKey(path: string): Promise<LoadedSecretKey> {
  const existing = await readSecretKeyFileIfExists(path);
  if (existing !== null) return { secretKey: existing, path, created: false };
  const secretKey = crypto.getRandomValues(new Uint8Array(SECRET_KEY_BYTES));
  const won = await writeNewKeyFile(path, secretKey);
  if (won) return { secretKey, path, created: true };
  // Another process linked its key first; that one is the node's identity.
  const theirs = await readSecretKeyFileIfExists(path);
  if (theirs === null) {
    throw new SecretKeyError("IO", path, `secret key file ${path} vanished while being created`);
  }
  return { secretKey: theirs, path, created: false };
}

/**
 * Reads an existing key file, with the same checks as
 * {@link loadOrCreateSecretKey}, without ever creating one (`key show`).
 *
 * @throws {SecretKeyError} `IO` if the file does not exist, or as above.
 */
export async function readSecretKeyFile(path: string): Promise<Uint8Array> {
  const key = await readSecretKeyFileIfExists(path);
  if (key === null) {
    throw new SecretKeyError("IO", path, `secret key file ${path} does not exist`);
  }
  return key;
}

/** The endpoint id (lowercase hex public key) that a secret key gives the node. */
export function endpointIdOf(secretKey: Uint8Array): string {
  assertKeyLength(secretKey);
  return binding.SecretKey.fromBytes(toArray(secretKey)).public().toString();
}

/** The key file's text for `secretKey`: 64 lowercase hex characters and a newline. */
export function formatSecretKey(secretKey: Uint8Array): string {
  assertKeyLength(secretKey);
  let hex = "";
  for (const byte of secretKey) hex += byte.toString(16).padStart(2, "0");
  return `${hex}\n`;
}

/**
 * Parses a key file's text. `path` is only used in the error message.
 *
 * @throws {SecretKeyError} `MALFORMED`, naming what was found.
 */
export function parseSecretKey(text: string, path: string): Uint8Array {
  const fix = `expected ${
    SECRET_KEY_BYTES * 2
  } hex characters and an optional newline; restore the file from a backup, or delete it to generate a new key (this changes the node's endpoint id)`;
  const body = text.endsWith("\r\n")
    ? text.slice(0, -2)
    : text.endsWith("\n")
    ? text.slice(0, -1)
    : text;
  if (body.length === 0) {
    throw new SecretKeyError("MALFORMED", path, `secret key file ${path} is empty: ${fix}`);
  }
  const bad = /[^0-9a-fA-F]/.exec(body);
  if (bad !== null) {
    const shown = JSON.stringify(bad[0]);
    throw new SecretKeyError(
      "MALFORMED",
      path,
      `secret key file ${path} has ${shown} at offset ${bad.index}: ${fix}`,
    );
  }
  if (body.length !== SECRET_KEY_BYTES * 2) {
    throw new SecretKeyError(
      "MALFORMED",
      path,
      `secret key file ${path} has ${body.length} hex characters: ${fix}`,
    );
  }
  const key = new Uint8Array(SECRET_KEY_BYTES);
  for (let i = 0; i < SECRET_KEY_BYTES; i++) {
    key[i] = parseInt(body.slice(i * 2, i * 2 + 2), 16);
  }
  return key;
}

/** Permission bits as `0644`. */
export function formatMode(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, "0")}`;
}

async function readSecretKeyFileIfExists(path: string): Promise<Uint8Array | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw ioError(path, "cannot open", e);
  }
  try {
    // fstat on the open file, so the checks apply to exactly what is read.
    const info = await file.stat();
    if (!info.isFile) {
      throw new SecretKeyError(
        "NOT_A_FILE",
        path,
        `secret key file ${path} is not a regular file; point [iroh] secret_key_file at a file`,
      );
    }
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      const mode = info.mode & 0o777;
      throw new SecretKeyError(
        "INSECURE_PERMISSIONS",
        path,
        `secret key file ${path} has mode ${
          formatMode(mode)
        }: group or others can access it (allowed: 0600 or 0400); fix with: chmod 600 ${path}`,
        { mode },
      );
    }
    if (info.size > MAX_KEY_FILE_BYTES) {
      throw new SecretKeyError(
        "MALFORMED",
        path,
        `secret key file ${path} is ${info.size} bytes: expected ${
          SECRET_KEY_BYTES * 2
        } hex characters and an optional newline`,
      );
    }
    const buf = new Uint8Array(MAX_KEY_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = await file.read(buf.subarray(length));
      if (n === null || n === 0) break;
      length += n;
      if (length === buf.length) break;
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, length));
    } catch {
      throw new SecretKeyError(
        "MALFORMED",
        path,
        `secret key file ${path} is not text (raw bytes?): expected ${
          SECRET_KEY_BYTES * 2
        } hex characters and an optional newline`,
      );
    }
    return parseSecretKey(text, path);
  } catch (e) {
    if (e instanceof SecretKeyError) throw e;
    throw ioError(path, "cannot read", e);
  } finally {
    file.close();
  }
}

/** Writes the key atomically. Returns false if a key file appeared meanwhile. */
async function writeNewKeyFile(path: string, secretKey: Uint8Array): Promise<boolean> {
  const dir = dirname(path);
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ioError(path, `cannot create directory ${dir} for`, e);
  }
  const suffix = formatSecretKey(crypto.getRandomValues(new Uint8Array(SECRET_KEY_BYTES)))
    .slice(0, 12);
  const tmp = `${path}.tmp-${Deno.pid}-${suffix}`;
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      // The umask can only clear bits; chmod makes it exactly 0600 regardless.
      await Deno.chmod(tmp, 0o600);
      const data = new TextEncoder().encode(formatSecretKey(secretKey));
      let written = 0;
      while (written < data.length) written += await file.write(data.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    let won: boolean;
    try {
      // link(2) never replaces an existing file, unlike rename(2).
      await Deno.link(tmp, path);
      won = true;
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) {
        won = false;
      } else {
        // Filesystems without hard links: rename is still atomic, only not exclusive.
        await Deno.rename(tmp, path);
        won = true;
      }
    }
    await syncDirectory(dir);
    return won;
  } catch (e) {
    throw ioError(path, "cannot write", e);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}

function assertKeyLength(secretKey: Uint8Array): void {
  if (secretKey.length !== SECRET_KEY_BYTES) {
    throw new RangeError(
      `secret key: ${secretKey.length} bytes: expected ${SECRET_KEY_BYTES}`,
    );
  }
}

function ioError(path: string, what: string, cause: unknown): SecretKeyError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new SecretKeyError("IO", path, `${what} secret key file ${path}: ${reason}`, { cause });
}
