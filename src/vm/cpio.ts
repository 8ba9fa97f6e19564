/**
 * A writer of cpio archives in the "newc" format (the SVR4 portable format
 * without checksums), the format Linux unpacks an initramfs from. Written
 * here rather than calling the system `cpio`, which a bare Debian lacks, and
 * so that device nodes (/dev/console) need no root to create.
 *
 * Owns: {@link cpioNewc}, {@link CpioEntry}. Pure; imports nothing.
 *
 * Layout (Linux's Documentation/driver-api/early-userspace/buffer-format.rst):
 * per entry a 110-byte ASCII header, "070701" then 13 fields of 8 hex
 * digits, the NUL-terminated name padded to a multiple of 4, then the data
 * padded to a multiple of 4; a last entry named `TRAILER!!!` ends it.
 *
 * @module
 */

/** One file, directory, symlink or device node. */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash: `bin/busybox`. */
  readonly path: string;
  /** `file`, `dir`, `symlink` (data is the target) or `char` (a character device). */
  readonly type: "file" | "dir" | "symlink" | "char";
  /** Permission bits (default 0o755 for directories, 0o777 for symlinks, 0o644 otherwise). */
  readonly mode?: number;
  /** File contents, or a symlink's target. */
  readonly data?: Uint8Array | string;
  /** A device node's major and minor numbers. */
  readonly rdev?: readonly [number, number];
}

const TYPE_BITS = { file: 0o100000, dir: 0o040000, symlink: 0o120000, char: 0o020000 } as const;

/**
 * The archive of `entries`, in order. Times are 0 and owners root, so the
 * same entries always give the same bytes.
 *
 * @example
 * ```ts
 * import { cpioNewc } from "./cpio.ts";
 * const archive = cpioNewc([
 *   { path: "dev", type: "dir" },
 *   { path: "dev/console", type: "char", mode: 0o600, rdev: [5, 1] },
 *   { path: "init", type: "file", mode: 0o755, data: "#!/bin/sh\necho hi\n" },
 * ]);
 * new TextDecoder().decode(archive.subarray(0, 6)); // "070701"
 * ```
 */
export function cpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (bytes: Uint8Array) => {
    parts.push(bytes);
    size += bytes.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad > 0) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  let ino = 1;
  const all: CpioEntry[] = [...entries, { path: "TRAILER!!!", type: "file", mode: 0 }];
  for (const entry of all) {
    if (entry.path.startsWith("/") || entry.path === "") {
      throw new RangeError(`cpio: path ${JSON.stringify(entry.path)}: expected a relative path`);
    }
    const data = typeof entry.data === "string" ? encoder.encode(entry.data) : entry.data ??
      new Uint8Array();
    const trailer = entry.path === "TRAILER!!!";
    const perm = entry.mode ??
      (entry.type === "dir" ? 0o755 : entry.type === "symlink" ? 0o777 : 0o644);
    const name = encoder.encode(entry.path + "\0");
    const fields = [
      trailer ? 0 : ino++,
      trailer ? 0 : TYPE_BITS[entry.type] | (perm & 0o7777),
      0, // uid
      0, // gid
      trailer ? 1 : entry.type === "dir" ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      entry.rdev?.[0] ?? 0,
      entry.rdev?.[1] ?? 0,
      name.length,
      0, // check
    ];
    const header = "070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join("");
    const head = new Uint8Array(header.length + name.length);
    head.set(encoder.encode(header));
    head.set(name, header.length);
    push(head);
    if (data.length > 0) push(data);
  }
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
