/**
 * The configuration schema: every key of the agent's TOML file with its type,
 * default, allowed values and description, and the rules that tie keys
 * together. docs/configuration.md is generated from this file
 * (scripts/config_docs.ts), so a key's description lives here and only here.
 *
 * The schema speaks the file's language (snake_case keys, TOML values); the
 * typed, camelCase {@link AgentConfig} is built from its output in parse.ts.
 *
 * Owns: key names, types, defaults, bounds, cross-key rules and their error
 * text. May import: zod, `src/names.ts` and `src/util/address.ts`; nothing else
 * of the project.
 *
 * @module
 */

import { z } from "zod";
import { SERVICE_NAMES, type ServiceName } from "../names.ts";
import { isLoopback, parseHostPort } from "../util/address.ts";

export { SERVICE_NAMES, type ServiceName };
/** The `prefer_iroh` value that means every service of {@link SERVICE_NAMES}. */
export const ALL_EXCEPT_RAFT = "all_except_raft";
/** The predecessor's service names that are accepted and rewritten. */
export const SERVICE_ALIASES: Readonly<Record<string, ServiceName>> = { vm_ops: "vm" };
/** Values of `transport.mode`. */
export const TRANSPORT_MODES = ["grpc", "iroh", "dual"] as const;
/** Which transport serves each service: `transport.mode`. */
export type TransportMode = (typeof TRANSPORT_MODES)[number];
/** Values of `transport.migration.raft_transport`. */
export const RAFT_TRANSPORTS = ["grpc", "iroh", "adaptive"] as const;
/** How Raft messages travel: `transport.migration.raft_transport`. */
export type RaftTransport = (typeof RAFT_TRANSPORTS)[number];
/** Values of `vm.backends`. */
export const VM_BACKENDS = ["qemu", "process"] as const;
/** A VM backend a node runs: an entry of `vm.backends`. */
export type VmBackend = (typeof VM_BACKENDS)[number];
/** The named values of `iroh.relay` (the alternative is a list of URLs). */
export const RELAY_MODES = ["default", "disabled"] as const;

/** Defaults that other modules (and docs) name. */
export const DEFAULTS = {
  dataDir: "/var/lib/blixard",
  grpcBind: "127.0.0.1:7400",
  irohBind: "0.0.0.0:7401",
  irohAlpn: "blixard/1",
  metricsBind: "127.0.0.1:9464",
  secretKeyFileName: "iroh_secret_key",
  maxFrameBytes: 16 * 1024 * 1024,
  maxInflightRequests: 1024,
  maxConnectionBufferBytes: 32 * 1024 * 1024,
  raftTickMs: 100,
  raftElectionTicks: 10,
  raftHeartbeatTicks: 1,
  raftSnapshotEveryEntries: 100_000,
  raftKeepEntries: 1_000,
  vmNodeLostAfterMs: 30_000,
  maxConcurrentStreams: 16,
  requestDeadlineMs: 30_000,
  maxRequestDeadlineMs: 300_000,
  shutdownTimeoutMs: 10_000,
} as const;

/** What docs/configuration.md and the error messages say about a schema. */
export interface KeyDoc {
  /** A sentence or two for the reference; why the default is what it is. */
  readonly description?: string;
  /** The allowed values, as the noun phrase after "expected". */
  readonly allowed?: string;
  /** The default, when it is not a constant. */
  readonly defaultText?: string;
  /**
   * Set on a key whose feature is not built yet: a file that sets the key is
   * refused (issue code `not_supported`) with `what` and `until` in the message.
   */
  readonly notSupported?: { readonly what: string; readonly until: string };
}

/**
 * Docs of schemas, keyed by schema instance. A key's schema may be wrapped
 * (`.default()`, `.optional()`); {@link docOf} merges the layers.
 */
export const keyDocs = z.registry<KeyDoc>();

function documented<T extends z.ZodType>(schema: T, doc: KeyDoc): T {
  keyDocs.add(schema, { ...keyDocs.get(schema), ...doc });
  return schema;
}

/** The issue codes the schema's own checks raise (in `params.code`). */
export type RuleCode = "invalid_value" | "duplicate" | "conflict" | "insecure";

