/**
 * The suite's traffic stays on this machine: `npx deno task test` runs it in a
 * network namespace with only loopback (scripts/loopback.sh), because every
 * Iroh endpoint sends a UPnP search to the local network when it binds.
 *
 * Run this file outside that namespace (`deno test` alone) and the first test
 * fails, as it should: run one file the README's way with
 * `npx deno task loopback ./node_modules/.bin/deno test -A tests/env/loopback_test.ts`.
 *
 * The tests that start the script from another namespace create it with
 * `unshare --net`, which needs root or a user namespace; the suite has one
 * (it is root inside its own namespace).
 */

import { assert, assertEquals } from "../assert.ts";

const root = new URL("../../", import.meta.url).pathname;
const SCRIPT = `${root}scripts/loopback.sh`;
const dec = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(command: string, args: string[], env?: Record<string, string>): Promise<Run> {
  const out = await new Deno.Command(command, { args, cwd: root, env, stdin: "null" }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Starts `script` (sh) in a fresh network namespace that also has a dummy
 * interface pair `blx0`/`blx1`, like a host with a network card, and returns its result.
 */
function inNamespaceWithAnInterface(script: string, env?: Record<string, string>): Promise<Run> {
  return run("unshare", [
    "--net",
    "sh",
    "-c",
    `ip link add blx0 type veth peer name blx1 && ip link set lo up && ${script}`,
  ], env);
}

Deno.test("a process the suite starts sees no network interface but lo, and multicast has nowhere to go", async () => {
  // Started the way tests start their servers and clients: Deno.Command, inheriting everything.
  const probe = `
    const names = Deno.readTextFileSync("/proc/self/net/dev").split("\\n").slice(2)
      .map((l) => l.split(":")[0].trim()).filter((n) => n).sort();
    let ssdp = null;
    // Only once it is known that nothing can leave: an empty datagram to where UPnP's M-SEARCH goes.
    if (names.join() === "lo") {
      const socket = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
      ssdp = await socket
        .send(new Uint8Array(0), { transport: "udp", hostname: "239.255.255.250", port: 1900 })
        .then(() => "sent", (e) => e.code);
      socket.close();
    }
    console.log(JSON.stringify({ names, ssdp }));
  `;
  const out = await run(Deno.execPath(), ["eval", "--unstable-net", probe]);
  assertEquals(out.code, 0, out.stderr);
  const seen = JSON.parse(out.stdout);
  assertEquals(
    seen.names,
    ["lo"],
    `this process's children can reach the host's network through ${seen.names}; ` +
      `run the suite with npx deno task test (or one file with npx deno task loopback ...)`,
  );
  assertEquals(seen.ssdp, "ENETUNREACH");
});

Deno.test("the loopback script runs a command in place when it is already isolated", async () => {
  const out = await run("bash", [
    SCRIPT,
    "sh",
    "-c",
    'readlink /proc/self/ns/net; printf "%s|" "$@"; exit 7',
    "sh",
    "two words",
    "'quoted'",
  ]);
  assertEquals(out.code, 7, out.stderr);
  const [ns, args] = out.stdout.split("\n");
  assertEquals(ns, Deno.readLinkSync("/proc/self/ns/net"), "the script nested a new namespace");
  assertEquals(args, "two words|'quoted'|");
});

Deno.test("from a namespace with a network interface, the loopback script moves the command to one with only lo, up", async () => {
  const out = await inNamespaceWithAnInterface(
    `ip -o link show | grep -c ": blx0@"; exec bash ${SCRIPT} ip -o link show`,
  );
  assertEquals(out.code, 0, out.stderr);
  const [before, ...links] = out.stdout.trim().split("\n");
  assertEquals(before, "1", "the namespace the script started in had no blx0");
  assertEquals(links.length, 1, out.stdout);
  assert(/^1: lo: <LOOPBACK,UP,LOWER_UP>/.test(links[0]!), out.stdout);
});

Deno.test("the loopback script refuses to run a command where no namespace can be made", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blixard-loopback-" });
  try {
    // What unshare says where the kernel refuses namespaces; this cannot be arranged for real
    // without changing a sysctl for the whole machine.
    await Deno.writeTextFile(
      `${dir}/unshare`,
      '#!/bin/sh\necho "unshare: unshare failed: Operation not permitted" >&2\nexit 1\n',
      { mode: 0o755 },
    );
    const marker = `${dir}/ran`;
    const out = await inNamespaceWithAnInterface(
      `PATH="${dir}:$PATH" exec bash ${SCRIPT} touch ${marker}`,
    );
    assertEquals(out.code, 3, out.stderr);
    assert(out.stderr.includes("cannot make a network namespace with only loopback"), out.stderr);
    assert(out.stderr.includes("Operation not permitted"), out.stderr);
    assert(out.stderr.includes("Not running touch"), out.stderr);
    assertEquals(await Deno.stat(marker).then(() => true, () => false), false, "the command ran");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
