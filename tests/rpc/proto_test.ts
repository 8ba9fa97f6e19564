/**
 * The Protocol Buffers schema of proto/ and its generated code in src/rpc/gen/:
 * messages of every service survive the wire, every service has the methods
 * its contract requires (the services of the README, and Metadata), and the
 * committed code is current.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  create,
  type DescFile,
  type DescMessage,
  equals,
  fromBinary,
  fromJson,
  type MessageShape,
  ScalarType,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  decodeRaftMessage,
  encodeRaftMessage,
  RAFT_SERVICE_ID,
  RaftMessageKind,
} from "@blixard/agent";
import {
  file_blixard_v1_common,
  IrohAddressSchema,
  MemberSchema,
  ServiceId,
  Transport,
} from "../../src/rpc/gen/blixard/v1/common_pb.ts";
import {
  CheckResponseSchema,
  file_blixard_v1_health,
  PingRequestSchema,
  PingResponseSchema,
  ServingStatus,
} from "../../src/rpc/gen/blixard/v1/health_pb.ts";
import {
  file_blixard_v1_status,
  GetClusterStatusResponseSchema,
  GetRaftStatusResponseSchema,
  RaftRole,
} from "../../src/rpc/gen/blixard/v1/status_pb.ts";
import {
  CreateVmRequestSchema,
  file_blixard_v1_vm,
  ListVmsRequestSchema,
  ListVmsResponseSchema,
  StopVmRequestSchema,
  VmDesiredState,
  VmEventKind,
  VmEventSchema,
  VmSchema,
  VmState,
  WatchVmEventsRequestSchema,
} from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import {
  file_blixard_v1_monitoring,
  GetMetricsResponseSchema,
  GetResourceSummaryResponseSchema,
} from "../../src/rpc/gen/blixard/v1/monitoring_pb.ts";
import {
  file_blixard_v1_cluster,
  JoinRequestSchema,
  JoinResponseSchema,
  LeaveRequestSchema,
  TransferLeadershipRequestSchema,
  TransferLeadershipResponseSchema,
} from "../../src/rpc/gen/blixard/v1/cluster_pb.ts";
import {
  file_blixard_v1_raft,
  RaftAckSchema,
  RaftEnvelopeSchema,
} from "../../src/rpc/gen/blixard/v1/raft_pb.ts";
import { file_blixard_v1_metadata } from "../../src/rpc/gen/blixard/v1/metadata_pb.ts";
import { file_blixard_v1_state } from "../../src/rpc/gen/blixard/v1/state_pb.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Every generated file; the test below checks none is missing. */
const FILES: readonly DescFile[] = [
  file_blixard_v1_common,
  file_blixard_v1_health,
  file_blixard_v1_status,
  file_blixard_v1_vm,
  file_blixard_v1_monitoring,
  file_blixard_v1_cluster,
  file_blixard_v1_raft,
  file_blixard_v1_metadata,
  file_blixard_v1_state,
];

/** Largest uint64, and one just past 2^53 where `number` loses precision. */
const U64_MAX = 0xffff_ffff_ffff_ffffn;
const PAST_2_53 = 2n ** 53n + 1n;

/** Encodes, decodes, and asserts nothing was lost; returns the decoded copy. */
function roundTrip<Desc extends DescMessage>(
  schema: Desc,
  msg: MessageShape<Desc>,
): MessageShape<Desc> {
  const bytes = toBinary(schema, msg);
  const back = fromBinary(schema, bytes);
  assert.ok(equals(schema, msg, back), `${schema.typeName} changed in a binary round trip`);
  assert.deepStrictEqual(back, msg);
  return back;
}

const member = create(MemberSchema, {
  nodeId: U64_MAX,
  iroh: create(IrohAddressSchema, {
    endpointId: "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6",
    relayUrl: "https://relay.example.net./",
    directAddresses: ["203.0.113.7:7401", "[2001:db8::1]:7401"],
  }),
  grpcAddress: "10.0.0.3:7400",
  services: [
    {
      service: ServiceId.HEALTH,
      transports: [Transport.GRPC, Transport.IROH],
      preferred: Transport.IROH,
    },
    { service: ServiceId.RAFT, transports: [Transport.GRPC], preferred: Transport.GRPC },
  ],
});