type Path = readonly PropertyKey[];

/** A path in a {@link when} rule; `"*"` stands for any array index. */
type Pattern = readonly (string | number)[];

/** Adds a custom issue whose code is one of {@link RuleCode}. */
function report(
  ctx: z.RefinementCtx,
  code: RuleCode,
  path: Path,
  input: unknown,
  message: string,
): void {
  ctx.addIssue({ code: "custom", path: [...path], input, message, params: { code } });
}

/** Whether `a` is a prefix of `b` or `b` of `a`, `"*"` in `pattern` matching any index. */
function overlaps(path: Path, pattern: Pattern): boolean {
  const n = Math.min(path.length, pattern.length);
  for (let i = 0; i < n; i++) {
    const [k, p] = [path[i], pattern[i]];
    if (p === "*" ? typeof k !== "number" : k !== p) return false;
  }
  return true;
}

/**
 * Runs a rule only when the keys it reads have values of the right type and
 * range, so one bad value does not also trip a rule built on it, while every
 * other error is still reported in the same pass. Issues of other rules
 * (`custom`) and unknown keys leave the values usable and do not count.
 */
function when(...deps: Pattern[]): z.core.$ZodSuperRefineParams {
  return {
    when: (payload) =>
      !payload.issues.some((issue) =>
        issue.code !== "unrecognized_keys" && issue.code !== "custom" &&
        deps.some((dep) => overlaps(issue.path ?? [], dep))
      ),
  };
}

/**
 * Reports every item whose key an earlier item already has (`undefined` keys
 * are not compared), at `[index, field]` or `[index]`.
 */
function noDuplicates<T>(
  ctx: z.RefinementCtx,
  items: readonly T[],
  keyOf: (item: T) => unknown,
  field: string | undefined,
  list: string,
): void {
  const first = new Map<unknown, number>();
  items.forEach((item, i) => {
    const key = keyOf(item);
    if (key === undefined) return;
    const earlier = first.get(key);
    if (earlier === undefined) first.set(key, i);
    else {
      const where = field === undefined ? `${list}[${earlier}]` : `${list}[${earlier}].${field}`;
      report(
        ctx,
        "duplicate",
        field === undefined ? [i] : [i, field],
        key,
        `duplicate of ${where}`,
      );
    }
  });
}

// ---------------------------------------------------------------- value types

const BYTE_UNITS: readonly [number, string][] = [[1 << 30, "GiB"], [1 << 20, "MiB"], [
  1 << 10,
  "KiB",
]];
const MS_UNITS: readonly [number, string][] = [[3_600_000, "h"], [60_000, "min"], [1000, "s"]];

/** `16777216` → `"16 MiB"`, `300000` → `"5 min"`; exact multiples only. */
export function humanize(value: number, unit: "bytes" | "ms"): string {
  for (const [size, name] of unit === "bytes" ? BYTE_UNITS : MS_UNITS) {
    if (value >= size && value % size === 0) return `${value / size} ${name}`;
  }
  return `${value} ${unit === "bytes" ? "bytes" : "ms"}`;
}

function integer(min: number, max: number, unit?: "bytes" | "ms") {
  const range = unit === undefined ? "" : ` (${humanize(min, unit)} to ${humanize(max, unit)})`;
  return documented(z.int().min(min).max(max), {
    allowed: `an integer from ${min} to ${max}${range}`,
  });
}

const boolean = () => documented(z.boolean(), { allowed: "true or false" });

const nonEmpty = () => documented(z.string().min(1), { allowed: "a non-empty string" });

/**
 * `"host:port"`. A listener (`bind`) may use port 0 (the OS picks one); an
 * address to dial may not. `ipOnly` for Iroh, which takes socket addresses and
 * resolves no names.
 */
function address(options: { bind: boolean; ipOnly: boolean; example: string }) {
  const host = options.ipOnly ? "ip" : "host";
  const ports = options.bind ? "0-65535" : "1-65535";
  const allowed = `"${host}:port" with port ${ports} (IPv6 in brackets), e.g. "${options.example}"`;
  return documented(
    z.string().refine((text) => {
      const parsed = parseHostPort(text);
      return parsed !== undefined && (options.bind || parsed.port !== 0) &&
        (!options.ipOnly || parsed.kind !== "name");
    }, { error: `expected ${allowed}` }),
    { allowed },
  );
}

