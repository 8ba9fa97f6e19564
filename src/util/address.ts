/**
 * Socket addresses as the config file writes them: `"host:port"`, with the
 * host a DNS name, an IPv4 address or a bracketed IPv6 address.
 *
 * Owns: parsing and classifying those strings (is it an IP literal, is it
 * loopback), and saying why a bind failed. Pure functions; imports nothing.
 *
 * @module
 */

/** A parsed `"host:port"`. */
export interface HostPort {
  /** As written, without the IPv6 brackets. */
  readonly host: string;
  readonly port: number;
  readonly kind: "ipv4" | "ipv6" | "name";
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Parses `"host:port"`; `undefined` if it is not one. The port is 0..65535
 * (callers that dial rather than bind reject 0).
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./address.ts";
 * parseHostPort("[::1]:7400"); // { host: "::1", port: 7400, kind: "ipv6" }
 * parseHostPort("10.0.0.1");   // undefined: no port
 * ```
 */
export function parseHostPort(text: string): HostPort | undefined {
  const colon = text.lastIndexOf(":");
  if (colon <= 0) return undefined;
  const hostPart = text.slice(0, colon);
  const portPart = text.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portPart)) return undefined;
  const port = Number(portPart);
  if (port > 65535) return undefined;
  if (hostPart.startsWith("[") && hostPart.endsWith("]")) {
    const host = hostPart.slice(1, -1);
    return isIpv6(host) ? { host, port, kind: "ipv6" } : undefined;
  }
  if (IPV4.test(hostPart)) {
    return isIpv4(hostPart) ? { host: hostPart, port, kind: "ipv4" } : undefined;
  }
  if (hostPart.length > 253) return undefined;
  const labels = hostPart.split(".");
  // An all-numeric last label is a malformed IPv4 address, not a name (RFC 3696 §2).
  if (!labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels.at(-1)!)) return undefined;
  return { host: hostPart, port, kind: "name" };
}

/** True for dotted-quad IPv4 with every octet 0..255. */
export function isIpv4(text: string): boolean {
  const m = IPV4.exec(text);
  return m !== null &&
    m.slice(1).every((o) => Number(o) <= 255 && (o === "0" || !o.startsWith("0")));
}

/** True for an IPv6 address (no zone id), as the WHATWG URL parser accepts it. */
export function isIpv6(text: string): boolean {
  if (!text.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(text)) return false;
  try {
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * True if the host is loopback: `localhost`, 127.0.0.0/8 or `::1`. Anything
 * else, the unspecified addresses `0.0.0.0` and `::` included, can be reached
 * from other hosts.
 */
export function isLoopback(address: HostPort): boolean {
  switch (address.kind) {
    case "name":
      return address.host.toLowerCase() === "localhost";
    case "ipv4":
      return address.host.split(".")[0] === "127";
    case "ipv6":
      return new URL(`http://[${address.host}]/`).hostname === "[::1]";
  }
}

/**
 * Why a listener could not bind, in words an operator can act on, with
 * `inUseHint` after it when the address is in use. Reads both Deno's error
 * classes (`Deno.serve`, `Deno.listen`) and Node's error codes (`node:net`,
 * as grpc-js listens).
 *
 * @example
 * ```ts
 * import { whyNotBound } from "./address.ts";
 * whyNotBound(Object.assign(new Error("listen EADDRINUSE"), { code: "EADDRINUSE" }));
 * // "the address is in use (another process, or another node on this host, holds the port)"
 * ```
 */
export function whyNotBound(error: unknown, inUseHint = ""): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") {
    return "the address is in use (another process, or another node on this host, holds the port)" +
      inUseHint;
  }
  if (error instanceof Deno.errors.AddrNotAvailable || code === "EADDRNOTAVAIL") {
    return "no interface of this host has that address";
  }
  if (error instanceof Deno.errors.PermissionDenied || code === "EACCES") {
    return "permission denied (ports below 1024 need privileges)";
  }
  return error instanceof Error ? error.message : String(error);
}
