/**
 * The VM spec `blixard vm create` asks for: built from its options, or read
 * from a `--spec` file in the proto3 JSON form of `VmSpec`, then checked
 * with the same rules every node applies, so a bad spec is refused (exit
 * status 2) naming the field and the option before any node is called.
 *
 * Owns: {@link specOf}, {@link CREATE_SPEC_OPTIONS}, the mapping from spec
 * fields to options. Imports the generated VM messages, the spec rules of
 * `src/vm/spec.ts` (pure) and this folder's common module.
 *
 * @module
 */

import { resolve } from "node:path";
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { VmDesiredState, type VmSpec, VmSpecSchema } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { vmSpecIssues } from "../vm/spec.ts";
import { CliError, usage } from "./common.ts";

/** The options of `vm create` that describe the VM (the rest say how to call and wait). */
export const CREATE_SPEC_OPTIONS = {
  vcpus: { type: "string" },
  memory: { type: "string" },
  kernel: { type: "string" },
  initrd: { type: "string" },
  cmdline: { type: "string" },
  image: { type: "string" },
  backend: { type: "string" },
  command: { type: "string" },
  option: { type: "string", multiple: true },
  label: { type: "string", multiple: true },
  restart: { type: "string" },
  node: { type: "string" },
  stopped: { type: "boolean" },
  spec: { type: "string" },
} as const;

/** The parsed {@link CREATE_SPEC_OPTIONS}. */
export interface CreateSpecValues {
  vcpus?: string;
  memory?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  image?: string;
  backend?: string;
  command?: string;
  option?: string[];
  label?: string[];
  restart?: string;
  node?: string;
  stopped?: boolean;
  spec?: string;
}

/** vCPUs of a VM whose `--vcpus` is not given. */
export const DEFAULT_VCPUS = 1;
/** Memory of a VM whose `--memory` is not given, MiB. */
export const DEFAULT_MEMORY_MIB = 256;
/** The largest `--spec` file read, bytes: a spec is at most a few dozen KiB. */
export const MAX_SPEC_FILE_BYTES = 1024 * 1024;

/** The backend options that have options of their own. */
const OPTION_OF_KEY: Readonly<Record<string, string>> = {
  initrd: "--initrd",
  cmdline: "--cmdline",
  command: "--command",
  restart: "--restart",
};

/** The option that sets each spec field, for errors. */
const OPTION_OF_FIELD: Readonly<Record<string, string>> = {
  name: "NAME",
  vcpus: "--vcpus",
  memory_mib: "--memory",
  image: "--image",
  kernel: "--kernel",
  backend: "--backend",
  desired_state: "--stopped",
  node_id: "--node",
};

/** What `vm create` is to create, and from where. */
export interface CreateSpec {
  readonly spec: VmSpec;
  /** Read from `--spec` (errors name the file's fields, not options). */
  readonly file?: string;
}

/**
 * The spec of `vm create`: from `--spec FILE` (`-` for stdin) or from the
 * options, NAME the first positional and `argv` the process command given
 * after `--`. Checked as every node checks it.
 *
 * @throws {CliError} a usage error (exit status 2) naming each problem.
 */
export async function specOf(
  command: string,
  values: CreateSpecValues,
  name: string | undefined,
  argv: readonly string[],
): Promise<CreateSpec> {
  if (values.spec !== undefined) {
    const given = Object.keys(CREATE_SPEC_OPTIONS).filter((k) =>
      k !== "spec" && (values as Record<string, unknown>)[k] !== undefined
    );
    if (given.length > 0 || argv.length > 0) {
      const what = given.length > 0 ? `--${given[0]}` : "a command after --";
      throw usage(
        command,
        `${command}: --spec FILE describes the whole VM; ${what} cannot join it`,
      );
    }
    const spec = await readSpecFile(command, values.spec);
    if (name !== undefined && spec.name !== "" && spec.name !== name) {
      throw usage(
        command,
        `${command}: NAME ${JSON.stringify(name)} differs from the name in ${values.spec} ` +
          `(${JSON.stringify(spec.name)}): give one`,
      );
    }
    if (name !== undefined) spec.name = name;
    check(command, spec, values.spec);
    return { spec, file: values.spec };
  }
  if (name === undefined) {
    throw usage(command, `${command}: NAME is required (or --spec FILE)`);
  }
  const spec = create(VmSpecSchema, {
    name,
    vcpus: integerOption(command, "vcpus", values.vcpus, DEFAULT_VCPUS),
    memoryMib: BigInt(memoryOption(command, values.memory)),
    kernel: pathOption(values.kernel),
    image: pathOption(values.image),
    desiredState: values.stopped ? VmDesiredState.STOPPED : VmDesiredState.RUNNING,
    nodeId: BigInt(values.node === undefined ? 0 : integerOption(command, "node", values.node, 0)),
  });
  spec.labels = keyValues(command, "label", values.label ?? []);
  const options = keyValues(command, "option", values.option ?? []);
  const own: [string, string | undefined][] = [
    ["initrd", pathOption(values.initrd) || undefined],
    ["cmdline", values.cmdline],
    ["restart", values.restart],
    ["command", commandOption(command, values.command, argv)],
  ];
  for (const [key, value] of own) {
    if (value === undefined) continue;
    if (Object.hasOwn(options, key)) {
      throw usage(
        command,
        `${command}: --option ${key}=... and ${OPTION_OF_KEY[key]} both set ${key}: give one`,
      );
    }
    options[key] = value;
  }
  spec.backendOptions = options;
  // The process backend is the one that runs a command; qemu the one that boots a kernel.
  spec.backend = values.backend ?? (options["command"] !== undefined ? "process" : "qemu");
  check(command, spec);
  return { spec };
}