const ENDPOINT_ID = /^[0-9a-f]{64}$/;
const endpointId = () =>
  documented(
    z.string().regex(ENDPOINT_ID, {
      error: (issue) =>
        typeof issue.input === "string" && /^[0-9A-F]{64}$/i.test(issue.input)
          ? "expected 64 lowercase hex characters; write it in lowercase"
          : "expected 64 lowercase hex characters (an endpoint id, as `blixard key show` prints it)",
    }),
    { allowed: "64 lowercase hex characters (an Ed25519 endpoint id)" },
  );

const relayUrl = documented(
  z.url({ protocol: /^https?$/, error: "expected an http:// or https:// URL" }),
  {
    allowed: "an http:// or https:// URL",
  },
);

// --------------------------------------------------------------------- tables

const nodeTable = z.strictObject({
  id: documented(integer(1, Number.MAX_SAFE_INTEGER), {
    description: "This node's Raft id; unique in the cluster and never reused. Required.",
  }),
  data_dir: documented(nonEmpty().default(DEFAULTS.dataDir), {
    description:
      "Where the node keeps its Raft log, snapshots, VM state and (by default) its Iroh secret key. An absolute path; a relative one is resolved against the working directory (`/` under systemd) and draws a warning.",
  }),
});
// A missing [node] is parsed as an empty one, so the error names node.id.
const node = documented(nodeTable.prefault({} as z.input<typeof nodeTable>), {
  description: "The node itself.",
});

const PREFER_IROH_VALUES = [...SERVICE_NAMES, ...Object.keys(SERVICE_ALIASES), ALL_EXCEPT_RAFT];

/** `"health", "status", "vm" (alias "vm_ops"), ...`: every service name, with its aliases. */
const SERVICE_LIST = SERVICE_NAMES.map((name) => {
  const aliases = Object.keys(SERVICE_ALIASES).filter((a) => SERVICE_ALIASES[a] === name);
  return aliases.length
    ? `"${name}" (alias ${aliases.map((a) => `"${a}"`).join(", ")})`
    : `"${name}"`;
}).join(", ");

const preferIrohEntry = documented(
  z.enum(PREFER_IROH_VALUES as [string, ...string[]], {
    error: (issue) =>
      issue.input === "raft"
        ? `raft has its own key: set transport.migration.raft_transport = "iroh" or "adaptive" instead of listing it here`
        : undefined,
  }),
  {
    allowed: `${SERVICE_LIST}, or "${ALL_EXCEPT_RAFT}" alone`,
  },
);

const migration = documented(
  z.strictObject({
    prefer_iroh: documented(
      z.array(preferIrohEntry).superRefine((list, ctx) => {
        if (list.includes(ALL_EXCEPT_RAFT) && list.length > 1) {
          report(
            ctx,
            "conflict",
            [],
            list,
            `"${ALL_EXCEPT_RAFT}" already means every service; write prefer_iroh = ["${ALL_EXCEPT_RAFT}"] alone`,
          );
        }
      }).default([]),
      {
        description:
          `The services a \`dual\` node serves and calls over Iroh; the rest use gRPC. \`["${ALL_EXCEPT_RAFT}"]\` names every service. The predecessor's \`"vm_ops"\` is read as \`"vm"\`. Raft is never listed here: it has \`raft_transport\`.`,
        allowed: `a list of ${SERVICE_LIST}; or ["${ALL_EXCEPT_RAFT}"]`,
      },
    ),
    raft_transport: documented(z.enum(RAFT_TRANSPORTS).default("grpc"), {
      description:
        "How Raft messages travel in `dual` mode. `adaptive` chooses per peer and per message class from live health and latency, and prefers the faster transport for snapshots.",
    }),
    fallback_to_grpc: documented(boolean().default(true), {
      description:
        "In `dual` mode, a call over Iroh that fails is retried once over gRPC (and counted in the fallback metric).",
    }),
  }).prefault({}),
  {
    description:
      'How a `dual` node splits the work between the transports. A file with this section and no `transport.mode` is read as `mode = "dual"`. With an explicit `mode = "grpc"` or `"iroh"` its keys are ignored, with a warning, never refused, so rolling back is the one-line change `mode = "grpc"` however much of this section is left.',
  },
);

