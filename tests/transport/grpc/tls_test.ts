/**
 * TLS and mutual TLS of the gRPC transport, with certificates this test makes
 * with `openssl` (Debian package `openssl`): a CA, a server certificate for
 * 127.0.0.1, a client certificate (CN node-2), and a second CA with a client
 * certificate of its own that the server must refuse.
 */

import { assert, assertEquals, rejection } from "../../assert.ts";
import {
  type GrpcPeerInfo,
  GrpcRpcServer,
  type GrpcServerTls,
} from "../../../src/transport/grpc/server.ts";
import { GrpcChannel, type GrpcClientTls } from "../../../src/transport/grpc/client.ts";
import { RpcRouter } from "../../../src/rpc/router.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Code, isTransportFailure, RpcError } from "../../../src/rpc/errors.ts";
import { Health } from "../../../src/rpc/services.ts";
import { healthService } from "../../../src/services/health.ts";
import { makePki, type TestPki } from "./helpers.ts";
import { heartbeat, RecordingIngress } from "../raft_ingress.ts";

let pki: Promise<TestPki> | null = null;
/** One PKI for the whole file: openssl takes a moment. */
function testPki(): Promise<TestPki> {
  return pki ??= makePki();
}

/** A Health server whose Ping answers with what it knows of the caller. */
async function tlsServer(bind: string, tls: GrpcServerTls, raftIngress?: RecordingIngress) {
  const real = healthService({
    nodeId: 1n,
    agentVersion: "tls",
    startedAtMs: Date.now(),
    readiness: () => ({ ready: true, detail: "" }),
  });
  const router = new RpcRouter().register(Health, {
    check: real.check,
    ping(_req, ctx) {
      const peer = ctx.peer as GrpcPeerInfo;
      const who = `${peer.transport} cn=${peer.certificateNames?.[0] ?? "-"} ${peer.address}`;
      return { payload: new TextEncoder().encode(who), nodeId: 1n };
    },
  });
  const server = new GrpcRpcServer({
    router,
    bind,
    tls,
    allowInsecure: false,
    ...(raftIngress ? { raftIngress } : {}),
  });
  const { port } = await server.start();
  return { server, port };
}

async function call(port: number, tls: GrpcClientTls | undefined) {
  const channel = new GrpcChannel({ target: `127.0.0.1:${port}`, ...(tls ? { tls } : {}) });
  try {
    const health = createClient(Health, channel);
    const res = await health.ping({}, { deadlineMs: 5000 });
    return new TextDecoder().decode(res.payload);
  } finally {
    channel.close();
  }
}

Deno.test({
  name: "a TLS listener answers a client that trusts its CA, and refuses plaintext and strangers",
  async fn() {
    const p = await testPki();
    const { server, port } = await tlsServer("127.0.0.1:0", {
      certFile: p.serverCertFile,
      keyFile: p.serverKeyFile,
    });
    try {
      const who = await call(port, { caFile: p.caFile });
      assert(/^grpc cn=- 127\.0\.0\.1:\d+$/.test(who), who);
      // A plaintext client cannot talk to it.
      let e = await rejection(RpcError, () => call(port, undefined));
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
      // A client that trusts another CA refuses the server's certificate.
      e = await rejection(RpcError, () => call(port, { caFile: p.otherCaFile }));
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
      assert(isTransportFailure(e));
    } finally {
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "a TLS listener may bind a non-loopback address without allow_insecure",
  async fn() {
    const p = await testPki();
    const { server, port } = await tlsServer("0.0.0.0:0", {
      certFile: p.serverCertFile,
      keyFile: p.serverKeyFile,
    });
    try {
      assert((await call(port, { caFile: p.caFile })).startsWith("grpc cn=-"));
    } finally {
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name:
    "a mutual-TLS listener knows the client's certificate name and refuses clients without a certificate it trusts",
  async fn() {
    const p = await testPki();
    const { server, port } = await tlsServer("127.0.0.1:0", {
      certFile: p.serverCertFile,
      keyFile: p.serverKeyFile,
      caFile: p.caFile,
    });
    try {
      const who = await call(port, {
        caFile: p.caFile,
        certFile: p.clientCertFile,
        keyFile: p.clientKeyFile,
      });
      assert(/^grpc cn=node-2 127\.0\.0\.1:\d+$/.test(who), who);
      // No client certificate: the handshake fails, no handler runs.
      let e = await rejection(RpcError, () => call(port, { caFile: p.caFile }));
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
      // A certificate from another CA: refused too.
      e = await rejection(RpcError, () =>
        call(port, {
          caFile: p.caFile,
          certFile: p.otherClientCertFile,
          keyFile: p.otherClientKeyFile,
        }));
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
      assertEquals(server.stats.callsStarted, 1);
    } finally {
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "a server name override lets a client check a certificate issued for another name",
  async fn() {
    const p = await testPki();
    const { server, port } = await tlsServer("127.0.0.1:0", {
      certFile: p.serverCertFile,
      keyFile: p.serverKeyFile,
    });
    try {
      // The certificate names localhost too; a name it lacks fails the check.
      assert((await call(port, { caFile: p.caFile, serverName: "localhost" })).startsWith("grpc"));
      const e = await rejection(
        RpcError,
        () => call(port, { caFile: p.caFile, serverName: "node-9.example" }),
      );
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
    } finally {
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "under mutual TLS the Raft ingress knows the sender by its certificate's names",
  async fn() {
    const p = await testPki();
    const ingress = new RecordingIngress();
    const { server, port } = await tlsServer("127.0.0.1:0", {
      certFile: p.serverCertFile,
      keyFile: p.serverKeyFile,
      caFile: p.caFile,
    }, ingress);
    const channel = new GrpcChannel({
      target: `127.0.0.1:${port}`,
      tls: { caFile: p.caFile, certFile: p.clientCertFile, keyFile: p.clientKeyFile },
    });
    try {
      await channel.sendRaft(heartbeat(1));
      const peer = ingress.got[0]?.peer;
      assertEquals(peer?.transport, "grpc");
      assertEquals(peer?.certificateNames, ["node-2"]);
    } finally {
      channel.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "(cleanup) the test PKI is removed",
  async fn() {
    if (pki) await Deno.remove((await pki).dir, { recursive: true });
  },
});
