/**
 * A cluster of `blixard node` processes on loopback, for `blixard demo`:
 * node keys made first (so every node names its peers' endpoint ids), one
 * TOML file per node, each node started as a child process of this same
 * executable, and stopped with SIGTERM (SIGKILL if it does not exit).
 *
 * Owns: {@link LocalCluster}, {@link selfCommand}, {@link selfInvocation}.
 * Imports the Iroh key and ticket helpers; runs the agent only as child
 * processes.
 *
 * Each node runs in a session of its own, so a Ctrl-C in the terminal
 * reaches the demo and not the nodes: the demo stops the VM through the
 * cluster first, then the nodes. Their output goes to `<dir>/nodeN.log`.
 *
 * @module
 */

import { createSocket } from "node:dgram";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { toTicket } from "../transport/iroh/endpoint.ts";
import { endpointIdOf, loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import type { VmBackend } from "../config/mod.ts";

/** How long a node has to exit after SIGTERM before it is killed, ms. */
const NODE_STOP_MS = 15_000;

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
/** The directory that holds `deno.json` and `src/`. */
const APP_ROOT = dirname(dirname(dirname(MAIN)));

/** How this process was started: from source, from the package, or compiled. */
function runMode(): "source" | "package" | "compiled" {
  const exe = basename(Deno.execPath());
  if (exe !== "deno") return "compiled";
  // The package (scripts/package.ts) unpacks to <tree>/deno and <tree>/app/src/cli/main.ts.
  return dirname(Deno.execPath()) === dirname(APP_ROOT) && basename(APP_ROOT) === "app"
    ? "package"
    : "source";
}

/**
 * The command that runs `blixard ARGS` the way this process runs: the same
 * runtime on the same entry point with the package's flags, or the compiled
 * executable itself.
 */
export function selfCommand(args: readonly string[]): { command: string; args: string[] } {
  const mode = runMode();
  if (mode === "compiled") return { command: Deno.execPath(), args: [...args] };
  const flags = [
    "run",
    "--allow-all",
    "--no-lock",
    "--node-modules-dir=manual",
    `--config=${join(APP_ROOT, "deno.json")}`,
    // The package runs with nothing fetched; so do its children.
    ...(mode === "package" ? ["--no-remote", "--cached-only"] : []),
  ];
  return { command: Deno.execPath(), args: [...flags, MAIN, ...args] };
}

/** How a person runs `blixard` the way this process was run, for the hints a command prints. */
export function selfInvocation(): string {
  if (runMode() !== "source") return "blixard";
  if (Deno.cwd() === APP_ROOT) return "npx deno task blixard";
  return `${Deno.execPath()} run -A ${MAIN}`;
}

/** A free port on 127.0.0.1 (free when asked; a node binds it soon after). */
async function freePort(kind: "tcp" | "udp"): Promise<number> {
  if (kind === "tcp") {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    return port;
  }
  const socket = createSocket("udp4");
  const port = await new Promise<number>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve(socket.address().port));
  });
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** One node of a {@link LocalCluster}. */
export interface LocalNode {
  readonly id: number;
  readonly config: string;
  readonly dataDir: string;
  /** Its output, stdout and stderr. */
  readonly logFile: string;
  /** `127.0.0.1:PORT` of its gRPC listener. */
  readonly grpcAddress: string;
  /** `127.0.0.1:PORT` of its `/metrics`, `/healthz` and `/readyz`. */
  readonly metricsAddress: string;
  readonly endpointId: string;
  /** Its Iroh ticket: endpoint id and loopback address. */
  readonly ticket: string;
  /** The process, once started. */
  process?: Deno.ChildProcess;
  /** Its exit status once it exited. */
  exited?: Deno.CommandStatus;
}

/** Options of {@link LocalCluster.create}. */
export interface LocalClusterOptions {
  /** An empty directory for keys, configs, data and logs. */
  readonly dir: string;
  /** How many nodes (each a voter). */
  readonly size: number;
  /** The endpoint id allowed to call over Iroh besides the nodes. */
  readonly operatorId: string;
  readonly backends: readonly VmBackend[];
}