const transport = documented(
  z.strictObject({
    mode: documented(z.enum(TRANSPORT_MODES).default("grpc"), {
      description:
        '`grpc`: every service and Raft over gRPC (the established transport, and the rollback target). `dual`: both listeners; `[transport.migration]` says which services prefer Iroh. `iroh`: every service and Raft over Iroh. A change takes effect on SIGHUP or restart. When the key is absent the mode is `"grpc"`, unless the file has a `[transport.migration]` section: then it is `"dual"`, the only mode that reads that section, so that a file written as a stage of the rollout (a `[transport.migration]` section alone) does not silently move every service back to gRPC. `blixard config check` says when it took the mode as `"dual"`.',
      defaultText: '"grpc"; "dual" in a file with a [transport.migration] section',
    }),
    migration,
  }).prefault({}),
  { description: "Which transport carries what." },
);

const grpcTls = documented(
  z.strictObject({
    cert_file: documented(nonEmpty().optional(), {
      description: "PEM certificate chain of the gRPC listener. Set together with `key_file`.",
    }),
    key_file: documented(nonEmpty().optional(), {
      description: "PEM private key of `cert_file`.",
    }),
    ca_file: documented(nonEmpty().optional(), {
      description:
        "PEM CA bundle. When set, TLS is mutual: clients (peers, operators) must present a certificate it signs. Recommended whenever the listener is reachable from other hosts, since peers use it for Raft.",
    }),
  }).superRefine((tls, ctx) => {
    for (const [has, lacks] of [["cert_file", "key_file"], ["key_file", "cert_file"]] as const) {
      if (tls[has] !== undefined && tls[lacks] === undefined) {
        report(ctx, "conflict", [has], tls[has], `needs grpc.tls.${lacks} as well`);
      }
    }
    if (tls.ca_file !== undefined && (tls.cert_file === undefined || tls.key_file === undefined)) {
      report(
        ctx,
        "conflict",
        ["ca_file"],
        tls.ca_file,
        "mutual TLS needs the listener's own certificate too: set grpc.tls.cert_file and grpc.tls.key_file",
      );
    }
  }, when(["cert_file"], ["key_file"], ["ca_file"])).prefault({}),
  { description: "TLS of the gRPC listener. Without `cert_file` the listener is plaintext." },
);

const grpc = documented(
  z.strictObject({
    bind: documented(
      address({ bind: true, ipOnly: false, example: "0.0.0.0:7400" }).default(DEFAULTS.grpcBind),
      {
        description:
          "Address of the gRPC listener. Loopback by default; any other address needs `[grpc.tls]` or `allow_insecure = true`.",
      },
    ),
    allow_insecure: documented(boolean().default(false), {
      description:
        "Allows a plaintext gRPC listener on a non-loopback address. Anyone who can reach it can call every service, Raft included, so every load of such a config reports a warning.",
    }),
    tls: grpcTls,
  }).superRefine((g, ctx) => {
    const bind = parseHostPort(g.bind);
    const hasTls = g.tls.cert_file !== undefined && g.tls.key_file !== undefined;
    if (bind !== undefined && !isLoopback(bind) && !hasTls && !g.allow_insecure) {
      report(
        ctx,
        "insecure",
        ["bind"],
        g.bind,
        "a gRPC listener on a non-loopback address requires TLS; set grpc.tls.cert_file and grpc.tls.key_file (add grpc.tls.ca_file for mutual TLS), or set grpc.allow_insecure = true to serve plaintext on purpose",
      );
    }
  }, when(["bind"], ["allow_insecure"], ["tls", "cert_file"], ["tls", "key_file"])).prefault({}),
  {
    description:
      "The gRPC listener (all modes but `iroh` serve on it). Checked in every mode, so that rolling back to `grpc` is a one-key change.",
  },
);

