/**
 * The files a configuration names, checked on disk: the gRPC TLS files can
 * be read, the Iroh secret key file can be read and is private (or, when it
 * does not exist yet, can be created), and the data directory exists or can
 * be created. `blixard config check` and `blixard node` run these checks so
 * that a missing certificate is a config error naming its key, not a
 * listener that fails at start.
 *
 * Owns: {@link checkConfigFiles}, the I/O half of validation (parseConfig
 * stays pure). May import: node:path, ./issues.ts, ./types.ts; nothing else
 * of the project.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { type ConfigIssue, formatValue } from "./issues.ts";
import type { AgentConfig } from "./types.ts";

/**
 * Every problem with the files `config` names, each naming the key, the path
 * and the reason, e.g.
 * `agent.toml: grpc.tls.cert_file = "/etc/x.crt": cannot read it: no such file`.
 * Relative paths are resolved against the working directory, as the node
 * resolves them. Checking whether a directory is writable creates and removes
 * one empty temporary file in it: permission bits alone cannot say (root
 * writes anywhere; groups are not visible from here).
 *
 * @example
 * ```ts ignore
 * const result = await loadConfigFile("agent.toml");
 * if (result.ok) for (const e of await checkConfigFiles(result.config, "agent.toml")) console.error(e.message);
 * ```
 */
export async function checkConfigFiles(
  config: AgentConfig,
  source = "config",
): Promise<ConfigIssue[]> {
  const issues: ConfigIssue[] = [];
  const problem = (code: ConfigIssue["code"], path: string, value: string, what: string) =>
    issues.push({ code, path, message: `${source}: ${path} = ${formatValue(value)}: ${what}` });

  const { tls } = config.grpc;
  const readable: [string, string | undefined][] = [
    ["grpc.tls.cert_file", tls.certFile],
    ["grpc.tls.key_file", tls.keyFile],
    ["grpc.tls.ca_file", tls.caFile],
  ];
  for (const [path, file] of readable) {
    if (file === undefined) continue;
    const why = await unreadable(file);
    if (why !== undefined) problem("unreadable_file", path, file, `cannot read it: ${why}`);
  }

  const key = config.iroh.secretKeyFile;
  const keyInfo = await statOf(key);
  if (typeof keyInfo === "string") {
    problem("unreadable_file", "iroh.secret_key_file", key, `cannot read it: ${keyInfo}`);
  } else if (keyInfo === null) {
    const why = await cannotHold(dirname(resolve(key)));
    if (why !== undefined) {
      problem("unwritable_path", "iroh.secret_key_file", key, `cannot create it: ${why}`);
    }
  } else {
    const why = await unreadable(key);
    if (why !== undefined) {
      problem("unreadable_file", "iroh.secret_key_file", key, `cannot read it: ${why}`);
    } else if (keyInfo.mode !== null && (keyInfo.mode & 0o077) !== 0) {
      problem(
        "insecure",
        "iroh.secret_key_file",
        key,
        `group or others can access it (mode 0${
          (keyInfo.mode & 0o777).toString(8)
        }) and the node refuses such a key (allowed: 0600 or 0400); fix with: chmod 600 ${key}`,
      );
    }
  }

  const dataDir = config.node.dataDir;
  const why = await cannotHold(resolve(dataDir));
  if (why !== undefined) {
    problem("unwritable_path", "node.data_dir", dataDir, `cannot use it: ${why}`);
  }
  return issues;
}

/** Why `path` cannot be read as a file, or undefined if it can. */
async function unreadable(path: string): Promise<string | undefined> {
  const info = await statOf(path);
  if (info === null) return "no such file";
  if (typeof info === "string") return info;
  if (info.isDirectory) return "it is a directory";
  try {
    (await Deno.open(path, { read: true })).close();
    return undefined;
  } catch (e) {
    return reason(e);
  }
}

/**
 * Why a file cannot be created in directory `dir` (created with its
 * parents if missing, as the node does), or undefined if it can: the nearest
 * existing ancestor must be a writable directory.
 */
async function cannotHold(dir: string): Promise<string | undefined> {
  let at = dir;
  for (;;) {
    const info = await statOf(at);
    if (typeof info === "string") return `${at}: ${info}`;
    if (info !== null) {
      if (!info.isDirectory) return `${at} is not a directory`;
      try {
        await Deno.remove(await Deno.makeTempFile({ dir: at, prefix: ".blixard-check-" }));
        return undefined;
      } catch (e) {
        return `${at} is not writable: ${reason(e)}`;
      }
    }
    const parent = dirname(at);
    if (parent === at) return `${at} does not exist`;
    at = parent;
  }
}

/**
 * The file's info; null if it does not exist (a parent that is a file counts:
 * nothing can exist under it); or why it cannot be looked at.
 */
async function statOf(path: string): Promise<Deno.FileInfo | null | string> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    return reason(e);
  }
}

function reason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotADirectory) return "a parent of it is not a directory";
  return e instanceof Error ? e.message : String(e);
}