/** Nodes on loopback, every one a voter of the same cluster from the start. */
export class LocalCluster {
  readonly nodes: readonly LocalNode[];

  private constructor(nodes: LocalNode[]) {
    this.nodes = nodes;
  }

  /** Writes each node's key and config under `dir`; starts nothing. */
  static async create(o: LocalClusterOptions): Promise<LocalCluster> {
    const nodes: (LocalNode & { irohAddress: string })[] = [];
    for (let id = 1; id <= o.size; id++) {
      const dataDir = join(o.dir, `node${id}`);
      await Deno.mkdir(dataDir, { mode: 0o700 });
      const { secretKey } = await loadOrCreateSecretKey(join(dataDir, "iroh_secret_key"));
      const endpointId = endpointIdOf(secretKey);
      const irohAddress = `127.0.0.1:${await freePort("udp")}`;
      nodes.push({
        id,
        config: join(o.dir, `node${id}.toml`),
        dataDir,
        logFile: join(o.dir, `node${id}.log`),
        grpcAddress: `127.0.0.1:${await freePort("tcp")}`,
        metricsAddress: `127.0.0.1:${await freePort("tcp")}`,
        endpointId,
        irohAddress,
        ticket: toTicket({ id: endpointId, directAddresses: [irohAddress] }),
      });
    }
    for (const n of nodes) {
      const peers = nodes.filter((p) => p.id !== n.id).map((p) =>
        `[[cluster.peers]]\nid = ${p.id}\nendpoint_id = "${p.endpointId}"\n` +
        `addresses = ["${p.irohAddress}"]\ngrpc_address = "${p.grpcAddress}"\n`
      );
      await Deno.writeTextFile(
        n.config,
        `# Node ${n.id} of a blixard demo cluster: every node on loopback.
[node]
id = ${n.id}
data_dir = "${n.dataDir}"

[transport]
mode = "dual"

[grpc]
bind = "${n.grpcAddress}"

[iroh]
bind = "${n.irohAddress}"
relay = "disabled"

[metrics]
bind = "${n.metricsAddress}"

[cluster]
operator_keys = ["${o.operatorId}"]

${peers.join("\n")}
[vm]
backends = [${o.backends.map((b) => `"${b}"`).join(", ")}]
# A node that stops takes its VMs with it: nothing of the demo outlives it.
on_agent_stop = "stop"

[limits]
shutdown_timeout_ms = 3000
`,
      );
    }
    return new LocalCluster(nodes);
  }

  /** Starts every node, each in a session of its own, its output to its log file. */
  start(): void {
    for (const n of this.nodes) {
      const self = selfCommand(["node", "--config", n.config]);
      // The shell only redirects, then becomes the node: the pid is the node's.
      n.process = new Deno.Command("/bin/sh", {
        args: ["-c", 'exec "$@" >>"$0" 2>&1', n.logFile, self.command, ...self.args],
        stdin: "null",
        stdout: "null",
        stderr: "null",
        detached: true,
        env: { NO_COLOR: "1" },
      }).spawn();
      n.process.status.then((s) => n.exited = s);
    }
  }

  /** A node that exited, with the end of its log; undefined while all run. */
  async exitedNode(): Promise<string | undefined> {
    const n = this.nodes.find((n) => n.exited !== undefined);
    if (n === undefined) return undefined;
    const log = await Deno.readTextFile(n.logFile).catch(() => "");
    const tail = log.trimEnd().split("\n").slice(-5).join("\n    ");
    return `node ${n.id} exited (status ${n.exited!.code}); the end of ${n.logFile}:\n    ${tail}`;
  }

  /**
   * SIGTERM to every node that runs, then SIGKILL to those still running
   * after {@link NODE_STOP_MS}; resolves once all have exited.
   */
  async stop(): Promise<void> {
    const running = this.nodes.filter((n) => n.process !== undefined && n.exited === undefined);
    for (const n of running) signal(n.process!, "SIGTERM");
    await Promise.all(running.map(async (n) => {
      const timer = setTimeout(() => signal(n.process!, "SIGKILL"), NODE_STOP_MS);
      await n.process!.status;
      clearTimeout(timer);
    }));
  }
}

function signal(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch {
    // It exited already.
  }
}
