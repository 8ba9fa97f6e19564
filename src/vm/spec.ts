/**
 * What a VM spec may say: every field of `VmSpec` (proto/blixard/v1/vm.proto)
 * checked, with errors that name the field, the value and what is allowed,
 * and the `backend_options` keys each backend accepts.
 *
 * Owns: {@link validateVmSpec}, {@link VmSpecError}, the option rules of the
 * `qemu` and `process` backends and of every backend ({@link COMMON_OPTIONS}),
 * and the readers of the options the reconciler itself uses
 * ({@link restartPolicyOf}, {@link stopTimeoutMsOf}). Pure: imports the
 * generated messages only, no I/O, so the cluster half can validate a spec
 * before it proposes it and every node agrees.
 *
 * @module
 */

import { VmDesiredState, type VmSpec } from "../rpc/gen/blixard/v1/vm_pb.ts";

/** Bounds of a VM spec, the same on every node. */
export const VM_SPEC_LIMITS = Object.freeze({
  /** A name is a DNS label: it becomes a directory name and part of a socket path. */
  maxNameLength: 63,
  minVcpus: 1,
  maxVcpus: 256,
  minMemoryMib: 16,
  /** 1 TiB. */
  maxMemoryMib: 1024 * 1024,
  maxPathBytes: 4096,
  maxOptions: 32,
  maxOptionKeyBytes: 64,
  maxOptionValueBytes: 16 * 1024,
  /** Arguments of the process backend's `command`. */
  maxCommandArgs: 256,
  /** Linux's x86 kernel command line holds 2048 bytes. */
  maxCmdlineBytes: 2048,
  maxStopTimeoutMs: 600_000,
  maxLabels: 32,
  maxLabelValueBytes: 256,
});

/** A label key: 1 to 63 of a-z 0-9 . _ / -, starting with a letter or digit. */
const LABEL_KEY = /^[a-z0-9][a-z0-9._\/-]{0,62}$/;

/** What a VM does when it exits while its desired state is running. */
export type RestartPolicy = "never" | "on-failure" | "always";

/** The restart policies, in the order documentation lists them. */
export const RESTART_POLICIES: readonly RestartPolicy[] = ["never", "on-failure", "always"];

/** The default of the `restart` option. */
export const DEFAULT_RESTART_POLICY: RestartPolicy = "on-failure";

/** The default of the `stop_timeout_ms` option: how long a guest gets to shut down. */
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;

/** How a qemu VM is accelerated: `auto` probes KVM and falls back to TCG. */
export type AccelMode = "auto" | "kvm" | "tcg";

/** One `backend_options` key: what it means, and a check returning a problem or `undefined`. */
export interface OptionRule {
  /** One line for documentation and errors. */
  readonly describe: string;
  /** Returns what is wrong with `value`, or `undefined` if it is fine. */
  readonly check: (value: string) => string | undefined;
  /** The backend cannot run without it. */
  readonly required?: boolean;
}

/** The option rules of one backend, by key. */
export type OptionRules = Readonly<Record<string, OptionRule>>;

const utf8 = new TextEncoder();
const bytes = (s: string) => utf8.encode(s).length;

function oneOf(allowed: readonly string[]): (value: string) => string | undefined {
  return (value) =>
    allowed.includes(value) ? undefined : `expected ${allowed.map((a) => `"${a}"`).join(", ")}`;
}

function absolutePath(value: string): string | undefined {
  if (!value.startsWith("/")) return "expected an absolute path";
  if (value.includes("\0")) return "a path cannot contain a NUL byte";
  if (bytes(value) > VM_SPEC_LIMITS.maxPathBytes) {
    return `expected at most ${VM_SPEC_LIMITS.maxPathBytes} bytes`;
  }
  return undefined;
}

function integerIn(min: number, max: number): (value: string) => string | undefined {
  return (value) => {
    if (!/^\d{1,15}$/.test(value) || Number(value) < min || Number(value) > max) {
      return `expected an integer from ${min} to ${max}`;
    }
    return undefined;
  };
}