const iroh = documented(
  z.strictObject({
    bind: documented(
      address({ bind: true, ipOnly: true, example: "0.0.0.0:7401" }).default(DEFAULTS.irohBind),
      {
        description:
          "UDP address of the Iroh endpoint, used in modes `dual` and `iroh` only (the default mode, `grpc`, opens nothing beyond loopback). Default: all interfaces on a fixed port, because peers on other hosts need a direct path (loopback would leave only relayed paths, or none with relays disabled) and firewall rules need a known port. Exposing it is safe where a plaintext gRPC port is not: every Iroh connection is encrypted and authenticated by endpoint id, and only cluster members and `operator_keys` are accepted. Use `127.0.0.1:0` for a single-host test. The endpoint also binds the other IP family on the same port (`127.0.0.1:P` with `[::1]:P`, another IPv4 address with `[::]:P`, an IPv6 address with `0.0.0.0:P`, or `127.0.0.1:P` for `[::1]:P`): peers may come to use either family, and a node restarted on the same address must stay reachable on both. If that second address cannot be bound (in use, no IPv6 on the host), the node starts on the address asked alone and logs a warning naming it and why; after a restart, peers whose path to it had gone over the other family may then not reach it until they redial. With port 0 both families get random ports.",
      },
    ),
    relay: documented(
      z.union([z.enum(RELAY_MODES), z.array(relayUrl).min(1)]).default("default"),
      {
        description:
          '`"default"`: n0\'s public relays and discovery (traffic stays end-to-end encrypted). `"disabled"`: no relays and no discovery; peers are dialled only at their configured or learned addresses. A list of URLs: your own relays, no n0 discovery.',
        allowed: '"default", "disabled", or a non-empty list of http:// or https:// relay URLs',
      },
    ),
    secret_key_file: documented(nonEmpty().optional(), {
      description:
        "The node's Ed25519 secret key (its endpoint id is the public half). Created with mode 0600 if missing; refused if others can read it.",
      defaultText: `"<node.data_dir>/${DEFAULTS.secretKeyFileName}"`,
    }),
    alpn: documented(
      z.string().regex(/^[\x21-\x7e]{1,255}$/, {
        error: "expected 1 to 255 printable ASCII characters, no spaces",
      }).default(DEFAULTS.irohAlpn),
      {
        description:
          "The protocol name the endpoint accepts. Every node of a cluster must use the same one.",
        allowed: "1 to 255 printable ASCII characters, no spaces",
      },
    ),
  }).prefault({}),
  { description: "The Iroh endpoint (QUIC with Ed25519 identities)." },
);

const peer = documented(
  z.strictObject({
    id: documented(integer(1, Number.MAX_SAFE_INTEGER), {
      description: "The peer's Raft id (its `node.id`). Required; unique; not this node's id.",
    }),
    endpoint_id: documented(endpointId().optional(), {
      description: "The peer's Iroh endpoint id (`blixard key show` on that host).",
    }),
    addresses: documented(
      z.array(address({ bind: false, ipOnly: true, example: "10.0.0.2:7401" })).default([]),
      {
        description:
          'Direct Iroh addresses of the peer. Without them the endpoint id is found through relay discovery (`relay = "default"`) or Raft membership.',
      },
    ),
    ticket: documented(
      z.string().regex(/^endpoint[a-z2-7]+$/, {
        error: 'expected an endpoint ticket ("endpoint…", as `blixard key show` prints it)',
      }).optional(),
      {
        description:
          "An endpoint ticket: endpoint id plus addresses in one string. Either this or `endpoint_id` is required.",
        allowed: 'an endpoint ticket, "endpoint" followed by lowercase base32',
      },
    ),
    grpc_address: documented(
      address({ bind: false, ipOnly: false, example: "10.0.0.2:7400" }).optional(),
      { description: "Where the peer's gRPC listener is, for Raft and services over gRPC." },
    ),
  }).superRefine((p, ctx) => {
    if (p.endpoint_id === undefined && p.ticket === undefined) {
      report(ctx, "invalid_value", [], p, "a peer needs endpoint_id or ticket");
    }
  }, when(["endpoint_id"], ["ticket"])),
  { description: "A member of the cluster, one `[[cluster.peers]]` table each." },
);

