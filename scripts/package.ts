/**
 * Builds the `blixard` package: one self-extracting file (dist/blixard) that
 * carries the Deno runtime, the agent's code and the npm packages it loads at
 * run time, and runs the agent on a Linux x86_64 host with nothing else
 * installed. `deno compile` would make such a file too, but needs `denort`,
 * which cannot be fetched here (scripts/compile.ts); this is built only from
 * what `npm install` brings.
 *
 *   deno run -A scripts/package.ts [--output PATH]     (deno task package)
 *
 * The file is scripts/package_header.sh with its values filled in, followed by
 * the payload: a gzip'd tar of
 *
 *   deno               node_modules/deno/deno, the runtime package.json pins
 *   LICENSE.deno       its licence
 *   app/deno.json      the agent's config (nodeModulesDir "manual", its version)
 *   app/package.json   the agent's `dependencies`, nothing else
 *   app/mod.ts, app/src/
 *   app/node_modules/  those dependencies and theirs, as npm laid them out;
 *                      no dev dependency
 *
 * The build is reproducible: the same tree gives the same bytes (sorted
 * entries, fixed owners, modes and times, `SOURCE_DATE_EPOCH` or 0).
 *
 * Owns: what goes into the package, the payload, the header's values. Reads
 * the agent's files as data; imports nothing of the agent. Needs tar (GNU) and
 * gzip on the build machine.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { basename, dirname, join, relative, resolve } from "node:path";

/** Why a package could not be built. */
export type PackageErrorCode =
  /** A package src/ needs is not in node_modules. */
  | "MISSING_DEPENDENCY"
  /** src/ imports a package that package.json does not list in `dependencies`. */
  | "UNDECLARED_IMPORT"
  /** node_modules/deno is not the version package.json pins. */
  | "RUNTIME_MISMATCH"
  /** tar or gzip failed or is missing. */
  | "TOOL_FAILED";

/** A build failure; the message names what is wrong and what to do. */
export class PackageError extends Error {
  /** Stable code to match on. */
  readonly code: PackageErrorCode;

  constructor(code: PackageErrorCode, message: string) {
    super(message);
    this.name = "PackageError";
    this.code = code;
  }
}

/** What {@link buildPackage} wrote. */
export interface PackageResult {
  /** The file, absolute. */
  readonly path: string;
  /** The agent's version, from deno.json. */
  readonly version: string;
  /** The runtime's version, from node_modules/deno. */
  readonly denoVersion: string;
  /** SHA-256 of the payload, hex: what the header checks. */
  readonly sha256: string;
  /** The whole file's size. */
  readonly sizeBytes: number;
  /** The npm packages it carries, as paths under node_modules/. */
  readonly packages: readonly string[];
}

/** Options of {@link buildPackage}. */
export interface PackageOptions {
  /** The repository (default: this script's). */
  readonly root?: string;
  /** Where to write the file (default `<root>/dist/blixard`). */
  readonly output?: string;
  /** Where progress lines go (default stderr). */
  readonly log?: (line: string) => void;
}

interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const repoRoot = resolve(new URL("../", import.meta.url).pathname);
const HEADER_TEMPLATE = new URL("./package_header.sh", import.meta.url);

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await Deno.readTextFile(path)) as T;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Where Node's resolution finds `name` for the package at `from` (a path
 * under `root`, "" for the root): `from/node_modules/name`, then the same in
 * each enclosing package, up to `root/node_modules/name`.
 */
async function resolvePackage(root: string, from: string, name: string) {
  let dir = from;
  for (;;) {
    const candidate = join(dir, "node_modules", name);
    if (await isDirectory(join(root, candidate))) return candidate;
    if (dir === "" || dir === ".") return undefined;
    const at = dir.lastIndexOf("node_modules/");
    dir = at <= 0 ? "" : dir.slice(0, at - 1);
  }
}

/**
 * The npm packages the agent loads at run time: package.json's
 * `dependencies`, and theirs (`dependencies`, installed optional and peer
 * ones), as paths under `root` ("node_modules/@grpc/grpc-js"), sorted. Dev
 * dependencies are left out unless a run-time one needs them.
 *
 * @throws {PackageError} MISSING_DEPENDENCY when a required one is not installed.
 */