/** Options every backend accepts: they are the reconciler's, not the runner's. */
export const COMMON_OPTIONS: OptionRules = Object.freeze({
  restart: {
    describe: `what to do when the VM exits while it should run: ${
      RESTART_POLICIES.join(", ")
    } (default ${DEFAULT_RESTART_POLICY})`,
    check: oneOf(RESTART_POLICIES),
  },
  stop_timeout_ms: {
    describe:
      `how long a graceful stop waits before it forces the VM off (default ${DEFAULT_STOP_TIMEOUT_MS})`,
    check: integerIn(0, VM_SPEC_LIMITS.maxStopTimeoutMs),
  },
});

/** The `qemu` backend's own options. */
export const QEMU_OPTIONS: OptionRules = Object.freeze({
  initrd: { describe: "initramfs for direct kernel boot (absolute path)", check: absolutePath },
  cmdline: {
    describe: 'kernel command line (default "console=ttyS0 reboot=t panic=-1", plus ' +
      '" root=/dev/vda" when an image is given)',
    check: (value) =>
      bytes(value) > VM_SPEC_LIMITS.maxCmdlineBytes
        ? `expected at most ${VM_SPEC_LIMITS.maxCmdlineBytes} bytes`
        : value.includes("\0") || value.includes("\n")
        ? "a command line cannot contain NUL or newline"
        : undefined,
  },
  accel: {
    describe: "acceleration: auto (KVM if it really works here, else TCG), kvm or tcg " +
      "(default: the node's setting)",
    check: oneOf(["auto", "kvm", "tcg"]),
  },
  image_format: {
    describe: "format of the image file: raw or qcow2 (default raw)",
    check: oneOf(["raw", "qcow2"]),
  },
});

/** The `process` backend's own options. */
export const PROCESS_OPTIONS: OptionRules = Object.freeze({
  command: {
    describe: "the argv to run, as a JSON array of strings, the first an absolute path: " +
      '["/usr/bin/sleep", "60"]',
    check: (value) => {
      try {
        parseCommand(value);
        return undefined;
      } catch (e) {
        return (e as Error).message;
      }
    },
    required: true,
  },
});

/** The option rules of the backends this agent has, by backend name. */
export const BUILTIN_BACKEND_OPTIONS: Readonly<Record<string, OptionRules>> = Object.freeze({
  qemu: QEMU_OPTIONS,
  process: PROCESS_OPTIONS,
});

/**
 * Parses the process backend's `command` option: a JSON array of 1 to 256
 * strings, the first an absolute path.
 *
 * @throws {Error} naming what is wrong (the caller adds the field name).
 */
export function parseCommand(value: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new Error(`expected a JSON array of strings, got ${JSON.stringify(value)}`);
  }
  if (
    !Array.isArray(parsed) || parsed.length === 0 ||
    !parsed.every((a) => typeof a === "string")
  ) {
    throw new Error(`expected a non-empty JSON array of strings, got ${value}`);
  }
  if (parsed.length > VM_SPEC_LIMITS.maxCommandArgs) {
    throw new Error(
      `expected at most ${VM_SPEC_LIMITS.maxCommandArgs} arguments, got ${parsed.length}`,
    );
  }
  if (parsed.some((a: string) => a.includes("\0"))) {
    throw new Error("an argument cannot contain a NUL byte");
  }
  const args = parsed as string[];
  const problem = absolutePath(args[0]!);
  if (problem !== undefined) {
    throw new Error(`program ${JSON.stringify(args[0])}: ${problem}`);
  }
  return args;
}

/** One problem of a spec. */
export interface VmSpecIssue {
  /** The field as the proto names it: `name`, `memory_mib`, `backend_options.cmdline`. */
  readonly field: string;
  readonly message: string;
}

/** Why a spec was refused. */
export type VmSpecErrorCode = "INVALID_SPEC";