const cluster = documented(
  z.strictObject({
    peers: documented(
      z.array(peer)
        .superRefine(
          (peers, ctx) => noDuplicates(ctx, peers, (p) => p.id, "id", "cluster.peers"),
          when(["*", "id"]),
        )
        .superRefine(
          (peers, ctx) =>
            noDuplicates(ctx, peers, (p) => p.endpoint_id, "endpoint_id", "cluster.peers"),
          when(["*", "endpoint_id"]),
        )
        .default([]),
      { description: "The other members this node starts with.", allowed: "a list of tables" },
    ),
    operator_keys: documented(
      z.array(endpointId()).superRefine(
        (keys, ctx) => noDuplicates(ctx, keys, (k) => k, undefined, "cluster.operator_keys"),
        when(["*"]),
      ).default([]),
      {
        description:
          "Endpoint ids, besides cluster members, allowed to call the client services (health, status, vm, monitoring, cluster, metadata) over Iroh. Operators may not send Raft messages. Everyone else is refused.",
      },
    ),
    bootstrap: documented(boolean().default(true), {
      description:
        "On its first start (no Raft log in `data_dir` yet), `true` forms a new cluster of this node and its `[[cluster.peers]]`: every initial member must list the same members. `false` starts empty and waits to be added to an existing cluster (`blixard cluster join`); its `[[cluster.peers]]` then name members it accepts Raft messages from until it learns the membership. Ignored once the node has a log.",
    }),
  }).prefault({}),
  { description: "Who is in the cluster and who may talk to it." },
);

const raft = documented(
  z.strictObject({
    tick_ms: documented(integer(1, 10_000, "ms").default(DEFAULTS.raftTickMs), {
      description:
        "One tick of the consensus clock. Elections happen after `election_ticks` to twice that of silence from a leader; a leader sends heartbeats every `heartbeat_ticks`.",
    }),
    election_ticks: documented(integer(2, 1000).default(DEFAULTS.raftElectionTicks), {
      description:
        "Ticks without a leader before a follower campaigns (randomized up to twice this). Greater than `heartbeat_ticks`; every node of a cluster should use the same.",
    }),
    heartbeat_ticks: documented(integer(1, 100).default(DEFAULTS.raftHeartbeatTicks), {
      description: "Ticks between a leader's heartbeats.",
    }),
    snapshot_every_entries: documented(
      integer(16, 100_000_000).default(DEFAULTS.raftSnapshotEveryEntries),
      {
        description:
          "A snapshot of the cluster state is taken, and the log compacted behind it, after this many applied entries. Taking one encodes the whole state on the node's event loop (a few hundred ms for a state of some MiB), so not too often: the default is etcd's.",
      },
    ),
    keep_entries: documented(integer(0, 100_000_000).default(DEFAULTS.raftKeepEntries), {
      description:
        "Entries kept behind a snapshot, so followers that lag a little catch up from the log instead of a snapshot.",
    }),
  }).superRefine((r, ctx) => {
    if (r.election_ticks <= r.heartbeat_ticks) {
      report(
        ctx,
        "conflict",
        ["election_ticks"],
        r.election_ticks,
        `must be greater than raft.heartbeat_ticks = ${r.heartbeat_ticks}`,
      );
    }
  }, when(["election_ticks"], ["heartbeat_ticks"])).prefault({}),
  { description: "Consensus timing and log compaction." },
);

const metrics = documented(
  z.strictObject({
    enabled: documented(boolean().default(true), {
      description:
        "Serve the HTTP endpoints. `false` opens no port; the metrics are still kept and `Monitoring.GetMetrics` answers them over the node's transports. A reload switches the server on or off.",
    }),
    bind: documented(
      address({ bind: true, ipOnly: false, example: "0.0.0.0:9464" }).default(DEFAULTS.metricsBind),
      {
        description:
          "Address of the HTTP server for `/metrics` (Prometheus text), `/healthz` and `/readyz` (docs/metrics.md). Loopback by default, on port 9464. Another address is allowed without TLS: the endpoints are read-only and reveal no secret, only counts and states, but open it to your Prometheus hosts deliberately (firewall). Port 0 lets the system pick one, which the log names. A port another process holds stops the node at start. A reload moves the server: the new address is bound before the old one closes (the same port: closed first, restored if the new one fails), and a reload whose address cannot be bound is refused.",
      },
    ),
  }).prefault({}),
  {
    description:
      "The HTTP endpoints for monitoring: Prometheus metrics, liveness and readiness (docs/metrics.md).",
  },
);

