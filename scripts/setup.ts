/**
 * The Debian packages the tests and benchmarks need, in one table, and the
 * setup step that installs the missing ones before anything runs.
 *
 *   deno run -A scripts/setup.ts           install what is missing (as root)
 *   deno run -A scripts/setup.ts --check   install nothing; exit 1 naming what is missing
 *   deno run -A scripts/setup.ts --demo    only what `blixard demo`'s qemu guest needs; not as
 *                                          root, it says what to install and exits 0 (the demo
 *                                          then runs its process backend and says so)
 *
 * With every package present it prints nothing. As root it installs the
 * missing ones with apt-get, after one line per package saying what and why,
 * waiting for the package lock if another apt-get or dpkg holds it. Not as
 * root, it installs nothing and exits 1 with the `apt-get install` to run.
 * `npx deno task test` and the benchmark tasks run it before they enter the
 * loopback-only network namespace (scripts/loopback.sh), which has no network
 * to install from. Exit codes: 0 ok, 1 something is missing or apt-get
 * failed, 2 usage error.
 *
 * Adding a package the suite needs is one row of {@link SYSTEM_PACKAGES}.
 *
 * Owns: that table and the install step. Imports nothing of the agent.
 *
 * @module
 */

/** How to see that a package is there, the way the code that needs it looks for it. */
export interface PresenceCheck {
  /** What the check does, for messages and the table's reader ("`protoc` on PATH"). */
  readonly describe: string;
  readonly test: () => Promise<boolean>;
}

/** A Debian package the suite needs. */
export interface SystemPackage {
  /** The Debian package name, as `apt-get install` takes it. */
  readonly name: string;
  readonly present: PresenceCheck;
  /** Why the suite needs it: printed when it is installed. */
  readonly why: string;
  /** `blixard demo` boots its qemu guest with it (`--demo` installs only these). */
  readonly demo?: boolean;
}

/** Present when `command` with `args` runs and exits 0, with a clean environment. */
export function runs(command: string, ...args: string[]): PresenceCheck {
  return {
    describe: `\`${[command, ...args].join(" ")}\` exits 0`,
    test: async () => {
      try {
        const out = await new Deno.Command(command, {
          args,
          stdin: "null",
          stdout: "null",
          stderr: "null",
          // Like the tests that run it: Debian's system paths, nobody's PYTHONPATH.
          clearEnv: true,
          env: { PATH: "/usr/bin:/bin", PYTHONNOUSERSITE: "1" },
        }).output();
        return out.success;
      } catch {
        return false;
      }
    },
  };
}

/** Present when `name` is an executable file in a directory of `$PATH`. */
export function onPath(name: string): PresenceCheck {
  return {
    describe: `\`${name}\` on PATH`,
    test: () => {
      const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
      return Promise.resolve(dirs.some((dir) => isExecutable(`${dir}/${name}`)));
    },
  };
}