/** A spec with one or more problems; the message lists every one. */
export class VmSpecError extends Error {
  override readonly name = "VmSpecError";
  readonly code: VmSpecErrorCode = "INVALID_SPEC";
  /** Every problem found, in field order. */
  readonly issues: readonly VmSpecIssue[];

  constructor(vm: string, issues: readonly VmSpecIssue[]) {
    super(
      `vm ${JSON.stringify(vm)}: ` +
        issues.map((i) => `${i.field}: ${i.message}`).join("; "),
    );
    this.issues = issues;
  }
}

const NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Options of {@link validateVmSpec}. */
export interface ValidateOptions {
  /**
   * The backends this cluster knows, with their option rules (default
   * {@link BUILTIN_BACKEND_OPTIONS}); an extension adds its own here.
   */
  readonly backends?: Readonly<Record<string, OptionRules>>;
}

/**
 * Checks every field of `spec` and returns the problems, in field order;
 * empty when the spec is good.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { VmSpecSchema } from "../rpc/gen/blixard/v1/vm_pb.ts";
 * import { vmSpecIssues } from "./spec.ts";
 *
 * const spec = create(VmSpecSchema, { name: "Web", vcpus: 0, memoryMib: 256n, backend: "qemu" });
 * vmSpecIssues(spec).map((i) => i.field); // ["name", "vcpus", "kernel"]
 * ```
 */
export function vmSpecIssues(spec: VmSpec, options: ValidateOptions = {}): VmSpecIssue[] {
  const backends = options.backends ?? BUILTIN_BACKEND_OPTIONS;
  const issues: VmSpecIssue[] = [];
  const add = (field: string, message: string) => issues.push({ field, message });
  const L = VM_SPEC_LIMITS;

  if (!NAME.test(spec.name)) {
    add(
      "name",
      `${JSON.stringify(spec.name.slice(0, 80))}: expected 1 to ${L.maxNameLength} characters ` +
        "of a-z, 0-9 and '-', starting and ending with a letter or digit",
    );
  }
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < L.minVcpus || spec.vcpus > L.maxVcpus) {
    add("vcpus", `${spec.vcpus}: expected ${L.minVcpus} to ${L.maxVcpus}`);
  }
  if (spec.memoryMib < BigInt(L.minMemoryMib) || spec.memoryMib > BigInt(L.maxMemoryMib)) {
    add("memory_mib", `${spec.memoryMib}: expected ${L.minMemoryMib} to ${L.maxMemoryMib}`);
  }
  const rules = Object.hasOwn(backends, spec.backend) ? backends[spec.backend] : undefined;
  if (rules === undefined) {
    add(
      "backend",
      `${JSON.stringify(spec.backend)}: expected ${
        Object.keys(backends).map((b) => `"${b}"`).join(" or ")
      }`,
    );
  }
  checkPaths(spec, add);
  if (
    spec.desiredState !== VmDesiredState.UNSPECIFIED &&
    spec.desiredState !== VmDesiredState.RUNNING &&
    spec.desiredState !== VmDesiredState.STOPPED
  ) {
    add("desired_state", `${spec.desiredState}: expected RUNNING or STOPPED`);
  }
  checkOptions(spec, rules, add);
  checkLabels(spec, add);
  return issues;
}

function checkLabels(spec: VmSpec, add: (field: string, message: string) => void): void {
  const L = VM_SPEC_LIMITS;
  const entries = Object.entries(spec.labels);
  if (entries.length > L.maxLabels) {
    add("labels", `${entries.length} labels: expected at most ${L.maxLabels}`);
    return;
  }
  for (const [key, value] of entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    if (!LABEL_KEY.test(key)) {
      add(
        `labels.${key.slice(0, 63)}`,
        "key: expected 1 to 63 characters of a-z, 0-9, '.', '_', '/', '-', starting with a letter or digit",
      );
    } else if (bytes(value) > L.maxLabelValueBytes) {
      add(
        `labels.${key}`,
        `value of ${bytes(value)} bytes: expected at most ${L.maxLabelValueBytes}`,
      );
    }
  }
}

