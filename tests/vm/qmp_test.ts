/**
 * The QMP client against a real qemu (`-machine none`: QMP without a guest,
 * up in well under a second), and against a scripted socket peer for what
 * qemu never does on its own: overlong lines, garbage, silence.
 */

import { assert, assertEquals, assertMatch, rejection } from "../assert.ts";
import { QmpClient, QmpError, type QmpEvent } from "../../src/vm/qmp.ts";

/** A real qemu with a QMP socket and no guest; stopped by the returned dispose. */
async function qemuNone() {
  const dir = await Deno.makeTempDir({ prefix: "blixard-qmp-" });
  const socket = `${dir}/qmp.sock`;
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-machine",
      "none",
      "-nodefaults",
      "-display",
      "none",
      "-qmp",
      `unix:${socket},server=on,wait=off`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // qemu creates the socket file when it binds, and listens a moment later.
  for (;;) {
    const probe = await Deno.connect({ transport: "unix", path: socket }).catch(() => undefined);
    if (probe !== undefined) {
      probe.close();
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return {
    socket,
    child,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited already
      }
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * A unix socket peer that sends the greeting, answers qmp_capabilities,
 * then hands each later request line to `onRequest` with a way to write raw
 * bytes back.
 */
async function scriptedPeer(
  onRequest: (line: string, send: (text: string) => Promise<void>) => Promise<void> | void,
) {
  const dir = await Deno.makeTempDir({ prefix: "blixard-qmp-peer-" });
  const socket = `${dir}/qmp.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  const conns: Deno.Conn[] = [];
  const served = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const send = async (text: string) => {
        const bytes = new TextEncoder().encode(text);
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
      };
      await send('{"QMP": {"version": {}, "capabilities": []}}\n');
      let buffered = "";
      try {
        for await (const chunk of conn.readable) {
          buffered += new TextDecoder().decode(chunk);
          let nl: number;
          while ((nl = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (line.includes("qmp_capabilities")) {
              await send(`{"return": {}, "id": ${JSON.parse(line).id}}\n`);
            } else await onRequest(line, send);
          }
        }
      } catch {
        // the client closed
      }
    }
  })();
  return {
    socket,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed by the reader already
        }
      }
      await served.catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("the client negotiates with qemu and runs commands", async () => {
  await using q = await qemuNone();
  const c = await QmpClient.connect(q.socket);
  assertEquals(await c.execute("query-status"), {
    status: "running",
    singlestep: false,
    running: true,
  });
  const version = await c.execute("query-version") as { qemu: { major: number } };
  assert(version.qemu.major >= 7);
  c.close();
  await c.closed;
});

Deno.test("a command qemu refuses fails with COMMAND_FAILED and qemu's error class", async () => {
  await using q = await qemuNone();
  const c = await QmpClient.connect(q.socket);
  const e = await rejection(QmpError, () => c.execute("no-such-command"));
  assertEquals([e.code, e.qmpClass], ["COMMAND_FAILED", "CommandNotFound"]);
  assertMatch(e.message, /^qmp: no-such-command: The command no-such-command has not been found$/);
  c.close();
  await c.closed;
});

Deno.test("events reach listeners in order, and only the newest maxEvents are kept", async () => {
  await using q = await qemuNone();
  const c = await QmpClient.connect(q.socket, { maxEvents: 1 });
  const seen: string[] = [];
  c.onEvent((e: QmpEvent) => seen.push(e.event));
  await c.execute("stop");
  await c.execute("cont");
  while (seen.length < 2) await new Promise((r) => setTimeout(r, 5));
  assertEquals(seen, ["STOP", "RESUME"]);
  assertEquals(c.events.map((e) => e.event), ["RESUME"]);
  c.close();
  await c.closed;
});

Deno.test("when qemu exits, the SHUTDOWN event arrives, the connection closes, and commands fail with CLOSED", async () => {
  await using q = await qemuNone();
  const c = await QmpClient.connect(q.socket);
  await c.execute("quit").catch(() => {}); // qemu may close before it answers
  assertEquals(await c.closed, "qemu closed the socket");
  assertEquals(c.events.at(-1)?.event, "SHUTDOWN");
  assertEquals(c.events.at(-1)?.data, { guest: false, reason: "host-qmp-quit" });
  const e = await rejection(QmpError, () => c.execute("query-status"));
  assertEquals(e.code, "CLOSED");
  await q.child.status;
});

Deno.test("a second client gets no greeting while the first holds the socket, and is told so", async () => {
  await using q = await qemuNone();
  const first = await QmpClient.connect(q.socket);
  const e = await rejection(QmpError, () => QmpClient.connect(q.socket, { connectTimeoutMs: 300 }));
  assertEquals(e.code, "CONNECT_FAILED");
  assertMatch(e.message, /no greeting on .* within 300 ms \(another client may hold the socket/);
  first.close();
  await first.closed;
});

Deno.test("a missing socket is CONNECT_FAILED naming the path", async () => {
  const e = await rejection(QmpError, () => QmpClient.connect("/nonexistent/qmp.sock"));
  assertEquals(e.code, "CONNECT_FAILED");
  assertMatch(e.message, /^qmp: cannot connect to \/nonexistent\/qmp.sock: /);
});

Deno.test("a line longer than maxLineBytes closes the connection with LINE_TOO_LONG", async () => {
  await using peer = await scriptedPeer((_line, send) => send(`{"return": "${"x".repeat(5000)}`));
  const c = await QmpClient.connect(peer.socket, { maxLineBytes: 4096 });
  const e = await rejection(QmpError, () => c.execute("query-status"));
  assertEquals(e.code, "LINE_TOO_LONG");
  assertEquals(await c.closed, "qemu sent a line longer than 4096 bytes");
});

Deno.test("a line that is not JSON closes the connection with PROTOCOL", async () => {
  await using peer = await scriptedPeer((_line, send) => send("Hello, I am not QMP\n"));
  const c = await QmpClient.connect(peer.socket);
  const e = await rejection(QmpError, () => c.execute("query-status"));
  assertEquals(e.code, "PROTOCOL");
  assertMatch(await c.closed, /not JSON: Hello, I am not QMP/);
});

Deno.test("an unanswered command times out; its late answer is ignored and the connection goes on", async () => {
  const held: { id: number; send: (t: string) => Promise<void> }[] = [];
  await using peer = await scriptedPeer(async (line, send) => {
    const { id, execute } = JSON.parse(line);
    if (execute === "slow") held.push({ id, send });
    else {
      for (const h of held.splice(0)) await h.send(`{"return": "late", "id": ${h.id}}\n`);
      await send(`{"return": "${execute}", "id": ${id}}\n`);
    }
  });
  const c = await QmpClient.connect(peer.socket);
  const e = await rejection(QmpError, () => c.execute("slow", undefined, 50));
  assertEquals([e.code, e.message], ["TIMEOUT", "qmp: slow: no answer within 50 ms"]);
  assertEquals(await c.execute("fast"), "fast");
  c.close();
  await c.closed;
});

Deno.test("at most maxPending commands wait for answers", async () => {
  await using peer = await scriptedPeer(() => {});
  const c = await QmpClient.connect(peer.socket, { maxPending: 2 });
  const waiting = [c.execute("a"), c.execute("b")].map((p) => p.catch((e: QmpError) => e.code));
  const e = await rejection(QmpError, () => c.execute("c"));
  assertEquals(e.code, "TOO_MANY_PENDING");
  c.close();
  assertEquals(await Promise.all(waiting), ["CLOSED", "CLOSED"]);
  await c.closed;
});
