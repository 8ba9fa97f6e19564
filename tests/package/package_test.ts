/**
 * The self-extracting package (scripts/package.ts): built from what npm
 * installed, copied alone into an empty directory and run with a clean
 * environment, as on a host that has nothing else: its version, a node on
 * loopback and that node's health answer, the unpacked cache reused,
 * concurrent first runs, and a corrupted copy refused.
 *
 * May import: tests/assert.ts, tests/wait.ts, tests/cli/helpers.ts and
 * scripts/package.ts; the package itself runs only as a child process.
 */

import { assert, assertEquals } from "../assert.ts";
import { firstMatch, within } from "../wait.ts";
import { freeTcpPort } from "../cli/helpers.ts";
import {
  buildPackage,
  importedPackages,
  PackageError,
  type PackageResult,
  runtimePackages,
} from "../../scripts/package.ts";

const root = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();
/** Debian's system directories only: no node_modules, no deno. */
const BARE_PATH = "/usr/bin:/bin";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `file ARGS` in `cwd` with nothing of this process's environment but `env` and a bare PATH. */
async function runBare(file: string, args: string[], env: Record<string, string>): Promise<Run> {
  const out = await new Deno.Command(file, {
    args,
    cwd: file.slice(0, file.lastIndexOf("/")),
    clearEnv: true,
    env: { PATH: BARE_PATH, ...env },
    stdin: "null",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function entries(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

/** A fresh empty directory holding only a copy of the package, as on a host it was copied to. */
async function hostWith(pkg: PackageResult, work: string, name: string) {
  const dir = `${work}/${name}`;
  await Deno.mkdir(`${dir}/home`, { recursive: true });
  const file = `${dir}/blixard`;
  await Deno.copyFile(pkg.path, file);
  return { dir, file, home: `${dir}/home` };
}

Deno.test("the package runs alone on a bare host: version, a node and its health, one checked unpack", async (t) => {
  const work = await Deno.makeTempDir({ prefix: "blixard-package-" });
  try {
    const pkg = await buildPackage({ output: `${work}/dist/blixard`, log: () => {} });
    const versionLine = `blixard ${pkg.version} (deno ${pkg.denoVersion}, wire protocol 1)\n`;
    const treeName = `${pkg.version}-${pkg.sha256.slice(0, 16)}`;
    const host = await hostWith(pkg, work, "host");
    const cache = `${host.home}/.cache/blixard`;

    await t.step("the environment it runs in has no deno to borrow", async () => {
      const which = await runBare("/bin/sh", ["-c", "command -v deno || exit 3"], {
        HOME: host.home,
      });
      assertEquals(which.code, 3, `deno is on ${BARE_PATH}: ${which.stdout}`);
      assertEquals(await entries(host.dir), ["blixard", "home"]);
    });

    await t.step("its first run checks and unpacks it once, then prints the version", async () => {
      const r = await runBare(host.file, ["--version"], { HOME: host.home });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, versionLine);
      assertEquals(
        r.stderr,
        `blixard: first run of ${pkg.version}: payload checked, unpacked into ${cache}/${treeName}\n`,
      );
      assertEquals(await entries(cache), [treeName]);
      // Nothing was fetched: no npm package and no remote module in the runtime's cache.
      assertEquals(await entries(`${cache}/${treeName}/deno_dir/npm`), []);
      assert(!(await entries(`${cache}/${treeName}/deno_dir`)).includes("remote"));
    });

    await t.step(
      "it runs a node on loopback that answers health over gRPC; SIGTERM reaches the agent",
      async () => {
        const port = freeTcpPort();
        const config = `${host.dir}/agent.toml`;
        await Deno.writeTextFile(
          config,
          `[node]\nid = 1\ndata_dir = "${host.dir}/data"\n\n[transport]\nmode = "grpc"\n\n` +
            `[grpc]\nbind = "127.0.0.1:${port}"\n\n[metrics]\nbind = "127.0.0.1:0"\n`,
        );
        const node = new Deno.Command(host.file, {
          args: ["node", "--config", config],
          cwd: host.dir,
          clearEnv: true,
          env: { PATH: BARE_PATH, HOME: host.home },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const stderr = new Response(node.stderr).text();
        try {
          const addr = await within(
            firstMatch(node.stdout, /grpc: (127\.0\.0\.1:\d+)\n/, "the node's gRPC address"),
            30_000,
            "the packaged node to serve",
          );
          assertEquals(addr, `127.0.0.1:${port}`);
          const health = await runBare(host.file, ["health", "--addr", addr, "--json"], {
            HOME: host.home,
          });
          const answer = JSON.parse(health.stdout);
          assertEquals(answer.nodeId, "1");
          assertEquals(answer.agentVersion, pkg.version);
          // Exit 1 means NOT_SERVING (no consensus yet), and only that.
          assertEquals(
            health.code,
            answer.status === "SERVING_STATUS_SERVING" ? 0 : 1,
            health.stderr,
          );
          // The header execs the runtime: the agent is the process that was started.
          const pid = (await Deno.readTextFile(`${host.dir}/data/blixard.pid`)).trim();
          assertEquals(pid, String(node.pid));
        } finally {
          node.kill("SIGTERM");
          const status = await node.status;
          const log = await stderr;
          assertEquals(status.code, 0, log);
          assert(log.includes("stopped"), log);
        }
      },
    );

    await t.step("a second run uses the unpacked tree and reads no payload", async () => {
      const marker = `${cache}/${treeName}/marker`;
      await Deno.writeTextFile(marker, "left by the test\n");
      const r = await runBare(host.file, ["version"], { HOME: host.home });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, versionLine);
      assertEquals(r.stderr, "");
      assertEquals(await Deno.readTextFile(marker), "left by the test\n");
      assertEquals(await entries(cache), [treeName]);
    });

    await t.step(
      "concurrent first runs all start the agent and leave one unpacked tree",
      async () => {
        const shared = `${work}/shared-cache`;
        const runs = await Promise.all(
          [1, 2, 3, 4].map(() =>
            runBare(host.file, ["--version"], { HOME: host.home, BLIXARD_CACHE_DIR: shared })
          ),
        );
        for (const r of runs) {
          assertEquals(r.code, 0, r.stderr);
          assertEquals(r.stdout, versionLine);
        }
        assertEquals(runs.filter((r) => r.stderr.includes("first run")).length, 1);
        assertEquals(await entries(shared), [treeName]);
      },
    );

    await t.step("under systemd it unpacks into CacheDirectory=, whatever HOME says", async () => {
      const systemdCache = `${work}/var-cache-blixard`;
      await Deno.mkdir(systemdCache);
      const r = await runBare(host.file, ["--version"], {
        HOME: host.home,
        CACHE_DIRECTORY: systemdCache,
      });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await entries(systemdCache), [treeName]);
    });

    await t.step("a relative BLIXARD_CACHE_DIR is refused, naming it", async () => {
      const r = await runBare(host.file, ["--version"], { BLIXARD_CACHE_DIR: "cache" });
      assertEquals(r.code, 1);
      assertEquals(r.stderr, "blixard: BLIXARD_CACHE_DIR=cache: expected an absolute path\n");
    });

    await t.step(
      "a byte flipped in the payload: it refuses to run, names both digests, unpacks nothing",
      async () => {
        const bad = await hostWith(pkg, work, "corrupted");
        const bytes = await Deno.readFile(bad.file);
        const at = bytes.length - Math.floor(pkg.sizeBytes / 3);
        bytes[at] = bytes[at]! ^ 0x01;
        await Deno.writeFile(bad.file, bytes);
        const r = await runBare(bad.file, ["--version"], { HOME: bad.home });
        assertEquals(r.code, 1);
        assertEquals(r.stdout, "");
        assert(
          new RegExp(
            `^blixard: ${bad.file} is corrupted: its payload's SHA-256 is [0-9a-f]{64}, ` +
              `expected ${pkg.sha256}; refusing to run it, copy it again\n$`,
          ).test(r.stderr),
          r.stderr,
        );
        assert(!r.stderr.includes(`SHA-256 is ${pkg.sha256}`), r.stderr);
        assertEquals(await entries(bad.home), []);
      },
    );

    await t.step("a copy cut short says so and unpacks nothing", async () => {
      const cut = await hostWith(pkg, work, "cut");
      await Deno.truncate(cut.file, pkg.sizeBytes - 4096);
      const r = await runBare(cut.file, ["--version"], { HOME: cut.home });
      assertEquals(r.code, 1);
      assertEquals(
        r.stderr,
        `blixard: ${cut.file} is ${pkg.sizeBytes - 4096} bytes, expected ${pkg.sizeBytes}: ` +
          `it was cut short or appended to; copy it again\n`,
      );
      assertEquals(await entries(cut.home), []);
    });
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("the package carries the agent's run-time npm packages and no dev dependency", async () => {
  const packages = await runtimePackages(root);
  for (
    const needed of [
      "@number0/iroh",
      "@number0/iroh-linux-x64-gnu",
      "@grpc/grpc-js",
      "@bufbuild/protobuf",
      "prom-client",
      "smol-toml",
      "zod",
    ]
  ) {
    assert(packages.includes(`node_modules/${needed}`), `${needed} is not packaged`);
  }
  const dev = JSON.parse(await Deno.readTextFile(`${root}package.json`)).devDependencies;
  for (const name of Object.keys(dev)) {
    assert(!packages.includes(`node_modules/${name}`), `dev dependency ${name} is packaged`);
  }
  // Every package src/ imports is in it.
  for (const [name, file] of await importedPackages(root)) {
    assert(packages.includes(`node_modules/${name}`), `${file} imports ${name}, not packaged`);
  }
});

Deno.test("a build refuses code that imports a package package.json lists only for development", async () => {
  const fake = await Deno.makeTempDir({ prefix: "blixard-package-fake-" });
  try {
    for (const file of ["package.json", "deno.json"]) {
      await Deno.copyFile(`${root}${file}`, `${fake}/${file}`);
    }
    await Deno.symlink(`${root}node_modules`, `${fake}/node_modules`);
    await Deno.writeTextFile(`${fake}/mod.ts`, "");
    await Deno.mkdir(`${fake}/src/util`, { recursive: true });
    await Deno.writeTextFile(`${fake}/src/util/gen.ts`, 'import fc from "fast-check";\nfc;\n');
    let error: unknown;
    try {
      await buildPackage({ root: fake, log: () => {} });
    } catch (e) {
      error = e;
    }
    assert(error instanceof PackageError, String(error));
    assertEquals(error.code, "UNDECLARED_IMPORT");
    assert(error.message.includes('src/util/gen.ts imports "fast-check"'), error.message);
    assertEquals(await entries(fake), [
      "deno.json",
      "mod.ts",
      "node_modules",
      "package.json",
      "src",
    ]);
  } finally {
    await Deno.remove(fake, { recursive: true });
  }
});