const vm = documented(
  z.strictObject({
    backends: documented(
      z.array(z.enum(VM_BACKENDS)).min(1).superRefine(
        (list, ctx) => noDuplicates(ctx, list, (b) => b, undefined, "vm.backends"),
      ).default(["qemu"]),
      {
        description:
          "The VM backends this node runs: `qemu` (a microVM under `qemu-system-x86_64 -M microvm`, driven over QMP) and `process` (runs any command an operator puts in a VM spec, as the agent's user: for tests and custom runners, so off unless listed). Placement puts a VM only on a node that runs its backend.",
        allowed: `a non-empty list of ${VM_BACKENDS.map((b) => `"${b}"`).join(", ")}`,
      },
    ),
    vcpus: documented(integer(1, 65_536).optional(), {
      description:
        "vCPUs this node offers to VMs: placement puts no more than this on it. Declared, not measured: overcommit by setting more than the host has.",
      defaultText: "the host's CPU count",
    }),
    memory_mib: documented(integer(16, 1 << 30).optional(), {
      description: "Memory this node offers to VMs, MiB.",
      defaultText: "the host's total memory",
    }),
    accel: documented(z.enum(["auto", "kvm", "tcg"]).default("auto"), {
      description:
        "How qemu VMs run: `kvm` (hardware acceleration; refused if KVM does not work here), `tcg` (software emulation), or `auto`, which probes once whether a guest really runs under KVM and uses TCG when it does not (nested virtualisation often fails: docs/vm.md).",
    }),
    qemu_binary: documented(nonEmpty().default("qemu-system-x86_64"), {
      description: "The qemu executable: a path, or a name looked up on PATH.",
    }),
    on_agent_stop: documented(z.enum(["leave", "stop"]).default("leave"), {
      description:
        "What a graceful stop of the agent (SIGTERM) does to this node's VMs: `leave` them running, to be adopted by the next start (an agent upgrade or restart does not touch them), or `stop` them, each as a Stop would, within `limits.shutdown_timeout_ms`; the next start starts again those it stopped. VMs are never stopped by a crash or SIGKILL of the agent.",
    }),
    node_lost_after_ms: documented(
      integer(1000, 86_400_000, "ms").default(DEFAULTS.vmNodeLostAfterMs),
      {
        description:
          "A member the leader has not heard from for this long is lost: its VMs are moved to other nodes when their restart policy says so (`on-failure`, `always`), else marked `LOST`. A VM can run twice for a while if the lost node was only cut off: pick a time well above your network's hiccups.",
      },
    ),
  }).prefault({}),
  { description: "The VMs this node runs." },
);