/** `--option k=v` (or `--label`), repeated, as a map; a usage error for a malformed or repeated key. */
function keyValues(
  command: string,
  option: string,
  pairs: readonly string[],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0) {
      throw usage(command, `${command}: --${option} ${pair}: expected KEY=VALUE`);
    }
    const key = pair.slice(0, at);
    if (Object.hasOwn(out, key)) {
      throw usage(command, `${command}: --${option} ${key} is given twice`);
    }
    out[key] = pair.slice(at + 1);
  }
  return out;
}

/**
 * The process command: `--command` as a JSON array, or a command line split
 * at spaces; or the arguments after `--`. Undefined when none is given.
 */
function commandOption(
  command: string,
  option: string | undefined,
  argv: readonly string[],
): string | undefined {
  if (option !== undefined && argv.length > 0) {
    throw usage(command, `${command}: give the command once: --command, or after --`);
  }
  if (argv.length > 0) return JSON.stringify(argv);
  if (option === undefined) return undefined;
  if (option.trimStart().startsWith("[")) return option;
  const words = option.split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) throw usage(command, `${command}: --command is empty`);
  return JSON.stringify(words);
}

/** A path made absolute against the working directory ("" when not given). */
function pathOption(path: string | undefined): string {
  if (path === undefined || path === "") return path ?? "";
  return resolve(path);
}

/** A non-negative integer option, or `fallback` when not given; a usage error otherwise. */
function integerOption(
  command: string,
  option: string,
  text: string | undefined,
  fallback: number,
): number {
  if (text === undefined) return fallback;
  if (!/^\d{1,15}$/.test(text)) {
    throw usage(command, `${command}: --${option} ${text}: expected a whole number`);
  }
  return Number(text);
}

/** `--memory`: MiB, plain or with a unit (`512M`, `512MiB`, `2G`, `2GiB`). */
function memoryOption(command: string, text: string | undefined): number {
  if (text === undefined) return DEFAULT_MEMORY_MIB;
  const m = /^(\d{1,12})\s*(M|MiB|G|GiB)?$/i.exec(text);
  if (!m) {
    throw usage(
      command,
      `${command}: --memory ${text}: expected MiB as a whole number, or with a unit: 512M, 2G`,
    );
  }
  return Number(m[1]) * (m[2] && m[2].toUpperCase().startsWith("G") ? 1024 : 1);
}

/** Reads and parses a `--spec` file (`-`: stdin), at most {@link MAX_SPEC_FILE_BYTES}. */
async function readSpecFile(command: string, file: string): Promise<VmSpec> {
  let text: string;
  try {
    const readable = file === "-" ? Deno.stdin.readable : (await Deno.open(file)).readable;
    text = await readText(readable, MAX_SPEC_FILE_BYTES);
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${command}: --spec ${file}: ${(e as Error).message}`);
  }
  let json: JsonValue;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw usage(command, `${command}: --spec ${file}: not JSON: ${(e as Error).message}`);
  }
  try {
    return fromJson(VmSpecSchema, json);
  } catch (e) {
    throw usage(
      command,
      `${command}: --spec ${file}: not a VmSpec in proto3 JSON (proto/blixard/v1/vm.proto): ${
        (e as Error).message
      }`,
    );
  }
}

/** The stream as UTF-8 text, or a CliError when it is longer than `maxBytes`. */
async function readText(readable: ReadableStream<Uint8Array>, maxBytes: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of readable) {
    length += chunk.length;
    if (length > maxBytes) {
      throw new CliError(`more than ${maxBytes} bytes: a spec file is at most ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

/** A usage error listing every problem of `spec`, each with the option that sets it. */
function check(command: string, spec: VmSpec, file?: string): void {
  const issues = vmSpecIssues(spec);
  if (issues.length === 0) return;
  const lines = issues.map((i) => {
    const key = i.field.startsWith("backend_options.")
      ? i.field.slice("backend_options.".length)
      : undefined;
    const option = file !== undefined
      ? undefined
      : i.field === "labels" || i.field.startsWith("labels.")
      ? "--label"
      : key !== undefined
      ? OPTION_OF_KEY[key] ?? `--option ${key}=...`
      : OPTION_OF_FIELD[i.field];
    return `  ${i.field}: ${i.message}${option ? ` (${option})` : ""}`;
  });
  const source = file === undefined ? "" : ` in ${file}`;
  throw usage(
    command,
    `${command}: vm ${JSON.stringify(spec.name)}${source} is not a valid spec:\n${
      lines.join("\n")
    }`,
  );
}
