/**
 * Ports for test nodes and test servers that must be chosen before the
 * process that binds them starts (a config file names them).
 *
 * A port asked of the kernel with port 0 comes from its ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Linux by default),
 * the range every outgoing connection of every test running beside this one
 * also draws from: between the pick and the bind, one of them can take it
 * (seen in CI: a node that failed to start with EADDRINUSE on such a port).
 * These ports are drawn at random below that range, where only another
 * explicit bind can land, checked free when picked, and never handed out
 * twice by one process.
 */

import dgram from "node:dgram";

/** The lowest port drawn. */
const LOWEST = 20_000;
/** The ephemeral range's start when it cannot be read. */
const DEFAULT_EPHEMERAL_START = 32_768;

const handedOut = new Set<number>();

function ephemeralStart(): number {
  try {
    const text = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range");
    const start = Number(text.trim().split(/\s+/)[0]);
    return Number.isInteger(start) && start > LOWEST + 1_000 ? start : DEFAULT_EPHEMERAL_START;
  } catch {
    return DEFAULT_EPHEMERAL_START;
  }
}

const highest = Math.min(ephemeralStart(), 65_536) - 1;

/** A port not handed out before by this process, below the ephemeral range. */
function candidate(): number {
  for (;;) {
    const port = LOWEST + Math.floor(Math.random() * (highest - LOWEST + 1));
    if (!handedOut.has(port)) return port;
  }
}

/** Tries `attempt` on candidates until one is free; fails after 1,000 ports in use. */
async function pick(what: string, attempt: (port: number) => Promise<boolean>): Promise<number> {
  for (let i = 0; i < 1_000; i++) {
    const port = candidate();
    if (await attempt(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free ${what} port found in ${LOWEST}..${highest} after 1,000 tries`);
}

/** A TCP port on 127.0.0.1 nothing listens on right now. */
export function freeTcpPort(): number {
  for (let i = 0; i < 1_000; i++) {
    const port = candidate();
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      handedOut.add(port);
      return port;
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    }
  }
  throw new Error(`no free TCP port found in ${LOWEST}..${highest} after 1,000 tries`);
}

/**
 * Binds UDP `port` on `host` and lets it go; false if it is in use. A host
 * without that address (no IPv6) has nothing there to collide with: true.
 */
function udpFree(type: "udp4" | "udp6", host: string, port: number): Promise<boolean> {
  const socket = dgram.createSocket(type);
  return new Promise<boolean>((resolve) => {
    socket.once("error", (e: Error & { code?: string }) => {
      try {
        socket.close();
      } catch {
        // Never bound: nothing to close.
      }
      resolve(e.code !== "EADDRINUSE");
    });
    socket.bind(port, host, () => socket.close(() => resolve(true)));
  });
}

/**
 * A UDP port free on 127.0.0.1 and on [::1] right now: an Iroh endpoint bound
 * to 127.0.0.1:P also binds [::1]:P.
 */
export function freeUdpPort(): Promise<number> {
  return pick(
    "UDP",
    async (port) => await udpFree("udp4", "127.0.0.1", port) && await udpFree("udp6", "::1", port),
  );
}

/** A free TCP port and a free UDP port (see {@link freeTcpPort}, {@link freeUdpPort}). */
export async function freePorts(): Promise<{ tcp: number; udp: number }> {
  return { tcp: freeTcpPort(), udp: await freeUdpPort() };
}