/** Present when any of `paths` exists (an executable if `executable` is set). */
export function anyFile(paths: readonly string[], executable = false): PresenceCheck {
  return {
    describe: paths.join(" or ") + (executable ? " (executable)" : ""),
    test: () => Promise.resolve(paths.some((p) => executable ? isExecutable(p) : exists(p))),
  };
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Where `ip` is on Debian (merged /usr or not); not every user has /usr/sbin on PATH. */
export const IP_PATHS: readonly string[] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

/**
 * Every Debian package the tests and benchmarks need: one row each, with how
 * its presence is checked and why it is needed.
 */
export const SYSTEM_PACKAGES: readonly SystemPackage[] = [
  {
    name: "python3-grpcio",
    present: runs("/usr/bin/python3", "-c", "import grpc"),
    why:
      "Python's grpcio: the independent gRPC client in tests/transport/grpc/python_interop_test.ts",
  },
  {
    name: "protobuf-compiler",
    present: anyFile(["/usr/bin/protoc"], true),
    why: "protoc: compiles proto/ into that Python client's messages",
  },
  {
    name: "libprotobuf-dev",
    present: anyFile(["/usr/include/google/protobuf/timestamp.proto"]),
    why: "google/protobuf/*.proto, which proto/ imports, for that protoc",
  },
  {
    name: "openssl",
    present: onPath("openssl"),
    why: "openssl: makes the certificates of the gRPC TLS and mutual TLS tests",
  },
  {
    name: "curl",
    present: onPath("curl"),
    why:
      "curl: the runbooks' health checks, run against a test cluster by tests/runbooks/ (runbooks/operations.md)",
  },
  {
    name: "iproute2",
    present: anyFile(IP_PATHS, true),
    why: "ip: brings up lo in the loopback-only network namespace the tests and benchmarks run in",
  },
  {
    name: "systemd",
    present: anyFile(["/usr/bin/systemd-analyze", "/bin/systemd-analyze"], true),
    why:
      "systemd-analyze: verifies deploy/blixard.service in tests/deploy/ (verify only, nothing is started)",
  },
  {
    name: "strace",
    present: onPath("strace"),
    why: "strace: counts the fsyncs of the Raft log's saves in tests/storage/fsync_test.ts",
  },
  {
    name: "qemu-system-x86",
    demo: true,
    present: onPath("qemu-system-x86_64"),
    why: "qemu: the hypervisor of the qemu VM backend's tests (tests/vm/), microVMs under TCG",
  },
  {
    name: "busybox-static",
    demo: true,
    // The guest runs busybox alone, without a libc: the dynamic `busybox` package will not do.
    present: runs("/bin/sh", "-c", "test -x /bin/busybox && ! ldd /bin/busybox"),
    why: "a static busybox: the initramfs of the test guest the VM tests boot (src/vm/guest.ts)",
  },
  {
    name: "linux-image-cloud-amd64",
    demo: true,
    present: runs("/bin/sh", "-c", "ls /boot/vmlinuz-*-cloud-amd64"),
    why: "a kernel, and its power button modules, for the test guest the VM tests boot",
  },
  {
    name: "prometheus",
    present: onPath("promtool"),
    why:
      "prometheus and promtool: check monitoring/'s config and rules, run their unit tests, and scrape a test cluster (tests/monitoring/)",
  },
  {
    name: "etcd-server",
    present: anyFile(["/usr/bin/etcd"], true),
    why:
      "etcd: the 3-member etcd cluster bench/raft/ measures beside Blixard's (benchmarks only, no test uses it)",
  },
  {
    name: "etcd-client",
    present: anyFile(["/usr/bin/etcdctl"], true),
    why:
      "etcdctl: reads that etcd cluster's revision, to check the writes bench/raft/ counted were committed (benchmarks only)",
  },
];

/** Why setup could not leave every package present. */
export type SetupErrorCode =
  /** Something is missing and this process may not install it. */
  | "NOT_ROOT"
  /** `--check`: something is missing. */
  | "MISSING"
  /** apt-get is not there (not Debian) or failed. */
  | "APT_FAILED"
  /** apt-get succeeded but a package's check still fails. */
  | "STILL_MISSING";

/** A setup failure; the message says what to do. */
export class SetupError extends Error {
  /** Stable code to match on. */
  readonly code: SetupErrorCode;
  /** The packages this is about. */
  readonly packages: readonly string[];

  constructor(code: SetupErrorCode, packages: readonly string[], message: string) {
    super(message);
    this.name = "SetupError";
    this.code = code;
    this.packages = packages;
  }
}

/** Options of {@link ensureSystemPackages}; the defaults are the real machine. */
export interface SetupOptions {
  /** The table to satisfy (default {@link SYSTEM_PACKAGES}). */
  readonly packages?: readonly SystemPackage[];
  /** Install what is missing (default true); false only reports it. */
  readonly install?: boolean;
  /** May this process install packages (default: it runs as root)? */
  readonly root?: boolean;
  /** The apt-get to run (default `apt-get` on PATH). */
  readonly aptGet?: string;
  /** How long apt-get waits for a lock another process holds (default 300 s). */
  readonly lockTimeoutS?: number;
  /** Pause between tries while another process holds the package lists lock (default 2000 ms). */
  readonly lockRetryMs?: number;
  /** Where progress lines go (default stderr). */
  readonly log?: (line: string) => void;
}

/** What {@link ensureSystemPackages} did. */
export interface SetupResult {
  /** Packages installed by this run, in table order. */
  readonly installed: readonly string[];
}

/** The command a person with root rights runs to install `names`. */
export function installCommand(names: readonly string[]): string {
  return `apt-get install -y ${names.join(" ")}`;
}

/**
 * Checks every package of the table and, as root, installs the missing ones
 * with apt-get: one log line per package first (what and why), then
 * `apt-get update` and `apt-get install`, both told to wait for locks held by
 * another process. Present packages are never reinstalled.
 *
 * @throws {SetupError} when something is missing and cannot be installed here.
 */
export async function ensureSystemPackages(options: SetupOptions = {}): Promise<SetupResult> {
  const packages = options.packages ?? SYSTEM_PACKAGES;
  const log = options.log ?? ((line: string) => console.error(line));
  const missing = await missingPackages(packages);
  if (missing.length === 0) return { installed: [] };
  const names = missing.map((p) => p.name);
  const list = missing.map((p) => `  ${p.name}: ${p.why} (checked: ${p.present.describe})`);
  if (options.install === false) {
    throw new SetupError(
      "MISSING",
      names,
      [`setup: missing Debian packages:`, ...list, `install them with: ${installCommand(names)}`]
        .join("\n"),
    );
  }
  if (!(options.root ?? Deno.uid() === 0)) {
    throw new SetupError(
      "NOT_ROOT",
      names,
      [
        `setup: missing Debian packages, and only root can install them:`,
        ...list,
        `run as root: ${installCommand(names)}`,
      ].join("\n"),
    );
  }
  for (const p of missing) log(`setup: installing ${p.name}: ${p.why}`);
  const startedMs = Date.now();
  const apt = new Apt(options, log);
  await apt.update();
  await apt.install(names);
  const still = await missingPackages(missing);
  if (still.length > 0) {
    throw new SetupError(
      "STILL_MISSING",
      still.map((p) => p.name),
      still.map((p) =>
        `setup: apt-get installed ${p.name}, but its check still fails: ${p.present.describe}`
      ).join("\n"),
    );
  }
  log(`setup: installed ${names.length} Debian package(s) in ${(Date.now() - startedMs) / 1000} s`);
  return { installed: names };
}

async function missingPackages(packages: readonly SystemPackage[]): Promise<SystemPackage[]> {
  const present = await Promise.all(packages.map((p) => p.present.test()));
  return packages.filter((_, i) => !present[i]);
}

/** apt-get, non-interactive and waiting for locks instead of failing on them. */
class Apt {
  readonly #aptGet: string;
  readonly #lockTimeoutS: number;
  readonly #lockRetryMs: number;
  readonly #log: (line: string) => void;

  constructor(options: SetupOptions, log: (line: string) => void) {
    this.#aptGet = options.aptGet ?? "apt-get";
    this.#lockTimeoutS = options.lockTimeoutS ?? 300;
    this.#lockRetryMs = options.lockRetryMs ?? 2000;
    this.#log = log;
  }

  /**
   * `apt-get update`. DPkg::Lock::Timeout makes apt wait for the dpkg lock,
   * but apt 2.6's update still fails at once on the package lists lock, so a
   * failure that names a lock is retried until the same timeout.
   */
  async update(): Promise<void> {
    const deadline = Date.now() + this.#lockTimeoutS * 1000;
    let waiting = false;
    for (;;) {
      const out = await this.#run(["update"]);
      if (out.ok) return;
      if (!/Could not get lock|Unable to lock/.test(out.text) || Date.now() > deadline) {
        throw this.#failed("update", out);
      }
      if (!waiting) {
        this.#log(`setup: waiting for another process to release apt's package lists lock`);
        waiting = true;
      }
      await new Promise((resolve) => setTimeout(resolve, this.#lockRetryMs));
    }
  }

  /** `apt-get install` of exactly `names`, without their recommendations. */
  async install(names: readonly string[]): Promise<void> {
    const out = await this.#run(["install", "-y", "--no-install-recommends", ...names]);
    if (!out.ok) throw this.#failed(`install ${names.join(" ")}`, out);
  }

  async #run(args: string[]): Promise<{ ok: boolean; code: number; text: string }> {
    const full = ["-o", `DPkg::Lock::Timeout=${this.#lockTimeoutS}`, "-qq", ...args];
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(this.#aptGet, {
        args: full,
        stdin: "null",
        env: { DEBIAN_FRONTEND: "noninteractive" },
      }).output();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new SetupError(
          "APT_FAILED",
          [],
          `setup: ${this.#aptGet} not found: this suite needs Debian's apt to install ` +
            `${SYSTEM_PACKAGES.map((p) => p.name).join(", ")} (or their equivalents, by hand)`,
        );
      }
      throw e;
    }
    const dec = new TextDecoder();
    return {
      ok: out.success,
      code: out.code,
      text: dec.decode(out.stdout) + dec.decode(out.stderr),
    };
  }

  #failed(what: string, out: { code: number; text: string }): SetupError {
    return new SetupError(
      "APT_FAILED",
      [],
      `setup: ${this.#aptGet} ${what} exited with ${out.code}:\n${out.text.trimEnd()}`,
    );
  }
}

if (import.meta.main) {
  const args = Deno.args;
  if (args.some((a) => a !== "--check" && a !== "--demo")) {
    console.error("usage: deno run -A scripts/setup.ts [--check] [--demo]");
    Deno.exit(2);
  }
  const demo = args.includes("--demo");
  try {
    await ensureSystemPackages({
      install: !args.includes("--check"),
      packages: demo ? SYSTEM_PACKAGES.filter((p) => p.demo) : SYSTEM_PACKAGES,
    });
  } catch (e) {
    if (!(e instanceof SetupError)) throw e;
    console.error(e.message);
    // The demo runs without them, on its process backend, and says so.
    if (demo && e.code === "NOT_ROOT") Deno.exit(0);
    Deno.exit(1);
  }
}