Deno.test("Health messages keep payload bytes, timestamps and node ids past 2^53", () => {
  const payload = new Uint8Array([0, 1, 2, 0xfe, 0xff]);
  roundTrip(
    PingRequestSchema,
    create(PingRequestSchema, { payload, clientSendTimeNs: 1_732_000_000_123_456_789n }),
  );
  roundTrip(
    PingResponseSchema,
    create(PingResponseSchema, { payload, clientSendTimeNs: U64_MAX, nodeId: PAST_2_53 }),
  );
  roundTrip(
    CheckResponseSchema,
    create(CheckResponseSchema, {
      status: ServingStatus.NOT_SERVING,
      nodeId: PAST_2_53,
      agentVersion: "0.1.0",
      uptimeMs: 86_400_000n,
      detail: "no leader",
    }),
  );
});

Deno.test("Status answers tell which member serves which service over which transport", () => {
  const status = roundTrip(
    GetClusterStatusResponseSchema,
    create(GetClusterStatusResponseSchema, {
      members: [member, create(MemberSchema, { nodeId: 1n, grpcAddress: "10.0.0.1:7400" })],
      leaderId: U64_MAX,
      term: PAST_2_53,
      nodeId: 1n,
    }),
  );
  const servesOver = (node: bigint, service: ServiceId, transport: Transport): boolean =>
    status.members.find((m) => m.nodeId === node)?.services
      .find((s) => s.service === service)?.transports.includes(transport) ?? false;
  assert.equal(servesOver(U64_MAX, ServiceId.HEALTH, Transport.IROH), true);
  assert.equal(servesOver(U64_MAX, ServiceId.RAFT, Transport.IROH), false);
  assert.equal(servesOver(1n, ServiceId.HEALTH, Transport.GRPC), false);

  roundTrip(
    GetRaftStatusResponseSchema,
    create(GetRaftStatusResponseSchema, {
      nodeId: 2n,
      term: U64_MAX,
      commitIndex: PAST_2_53,
      appliedIndex: PAST_2_53 - 1n,
      role: RaftRole.LEADER,
      leaderId: 2n,
      peers: [
        { nodeId: 1n, matchIndex: PAST_2_53, nextIndex: PAST_2_53 + 1n },
        { nodeId: 3n, matchIndex: 0n, nextIndex: 1n },
      ],
      lastLogIndex: PAST_2_53,
      snapshotIndex: 1_000_000n,
    }),
  );
});

Deno.test("Vm specs, statuses and events keep backend options, states and timestamps", () => {
  const vm = create(VmSchema, {
    spec: {
      name: "web-1",
      vcpus: 4,
      memoryMib: 2048n,
      image: "/var/lib/blixard/images/web.raw",
      kernel: "/var/lib/blixard/kernels/vmlinux",
      backend: "qemu",
      backendOptions: { append: "console=ttyS0", machine: "microvm" },
      desiredState: VmDesiredState.RUNNING,
      nodeId: 0n,
    },
    status: {
      state: VmState.FAILED,
      nodeId: PAST_2_53,
      exitReason: "exit code 1",
      createdAt: timestampFromMs(1_732_000_000_000),
      stateChangedAt: timestampFromMs(1_732_000_060_500),
    },
  });
  const back = roundTrip(VmSchema, vm);
  assert.equal(back.status?.startedAt, undefined, "an unset timestamp stays unset");
  roundTrip(CreateVmRequestSchema, create(CreateVmRequestSchema, { spec: vm.spec }));
  roundTrip(StopVmRequestSchema, create(StopVmRequestSchema, { name: "web-1", force: true }));
  roundTrip(ListVmsResponseSchema, create(ListVmsResponseSchema, { vms: [vm, vm] }));
  roundTrip(
    VmEventSchema,
    create(VmEventSchema, {
      kind: VmEventKind.STATUS_CHANGED,
      vm,
      time: timestampFromMs(1_732_000_060_500),
      index: U64_MAX,
    }),
  );
  roundTrip(
    WatchVmEventsRequestSchema,
    create(WatchVmEventsRequestSchema, { nodeId: PAST_2_53, includeExisting: true }),
  );
});