export async function runtimePackages(root: string = repoRoot): Promise<string[]> {
  const top = await readJson<PackageJson>(join(root, "package.json"));
  const found = new Set<string>();
  const queue: Array<{ from: string; name: string; required: boolean; by: string }> = Object
    .keys(top.dependencies ?? {}).map((name) => ({
      from: "",
      name,
      required: true,
      by: "package.json",
    }));
  while (queue.length > 0) {
    const { from, name, required, by } = queue.shift()!;
    const path = await resolvePackage(root, from, name);
    if (path === undefined) {
      if (!required) continue;
      throw new PackageError(
        "MISSING_DEPENDENCY",
        `package: ${by} depends on ${name}, which is not in node_modules; run npm install`,
      );
    }
    if (found.has(path)) continue;
    found.add(path);
    const manifest = await readJson<PackageJson>(join(root, path, "package.json"));
    const optionalPeers = manifest.peerDependenciesMeta ?? {};
    for (const dep of Object.keys(manifest.dependencies ?? {})) {
      queue.push({ from: path, name: dep, required: true, by: path });
    }
    // Optional ones are platform variants (only this platform's is installed).
    for (const dep of Object.keys(manifest.optionalDependencies ?? {})) {
      queue.push({ from: path, name: dep, required: false, by: path });
    }
    for (const dep of Object.keys(manifest.peerDependencies ?? {})) {
      queue.push({ from: path, name: dep, required: !optionalPeers[dep]?.optional, by: path });
    }
  }
  return [...found].sort();
}

/** Every file under `dir` (relative to it) whose name ends in `.ts`, sorted. */
async function typeScriptFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, prefix))) {
    const path = prefix === "" ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory) out.push(...await typeScriptFiles(dir, path));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

/** The package name of a bare specifier: "@a/b/c" is "@a/b", "x/y" is "x". */
function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

const IMPORT =
  /(?:^|[\s;}])(?:import|export)\s[^"'`;]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*[,)]|^\s*import\s*["']([^"']+)["']/gm;

/**
 * The packages that mod.ts and src/ import by bare name, each with one file
 * that imports it. Relative, `node:` and import-map (deno.json `imports`)
 * specifiers are not packages; code in JSDoc examples is not imported.
 */
export async function importedPackages(root: string = repoRoot): Promise<Map<string, string>> {
  const denoJson = await readJson<{ imports?: Record<string, string> }>(join(root, "deno.json"));
  const mapped = new Set(Object.keys(denoJson.imports ?? {}));
  const files = ["mod.ts", ...(await typeScriptFiles(join(root, "src"))).map((f) => `src/${f}`)];
  const out = new Map<string, string>();
  for (const file of files) {
    // JSDoc examples import the library by name; they are documentation.
    const code = (await Deno.readTextFile(join(root, file))).replace(/\/\*\*[\s\S]*?\*\//g, "");
    for (const m of code.matchAll(IMPORT)) {
      const specifier = m[1] ?? m[2] ?? m[3]!;
      if (/^(\.|\/|node:|data:)/.test(specifier) || mapped.has(specifier)) continue;
      const name = packageName(specifier.replace(/^npm:/, "").replace(/@[^/]*$/, ""));
      if (!out.has(name)) out.set(name, file);
    }
  }
  return out;
}

/** Hard-links (or, across file systems, copies) `from` to `to`, recursively; no nested node_modules. */
async function stageTree(from: string, to: string, skipNodeModules: boolean): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (skipNodeModules && e.name === "node_modules") continue;
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory) await stageTree(src, dst, false);
    else if (e.isSymlink) await Deno.symlink(await Deno.readLink(src), dst);
    else await stageFile(src, dst);
  }
}

async function stageFile(from: string, to: string): Promise<void> {
  await Deno.mkdir(dirname(to), { recursive: true });
  try {
    await Deno.link(from, to);
  } catch {
    await Deno.copyFile(from, to);
  }
}

function spawn(cmd: string, args: string[], stdin: "piped" | "null"): Deno.ChildProcess {
  try {
    return new Deno.Command(cmd, { args, stdin, stdout: "piped", stderr: "inherit" }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new PackageError("TOOL_FAILED", `package: ${cmd} is not installed; it is needed`);
    }
    throw e;
  }
}

/** A reproducible gzip'd tar of `dir`'s contents, written to `out`. */
async function tarGzip(dir: string, out: string): Promise<void> {
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH") ?? "0";
  const tar = spawn("tar", [
    "--create",
    "--file=-",
    `--directory=${dir}`,
    "--format=gnu",
    "--sort=name",
    "--hard-dereference",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    `--mtime=@${epoch}`,
    "--mode=u+rwX,go+rX,go-w",
    ".",
  ], "null");
  const gzip = spawn("gzip", ["-n", "-6"], "piped");
  const file = await Deno.open(out, { write: true, create: true, truncate: true });
  await Promise.all([tar.stdout.pipeTo(gzip.stdin), gzip.stdout.pipeTo(file.writable)]);
  const [t, g] = await Promise.all([tar.status, gzip.status]);
  if (!t.success || !g.success) {
    throw new PackageError(
      "TOOL_FAILED",
      `package: making the payload failed (tar exit ${t.code}, gzip exit ${g.code}); see above`,
    );
  }
}