function checkPaths(spec: VmSpec, add: (field: string, message: string) => void): void {
  for (const field of ["image", "kernel"] as const) {
    const value = spec[field];
    if (value === "") continue;
    const problem = absolutePath(value);
    if (problem !== undefined) add(field, `${JSON.stringify(value.slice(0, 200))}: ${problem}`);
  }
  if (spec.backend === "qemu" && spec.kernel === "") {
    // qemu's microvm machine has no firmware that boots from a virtio-mmio disk
    // (QEMU's docs/system/i386/microvm.rst): the kernel comes from the host.
    add("kernel", "the qemu backend boots a kernel from the host (microvm): expected a path");
  }
  if (spec.backend === "process") {
    if (spec.kernel !== "") add("kernel", "the process backend runs no kernel: expected empty");
    if (spec.image !== "") add("image", "the process backend runs no image: expected empty");
  }
}

function checkOptions(
  spec: VmSpec,
  rules: OptionRules | undefined,
  add: (field: string, message: string) => void,
): void {
  const L = VM_SPEC_LIMITS;
  const entries = Object.entries(spec.backendOptions);
  if (entries.length > L.maxOptions) {
    add("backend_options", `${entries.length} keys: expected at most ${L.maxOptions}`);
    return;
  }
  for (const [key, value] of entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    const field = `backend_options.${key.slice(0, L.maxOptionKeyBytes)}`;
    if (bytes(key) > L.maxOptionKeyBytes) {
      add(field, `key of ${bytes(key)} bytes: expected at most ${L.maxOptionKeyBytes}`);
      continue;
    }
    if (bytes(value) > L.maxOptionValueBytes) {
      add(field, `value of ${bytes(value)} bytes: expected at most ${L.maxOptionValueBytes}`);
      continue;
    }
    const rule = Object.hasOwn(COMMON_OPTIONS, key)
      ? COMMON_OPTIONS[key]
      : rules !== undefined && Object.hasOwn(rules, key)
      ? rules[key]
      : undefined;
    if (rule === undefined) {
      if (rules === undefined) continue; // the backend itself is unknown: said above
      const known = [...Object.keys(rules), ...Object.keys(COMMON_OPTIONS)].sort();
      add(field, `unknown to the ${spec.backend} backend: expected one of ${known.join(", ")}`);
      continue;
    }
    const problem = rule.check(value);
    if (problem !== undefined) add(field, `${JSON.stringify(value.slice(0, 200))}: ${problem}`);
  }
  for (const [key, rule] of Object.entries(rules ?? {})) {
    if (rule.required && !Object.hasOwn(spec.backendOptions, key)) {
      add(`backend_options.${key}`, `required by the ${spec.backend} backend: ${rule.describe}`);
    }
  }
}

/**
 * Throws a {@link VmSpecError} listing every problem of `spec`, if it has any.
 *
 * @throws {VmSpecError}
 */
export function validateVmSpec(spec: VmSpec, options: ValidateOptions = {}): void {
  const issues = vmSpecIssues(spec, options);
  if (issues.length > 0) throw new VmSpecError(spec.name, issues);
}

/** The VM's restart policy: its `restart` option, else {@link DEFAULT_RESTART_POLICY}. */
export function restartPolicyOf(spec: VmSpec): RestartPolicy {
  const value = spec.backendOptions["restart"];
  return RESTART_POLICIES.includes(value as RestartPolicy)
    ? value as RestartPolicy
    : DEFAULT_RESTART_POLICY;
}

/** The VM's graceful stop timeout: its `stop_timeout_ms` option, else {@link DEFAULT_STOP_TIMEOUT_MS}. */
export function stopTimeoutMsOf(spec: VmSpec): number {
  const value = spec.backendOptions["stop_timeout_ms"];
  return value !== undefined && COMMON_OPTIONS["stop_timeout_ms"]!.check(value) === undefined
    ? Number(value)
    : DEFAULT_STOP_TIMEOUT_MS;
}
