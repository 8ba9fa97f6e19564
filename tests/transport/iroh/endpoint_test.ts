import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  CloseCode,
  companionBindAddr,
  createEndpoint,
  DEFAULT_ALPN,
  type IrohConnection,
  IrohError,
  parseTicket,
  toTicket,
} from "../../../src/transport/iroh/mod.ts";
import { endpointIdOf, parseSecretKey } from "../../../src/transport/iroh/secret_key.ts";
import {
  concat,
  freeUdpPort,
  loopbackEndpoint,
  patternBytes,
  randomKey,
  spawnHealthServer,
  within,
} from "./helpers.ts";

const WAIT_MS = 5_000;

/** Reads until the peer finishes the stream. */
async function readAll(
  recv: { read(max?: number): Promise<Uint8Array | null> },
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const chunk = await recv.read();
    if (chunk === null) return concat(chunks);
    chunks.push(chunk);
  }
}

/** Polls `condition` every 5 ms; fails after WAIT_MS. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("an endpoint reports its id, a dialable ticket and its loopback socket", async () => {
  await using endpoint = await loopbackEndpoint();
  assert.match(endpoint.id, /^[0-9a-f]{64}$/);
  const addr = endpoint.addr();
  assert.equal(addr.id, endpoint.id);
  assert.equal(addr.relayUrl, undefined);
  // Where lo is the only interface (the namespace the suite runs in), the binding also
  // advertises [::1] on the port of the `[::]` socket it always binds.
  const ipv4 = addr.directAddresses.filter((a) => /^127\.0\.0\.1:\d+$/.test(a));
  assert.equal(ipv4.length, 1, `${addr.directAddresses}`);
  assert.ok(
    addr.directAddresses.every((a) => /^(127\.0\.0\.1|\[::1\]):\d+$/.test(a)),
    `${addr.directAddresses}`,
  );
  assert.ok(endpoint.boundSockets().includes(ipv4[0]!));
  const ticket = endpoint.ticket();
  assert.ok(ticket.startsWith("endpoint"));
  assert.deepEqual(parseTicket(ticket), addr);
  assert.deepEqual(endpoint.alpns, [DEFAULT_ALPN]);
});

Deno.test("the same secret key gives the same endpoint id", async () => {
  const secretKey = randomKey();
  let first: string;
  {
    await using a = await createEndpoint({
      secretKey,
      bindAddr: "127.0.0.1:0",
      relayMode: "disabled",
    });
    first = a.id;
  }
  await using b = await createEndpoint({
    secretKey,
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
  });
  assert.equal(b.id, first);
});

Deno.test("bad endpoint options are refused with the value and what is allowed", async () => {
  await assert.rejects(
    createEndpoint({ secretKey: new Uint8Array(31), relayMode: "disabled" }),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /31 bytes/.test(e.message),
  );
  await assert.rejects(
    createEndpoint({ secretKey: randomKey(), relayMode: "disabled", bindAddr: "localhost" }),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /"localhost"/.test(e.message),
  );
  await assert.rejects(
    createEndpoint({ secretKey: randomKey(), relayMode: ["ftp://relay.example"] }),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /ftp:/.test(e.message),
  );
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    createEndpoint({ secretKey: randomKey(), relayMode: "none" as any }),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /"disabled"/.test(e.message),
  );
});

Deno.test("binding an address already in use fails with the address and the OS reason", async () => {
  await using taken = await loopbackEndpoint();
  const addr = taken.addr().directAddresses[0]!;
  await assert.rejects(
    createEndpoint({ secretKey: randomKey(), bindAddr: addr, relayMode: "disabled" }),
    (e: unknown) =>
      e instanceof IrohError && e.code === "BIND_FAILED" && e.message.includes(addr) &&
      /in use/.test(e.message),
  );
});

Deno.test("two endpoints connect and echo bytes both ways on one bidirectional stream, 1 MiB byte-exact", async () => {
  await using server = await loopbackEndpoint();
  await using client = await loopbackEndpoint([]);
  const serverSide = (async () => {
    const incoming = await server.acceptIncoming();
    assert.ok(incoming);
    const conn = await incoming.accept({ allow: new Set([client.id]) });
    assert.equal(conn.remoteId, client.id);
    assert.equal(conn.side, "server");
    const { send, recv } = await conn.acceptBi();
    // Echo everything back as it arrives, then finish.
    for (;;) {
      const chunk = await recv.read();
      if (chunk === null) break;
      await send.write(chunk);
    }
    await send.finish();
    return conn;
  })();

  const conn = await within(client.connect(server.ticket()), WAIT_MS, "connect");
  assert.equal(conn.remoteId, server.id);
  assert.equal(conn.alpn, DEFAULT_ALPN);
  assert.equal(conn.side, "client");
  const { send, recv } = await conn.openBi();

  const small = new TextEncoder().encode("ping");
  await send.write(small);
  assert.deepEqual(await within(recv.readExact(small.length), WAIT_MS, "small echo"), small);

  const big = patternBytes(1 << 20);
  const echoed = within(readAll(recv), 20_000, "1 MiB echo");
  await send.write(big);
  await send.finish();
  const got = await echoed;
  assert.equal(got.length, big.length);
  assert.deepEqual(got, big);

  const serverConn = await within(serverSide, WAIT_MS, "server side");
  conn.close();
  const info = await within(serverConn.closed(), WAIT_MS, "server sees the close");
  assert.equal(info.byPeer, true);
  assert.equal(info.code, CloseCode.Normal);
});

Deno.test("a unidirectional stream delivers its bytes and then end of stream", async () => {
  await using server = await loopbackEndpoint();
  await using client = await loopbackEndpoint([]);
  const received = (async () => {
    const conn = await (await server.acceptIncoming())!.accept({ allow: () => true });
    const recv = await conn.acceptUni();
    return await recv.readToEnd(1 << 16);
  })();
  const conn = await within(client.connect(server.addr()), WAIT_MS, "connect");
  const send = await conn.openUni();
  const payload = patternBytes(40_000, 7);
  await send.write(payload);
  await send.finish();
  assert.deepEqual(await within(received, WAIT_MS, "uni stream"), payload);
});

Deno.test("a peer whose endpoint id is not allowed is closed right after the handshake, before any stream", async () => {
  await using server = await loopbackEndpoint();
  await using intruder = await loopbackEndpoint([]);
  let streamsAccepted = 0;
  const verdict = (async () => {
    const incoming = await server.acceptIncoming();
    assert.ok(incoming);
    const from = await incoming.remoteAddr();
    // A direct (UDP) attempt carries no endpoint id before the handshake.
    assert.equal(from.kind, "ip");
    assert.equal(from.endpointId, undefined);
    try {
      const conn = await incoming.accept({ allow: new Set(["00".repeat(32)]) });
      await conn.acceptBi();
      streamsAccepted++;
      return null;
    } catch (e) {
      return e;
    }
  })();

  // TLS 1.3: the client completes its side of the handshake first.
  const conn = await within(intruder.connect(server.ticket()), WAIT_MS, "connect");
  const serverError = await within(verdict, WAIT_MS, "server verdict");
  assert.ok(serverError instanceof IrohError);
  assert.equal(serverError.code, "NOT_ALLOWED");
  assert.equal(serverError.remoteId, intruder.id);
  assert.match(serverError.message, new RegExp(intruder.id));

  // The client learns it at its first stream operation.
  const clientError = await within(
    (async () => {
      try {
        const { send, recv } = await conn.openBi();
        await send.write(new Uint8Array([1]));
        await recv.read();
        return null;
      } catch (e) {
        return e;
      }
    })(),
    WAIT_MS,
    "client notices the refusal",
  );
  assert.ok(clientError instanceof IrohError, String(clientError));
  assert.equal(clientError.code, "NOT_ALLOWED");
  assert.equal(clientError.closeCode, CloseCode.NotAllowed);
  assert.equal(streamsAccepted, 0);
  const info = await within(conn.closed(), WAIT_MS, "closed");
  assert.deepEqual(info, {
    byPeer: true,
    code: CloseCode.NotAllowed,
    reason: "endpoint not allowed",
  });
});

Deno.test("a refused incoming attempt fails the client's connect without a handshake", async () => {
  await using server = await loopbackEndpoint();
  await using client = await loopbackEndpoint([]);
  const refused = (async () => {
    const incoming = await server.acceptIncoming();
    await incoming!.refuse();
  })();
  await assert.rejects(
    within(client.connect(server.ticket()), WAIT_MS, "connect"),
    (e: unknown) =>
      e instanceof IrohError && e.code === "CONNECT_FAILED" && /refused/.test(e.message),
  );
  await within(refused, WAIT_MS, "refuse");
});

Deno.test("closing an endpoint fails a pending read on the peer instead of hanging", async () => {
  const server = await loopbackEndpoint();
  await using client = await loopbackEndpoint([]);
  try {
    const accepted = (async () => {
      const conn = await (await server.acceptIncoming())!.accept({ allow: new Set([client.id]) });
      const { recv } = await conn.acceptBi();
      await recv.readExact(1);
      return conn;
    })();
    const conn: IrohConnection = await within(client.connect(server.ticket()), WAIT_MS, "connect");
    const { send, recv } = await conn.openBi();
    await send.write(new Uint8Array([42])); // makes the stream visible to the server
    await within(accepted, WAIT_MS, "accept");

    // The handler is attached before the close, so the rejection is never unhandled.
    const pending = recv.read().then(() => null, (e) => e);
    await server.close();
    const error = await within(pending, WAIT_MS, "pending read");
    assert.ok(error instanceof IrohError, String(error));
    assert.equal(error.code, "CONNECTION_CLOSED");
    assert.equal(error.remoteId, server.id);
    assert.equal(server.closed, true);
    assert.equal(await server.acceptIncoming(), null);
  } finally {
    await server.close();
  }
});

Deno.test("a stream reset by the writer fails the reader's pending read with the code", async () => {
  await using server = await loopbackEndpoint();
  await using client = await loopbackEndpoint([]);
  const serverRead = (async () => {
    const conn = await (await server.acceptIncoming())!.accept({ allow: () => true });
    const { recv } = await conn.acceptBi();
    await recv.readExact(1);
    return await recv.read().then(() => null, (e) => e);
  })();
  const conn = await within(client.connect(server.ticket()), WAIT_MS, "connect");
  const { send } = await conn.openBi();
  await send.write(new Uint8Array([1]));
  await new Promise((r) => setTimeout(r, 20));
  await send.reset(7);
  const error = await within(serverRead, WAIT_MS, "reset read");
  assert.ok(error instanceof IrohError, String(error));
  assert.equal(error.code, "STREAM_RESET");
  assert.equal(error.closeCode, 7);
});

// ~3 s: the endpoint's close waits for the abandoned dial (the binding cannot cancel one).
Deno.test("dialling a dead address gives up at the caller's deadline", async () => {
  await using client = await loopbackEndpoint([]);
  let addr;
  {
    await using gone = await loopbackEndpoint();
    addr = gone.addr();
  }
  // TIMEOUT is this layer's own deadline firing, not the binding's 30 s one.
  await assert.rejects(
    client.connect(addr, { timeoutMs: 300 }),
    (e: unknown) => e instanceof IrohError && e.code === "TIMEOUT" && /300 ms/.test(e.message),
  );
});

Deno.test("an unparsable ticket or id is refused before dialling", async () => {
  await using client = await loopbackEndpoint([]);
  await assert.rejects(
    client.connect("endpointnotaticket"),
    (e: unknown) => e instanceof IrohError && e.code === "INVALID_ARGUMENT",
  );
  await assert.rejects(
    client.connect("xyz"),
    (e: unknown) =>
      e instanceof IrohError && e.code === "INVALID_ARGUMENT" && /"xyz"/.test(e.message),
  );
});

Deno.test("the accept loop hands over allowed peers, reports refused ones, and ends when the endpoint closes", async () => {
  const server = await loopbackEndpoint();
  await using member = await loopbackEndpoint([]);
  await using stranger = await loopbackEndpoint([]);
  const accepted: IrohConnection[] = [];
  const rejected: IrohError[] = [];
  const loop = server.acceptLoop({
    allow: (id) => id === member.id,
    onConnection: (c) => accepted.push(c),
    onRejected: (e) => rejected.push(e),
  });
  try {
    await within(member.connect(server.ticket()), WAIT_MS, "member connects");
    await until(() => accepted.length === 1, "member accepted");
    await within(stranger.connect(server.ticket()), WAIT_MS, "stranger's handshake");
    await until(() => rejected.length === 1, "stranger rejected");
    assert.equal(accepted.length, 1);
    assert.equal(accepted[0]!.remoteId, member.id);
    assert.equal(rejected.length, 1);
    assert.equal(rejected[0]!.code, "NOT_ALLOWED");
    assert.equal(rejected[0]!.remoteId, stranger.id);
  } finally {
    await server.close();
  }
  await within(loop, WAIT_MS, "accept loop ends");
});

Deno.test("an endpoint bound to a fixed port binds the other IP family on the same port", async () => {
  const port = await freeUdpPort();
  await using endpoint = await createEndpoint({
    secretKey: randomKey(),
    bindAddr: `127.0.0.1:${port}`,
    relayMode: "disabled",
  });
  assert.deepEqual(endpoint.boundSockets().sort(), [`127.0.0.1:${port}`, `[::1]:${port}`]);
  assert.deepEqual(endpoint.warnings, []);
  assert.deepEqual(
    ["127.0.0.1:7401", "0.0.0.0:7401", "10.1.2.3:7401", "[::1]:7401", "[::]:7401", "127.0.0.1:0"]
      .map(companionBindAddr),
    ["[::1]:7401", "[::]:7401", "[::]:7401", "127.0.0.1:7401", "0.0.0.0:7401", undefined],
  );
});

Deno.test("when the other IP family's port is taken, the endpoint binds the address asked and says why", async () => {
  const port = await freeUdpPort();
  const squatter = dgram.createSocket("udp6");
  await new Promise<void>((resolve, reject) => {
    squatter.once("error", reject);
    squatter.bind(port, "::1", resolve);
  });
  try {
    await using endpoint = await createEndpoint({
      secretKey: randomKey(),
      bindAddr: `127.0.0.1:${port}`,
      relayMode: "disabled",
    });
    assert.ok(endpoint.boundSockets().includes(`127.0.0.1:${port}`), `${endpoint.boundSockets()}`);
    assert.equal(endpoint.warnings.length, 1);
    assert.match(
      endpoint.warnings[0]!,
      new RegExp(`cannot also bind \\[::1\\]:${port} \\(.*in use`),
    );
  } finally {
    await new Promise((resolve) => squatter.close(() => resolve(undefined)));
  }
});

Deno.test({
  name:
    "a peer restarted on its fixed address is reached again over either IP family, also after it dialled us first",
  async fn() {
    // Iroh may select the IPv6 path to a peer bound to 127.0.0.1 (it learns the
    // peer's local addresses) and then send new connections there, whatever
    // address it is given. When the IPv6 port was random, a restarted peer had a
    // new one, and every connect to it timed out while its own dial to us worked.
    const keyHex = Array.from(randomKey(), (b) => b.toString(16).padStart(2, "0")).join("");
    const port = await freeUdpPort();
    const id = endpointIdOf(parseSecretKey(keyHex, "test"));
    const overIpv4 = toTicket({ id, directAddresses: [`127.0.0.1:${port}`] });
    const overIpv6 = toTicket({ id, directAddresses: [`[::1]:${port}`] });
    await using us = await loopbackEndpoint();
    let accepted = 0;
    const held: IrohConnection[] = [];
    const accepting = us.acceptLoop({
      allow: new Set([id]),
      onConnection: (c) => {
        accepted++;
        held.push(c);
      },
    });
    const spawn = () =>
      spawnHealthServer(keyHex, `127.0.0.1:${port}`, [us.id], [`--dial=${us.ticket()}`]);
    let server = await spawn();
    try {
      for (let cycle = 1; cycle <= 4; cycle++) {
        const before = accepted;
        const first = await us.connect(overIpv4, { timeoutMs: 3_000 });
        // Long enough for Iroh to open and select another path, if it does.
        await new Promise((resolve) => setTimeout(resolve, 200));
        server.child.kill("SIGKILL");
        await server.child.status;
        server = await spawn();
        await until(() => accepted > before, `cycle ${cycle}: the restarted peer dialled us`);
        for (const [family, ticket] of [["IPv4", overIpv4], ["IPv6", overIpv6]]) {
          const again = await us.connect(ticket!, { timeoutMs: 3_000 }).catch((e) => {
            throw new Error(`cycle ${cycle}: the restarted peer over ${family}: ${e}`);
          });
          again.close(CloseCode.Normal, "done");
        }
        first.close(CloseCode.Normal, "done");
      }
    } finally {
      server.child.kill("SIGKILL");
      await server.child.status;
      for (const c of held) c.close(CloseCode.Normal, "done");
      await us.close();
      await accepting;
    }
  },
});