Deno.test("a List filter on node 0 or state UNSPECIFIED is told apart from no filter", () => {
  const none = roundTrip(ListVmsRequestSchema, create(ListVmsRequestSchema));
  assert.equal(none.nodeId, undefined);
  assert.equal(none.state, undefined);
  const zero = roundTrip(
    ListVmsRequestSchema,
    create(ListVmsRequestSchema, { nodeId: 0n, state: VmState.UNSPECIFIED }),
  );
  assert.equal(zero.nodeId, 0n);
  assert.equal(zero.state, VmState.UNSPECIFIED);
});

Deno.test("Monitoring carries the Prometheus text and per-node resources", () => {
  const text = "# HELP up 1 if up\n# TYPE up gauge\nup 1\n";
  const metrics = roundTrip(
    GetMetricsResponseSchema,
    create(GetMetricsResponseSchema, {
      text,
      contentType: "text/plain; version=0.0.4; charset=utf-8",
    }),
  );
  assert.equal(metrics.text, text);
  roundTrip(
    GetResourceSummaryResponseSchema,
    create(GetResourceSummaryResponseSchema, {
      nodes: [{
        nodeId: U64_MAX,
        cpuCores: 64,
        memoryTotalMib: 262_144n,
        memoryUsedMib: 10_240n,
        vcpusAllocated: 12,
        memoryAllocatedMib: 8_192n,
        vmCounts: [{ state: VmState.RUNNING, count: 3 }, { state: VmState.FAILED, count: 1 }],
        reportedAt: timestampFromMs(1_732_000_000_000),
      }],
    }),
  );
});

Deno.test("Cluster Join names the new node by Iroh ticket or by address", () => {
  const byTicket = roundTrip(
    JoinRequestSchema,
    create(JoinRequestSchema, {
      nodeId: PAST_2_53,
      iroh: { case: "irohTicket", value: "endpointabc123" },
      grpcAddress: "10.0.0.4:7400",
    }),
  );
  assert.equal(byTicket.iroh.case, "irohTicket");
  const byAddress = roundTrip(
    JoinRequestSchema,
    create(JoinRequestSchema, {
      nodeId: 4n,
      iroh: { case: "irohAddress", value: member.iroh! },
    }),
  );
  assert.equal(byAddress.iroh.case, "irohAddress");
  roundTrip(JoinResponseSchema, create(JoinResponseSchema, { members: [member], leaderId: 2n }));
  roundTrip(LeaveRequestSchema, create(LeaveRequestSchema, { nodeId: U64_MAX }));
  roundTrip(
    TransferLeadershipRequestSchema,
    create(TransferLeadershipRequestSchema, { targetNodeId: U64_MAX }),
  );
  roundTrip(
    TransferLeadershipResponseSchema,
    create(TransferLeadershipResponseSchema, { leaderId: U64_MAX, term: PAST_2_53 }),
  );
});

Deno.test("Raft envelopes carry the hand-written codec's bytes unchanged", () => {
  const heartbeat = encodeRaftMessage({
    kind: RaftMessageKind.Heartbeat,
    from: 1,
    to: 2,
    term: 7,
    commit: 42,
    readContext: 0,
  });
  const vote = encodeRaftMessage({
    kind: RaftMessageKind.VoteResponse,
    from: 2,
    to: 1,
    term: 7,
    granted: true,
  });
  const back = roundTrip(
    RaftEnvelopeSchema,
    create(RaftEnvelopeSchema, { messages: [heartbeat, vote] }),
  );
  assert.deepStrictEqual(back.messages, [heartbeat, vote]);
  const first = back.messages[0];
  assert.ok(first !== undefined);
  assert.equal(decodeRaftMessage(first).kind, RaftMessageKind.Heartbeat);
  roundTrip(RaftAckSchema, create(RaftAckSchema, { accepted: 2 }));
});