const limits = documented(
  z.strictObject({
    max_frame_bytes: documented(
      integer(1024, 1 << 30, "bytes").default(DEFAULTS.maxFrameBytes),
      {
        description:
          "Largest frame payload accepted from a peer; a larger length field closes the stream before the payload is read.",
      },
    ),
    max_inflight_requests: documented(
      integer(1, 65_536).default(DEFAULTS.maxInflightRequests),
      {
        description:
          "Requests a single connection may have outstanding; more are refused until some finish.",
      },
    ),
    max_connection_buffer_bytes: documented(
      integer(64 * 1024, 1 << 30, "bytes").default(DEFAULTS.maxConnectionBufferBytes),
      {
        description:
          "What a node buffers for one connection's peer that does not read its answers: past half of it the node stops reading that connection's requests (back-pressure) until a quarter is left; past all of it the connection is closed (Iroh close code 429; gRPC: the TCP connection). At least twice `max_frame_bytes`, so one large answer fits.",
      },
    ),
    max_concurrent_streams: documented(
      integer(5, 1024).default(DEFAULTS.maxConcurrentStreams),
      {
        description:
          "Streams a single Iroh connection may open. At least 5: one per priority class (election, heartbeat, log append, snapshot, service). gRPC connections are not limited by this key.",
      },
    ),
    request_deadline_ms: documented(
      integer(1, 3_600_000, "ms").default(DEFAULTS.requestDeadlineMs),
      {
        description:
          "Deadline of a request whose caller gives none. At most `max_request_deadline_ms`.",
      },
    ),
    max_request_deadline_ms: documented(
      integer(1000, 86_400_000, "ms").default(DEFAULTS.maxRequestDeadlineMs),
      { description: "Longer deadlines asked for by callers are cut to this." },
    ),
    shutdown_timeout_ms: documented(
      integer(100, 600_000, "ms").default(DEFAULTS.shutdownTimeoutMs),
      {
        description:
          "On shutdown or a transport switch, how long in-flight calls may take to finish before they are cancelled.",
      },
    ),
  }).superRefine((l, ctx) => {
    if (l.request_deadline_ms > l.max_request_deadline_ms) {
      report(
        ctx,
        "conflict",
        ["request_deadline_ms"],
        l.request_deadline_ms,
        `must not exceed limits.max_request_deadline_ms = ${l.max_request_deadline_ms}`,
      );
    }
  }, when(["request_deadline_ms"], ["max_request_deadline_ms"])).superRefine((l, ctx) => {
    if (l.max_connection_buffer_bytes < 2 * l.max_frame_bytes) {
      report(
        ctx,
        "conflict",
        ["max_connection_buffer_bytes"],
        l.max_connection_buffer_bytes,
        `must be at least twice limits.max_frame_bytes = ${l.max_frame_bytes}, so one large answer fits`,
      );
    }
  }, when(["max_connection_buffer_bytes"], ["max_frame_bytes"])).prefault({}),
  {
    description:
      "Bounds on everything a peer controls. Integers; TOML allows `16_777_216` for readability.",
  },
);

/** Rules that span tables, as docs/configuration.md lists them. */
export const RULES: readonly string[] = [
  'A file that has a `[transport.migration]` section and no `transport.mode` is read as `mode = "dual"`, the only mode where migration means anything (a rollout stage written as the section alone stays on Iroh); `blixard config check` says so. Without the section the mode defaults to `"grpc"`.',
  '`transport.mode = "grpc"` carries every service and Raft over gRPC, and `transport.mode = "iroh"` every service and Raft over Iroh; in both, keys of `[transport.migration]` are ignored with a warning, never refused, so an emergency rollback is the one-line change `mode = "grpc"`.',
  "A non-loopback `grpc.bind` needs `grpc.tls.cert_file` and `grpc.tls.key_file`, or `grpc.allow_insecure = true`.",
  "`grpc.tls.cert_file` and `key_file` come together; `ca_file` needs both.",
  "Every `[[cluster.peers]]` has `endpoint_id` or `ticket`; peer ids and endpoint ids are unique, and no peer has this node's `node.id`.",
  "`limits.request_deadline_ms` is at most `limits.max_request_deadline_ms`.",
  "`limits.max_connection_buffer_bytes` is at least twice `limits.max_frame_bytes`.",
  "`blixard config check` and `blixard node` also check the files the config names: `grpc.tls.cert_file`, `key_file` and `ca_file` must be readable; `iroh.secret_key_file`, if it exists, must be a readable regular file that group and others cannot access, and if it does not, its directory must exist or be creatable; `node.data_dir` must be a directory or creatable.",
];

/** The schema of the whole file, in the file's own snake_case. */
export const configSchema = z.strictObject({
  node,
  transport,
  grpc,
  iroh,
  cluster,
  raft,
  metrics,
  vm,
  limits,
}).superRefine(
  (c, ctx) => {
    c.cluster.peers.forEach((p, i) => {
      if (p.id === c.node.id) {
        report(ctx, "conflict", ["cluster", "peers", i, "id"], p.id, "is this node's own node.id");
      }
    });
  },
  when(["node", "id"], ["cluster", "peers", "*", "id"]),
);

/** The file as the schema reads it (defaults filled in, snake_case). */
export type ConfigFile = z.output<typeof configSchema>;