/** The header with its values filled in; `offset` is where the payload starts, counted from 1. */
export function renderHeader(
  template: string,
  values: { version: string; denoVersion: string; sha256: string; sizeBytes: number },
): string {
  const fill = (offset: number) =>
    template
      .replaceAll("@VERSION@", values.version)
      .replaceAll("@DENO_VERSION@", values.denoVersion)
      .replaceAll("@SHA256@", values.sha256)
      .replaceAll("@SHA256_PREFIX@", values.sha256.slice(0, 16))
      .replaceAll("@SIZE@", String(values.sizeBytes))
      .replaceAll("@OFFSET@", String(offset));
  // The offset's own digits change the header's length: settle on a fixed point.
  let offset = 1;
  for (;;) {
    const header = fill(offset);
    const next = new TextEncoder().encode(header).length + 1;
    if (next === offset) return header;
    offset = next;
  }
}

/** `path` relative to the working directory when it is under it. */
function shortPath(path: string): string {
  const rel = relative(Deno.cwd(), path);
  return rel === "" || rel.startsWith("..") ? path : rel;
}

/** Builds the package; see the module comment for what it holds. */
export async function buildPackage(options: PackageOptions = {}): Promise<PackageResult> {
  const root = resolve(options.root ?? repoRoot);
  const output = resolve(root, options.output ?? "dist/blixard");
  const log = options.log ?? ((line: string) => console.error(line));

  const top = await readJson<PackageJson>(join(root, "package.json"));
  const denoJson = await readJson<{ version: string }>(join(root, "deno.json"));
  const runtime = await readJson<PackageJson>(join(root, "node_modules/deno/package.json"))
    .catch(() => ({} as PackageJson));
  const pinned = top.devDependencies?.deno;
  if (runtime.version === undefined || runtime.version !== pinned) {
    throw new PackageError(
      "RUNTIME_MISMATCH",
      `package: node_modules/deno is ${runtime.version ?? "missing"}, package.json pins ` +
        `deno ${pinned}; run npm install`,
    );
  }

  const packages = await runtimePackages(root);
  const declared = new Set(Object.keys(top.dependencies ?? {}));
  for (const [name, file] of await importedPackages(root)) {
    if (!declared.has(name)) {
      throw new PackageError(
        "UNDECLARED_IMPORT",
        `package: ${file} imports "${name}", which package.json does not list in ` +
          `"dependencies" (only those are packaged); move or add it there and run npm install`,
      );
    }
  }

  await Deno.mkdir(dirname(output), { recursive: true });
  const stage = await Deno.makeTempDir({ dir: dirname(output), prefix: ".package-" });
  try {
    await stageFile(join(root, "node_modules/deno/deno"), join(stage, "deno"));
    await stageFile(join(root, "node_modules/deno/LICENSE"), join(stage, "LICENSE.deno"));
    const app = join(stage, "app");
    await stageFile(join(root, "deno.json"), join(app, "deno.json"));
    await stageFile(join(root, "mod.ts"), join(app, "mod.ts"));
    await stageTree(join(root, "src"), join(app, "src"), false);
    const appPackage = {
      name: top.name,
      private: true,
      type: "module",
      dependencies: top.dependencies ?? {},
    };
    await Deno.writeTextFile(join(app, "package.json"), JSON.stringify(appPackage, null, 2) + "\n");
    for (const path of packages) await stageTree(join(root, path), join(app, path), true);

    const payload = join(stage, "..", `${basename(stage)}.tar.gz`);
    try {
      await tarGzip(stage, payload);
      const bytes = await Deno.readFile(payload);
      const sha256 = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      const header = renderHeader(await Deno.readTextFile(HEADER_TEMPLATE), {
        version: denoJson.version,
        denoVersion: runtime.version,
        sha256,
        sizeBytes: bytes.length,
      });
      const partial = `${output}.partial`;
      const headerBytes = new TextEncoder().encode(header);
      const file = await Deno.open(partial, { write: true, create: true, truncate: true });
      try {
        for (const part of [headerBytes, bytes]) {
          for (let at = 0; at < part.length;) at += await file.write(part.subarray(at));
        }
      } finally {
        file.close();
      }
      await Deno.chmod(partial, 0o755);
      await Deno.rename(partial, output);
      const sizeBytes = headerBytes.length + bytes.length;
      log(
        `package: wrote ${shortPath(output)}: blixard ${denoJson.version}, ` +
          `deno ${runtime.version}, ${packages.length} npm packages, ` +
          `${(sizeBytes / 2 ** 20).toFixed(1)} MiB, payload sha256 ${sha256}`,
      );
      return {
        path: output,
        version: denoJson.version,
        denoVersion: runtime.version,
        sha256,
        sizeBytes,
        packages,
      };
    } finally {
      await Deno.remove(payload).catch(() => {});
    }
  } finally {
    await Deno.remove(stage, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { output: { type: "string" } } });
  try {
    await buildPackage(values.output === undefined ? {} : { output: values.output });
  } catch (e) {
    if (!(e instanceof PackageError)) throw e;
    console.error(e.message);
    Deno.exit(1);
  }
}