Deno.test("uint64 values past 2^53 survive the JSON mapping as decimal strings", () => {
  const msg = create(GetRaftStatusResponseSchema, { term: U64_MAX, commitIndex: PAST_2_53 });
  const json = toJson(GetRaftStatusResponseSchema, msg);
  assert.deepStrictEqual(json, { term: "18446744073709551615", commitIndex: "9007199254740993" });
  assert.ok(equals(GetRaftStatusResponseSchema, fromJson(GetRaftStatusResponseSchema, json), msg));
});

/**
 * The methods every service must have, in declaration order: a method's
 * 1-based position is its method id in Iroh frames, so order matters.
 */
const REQUIRED: Record<string, { id: ServiceId; methods: [string, string][] }> = {
  "blixard.v1.HealthService": {
    id: ServiceId.HEALTH,
    methods: [["Check", "unary"], ["Ping", "unary"]],
  },
  "blixard.v1.StatusService": {
    id: ServiceId.STATUS,
    methods: [["GetClusterStatus", "unary"], ["GetRaftStatus", "unary"]],
  },
  "blixard.v1.VmService": {
    id: ServiceId.VM,
    methods: [
      ["Create", "unary"],
      ["Start", "unary"],
      ["Stop", "unary"],
      ["Delete", "unary"],
      ["Get", "unary"],
      ["List", "unary"],
      ["WatchEvents", "server_streaming"],
      ["ReportStatus", "unary"],
    ],
  },
  "blixard.v1.MonitoringService": {
    id: ServiceId.MONITORING,
    methods: [["GetMetrics", "unary"], ["GetResourceSummary", "unary"]],
  },
  "blixard.v1.ClusterService": {
    id: ServiceId.CLUSTER,
    methods: [["Join", "unary"], ["Leave", "unary"], ["TransferLeadership", "unary"]],
  },
  "blixard.v1.RaftService": {
    id: ServiceId.RAFT,
    methods: [["Send", "unary"]],
  },
  "blixard.v1.MetadataService": {
    id: ServiceId.METADATA,
    methods: [
      ["Get", "unary"],
      ["Put", "unary"],
      ["Delete", "unary"],
      ["CompareAndSet", "unary"],
      ["List", "unary"],
    ],
  },
};

Deno.test("every service has the methods the design requires, with their streaming kind", () => {
  const services = FILES.flatMap((f) => f.services);
  assert.deepStrictEqual(
    services.map((s) => s.typeName).sort(),
    Object.keys(REQUIRED).sort(),
    "the schema's services are exactly the required ones",
  );
  for (const service of services) {
    const required = REQUIRED[service.typeName];
    assert.ok(required !== undefined);
    assert.deepStrictEqual(
      service.methods.map((m) => [m.name, m.methodKind]),
      required.methods,
      `${service.typeName}: methods, in order, and their kinds`,
    );
    const idName = service.name.replace(/Service$/, "").toUpperCase();
    assert.equal(
      ServiceId[idName as keyof typeof ServiceId],
      required.id,
      `${service.typeName} has ServiceId.${idName}`,
    );
  }
});

Deno.test("the Raft service id agrees with the Raft codec and its envelope holds raw bytes", () => {
  assert.equal(ServiceId.RAFT, RAFT_SERVICE_ID);
  const field = RaftEnvelopeSchema.fields.find((f) => f.name === "messages");
  assert.ok(field !== undefined && field.fieldKind === "list" && field.listKind === "scalar");
  assert.equal(field.scalar, ScalarType.BYTES);
});

Deno.test("every .proto file under proto/ has generated code this test imports", async () => {
  const protos: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}proto/blixard/v1`)) {
    if (e.isFile && e.name.endsWith(".proto")) protos.push(`blixard/v1/${e.name}`);
  }
  assert.deepStrictEqual(FILES.map((f) => `${f.name}.proto`).sort(), protos.sort());
});

Deno.test("the committed generated code matches proto/ (scripts/proto.ts check)", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/proto.ts", "check"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(
    code,
    0,
    `scripts/proto.ts check failed:\n${dec.decode(stdout)}${dec.decode(stderr)}`,
  );
});
