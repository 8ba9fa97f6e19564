/**
 * The setup step that `npx deno task test` and the benchmark tasks run first:
 * it installs the Debian packages the suite needs, and only those missing.
 *
 * apt-get itself is replaced by a recording script here: the suite runs
 * without a network (tests/env/loopback_test.ts), and installing packages for
 * real is what the fresh-clone check in the README's two lines does. The
 * packages are real rows whose checks look at files the fake apt-get creates.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  anyFile,
  ensureSystemPackages,
  SetupError,
  SYSTEM_PACKAGES,
  type SystemPackage,
} from "../../scripts/setup.ts";

const root = new URL("../../", import.meta.url).pathname;

/** The SetupError `run` rejects with; fails the test if it resolves or throws something else. */
async function setupFailure(run: Promise<unknown>): Promise<SetupError> {
  try {
    await run;
  } catch (e) {
    if (e instanceof SetupError) return e;
    throw e;
  }
  throw new Error("setup succeeded; expected a SetupError");
}

interface FakeApt {
  readonly dir: string;
  readonly aptGet: string;
  /** Each call's arguments, one array per call. */
  calls(): Promise<string[][]>;
  /** A table row whose check is a file in the fake's directory, made by installing it. */
  pkg(name: string, installed: boolean): Promise<SystemPackage>;
}

/**
 * An apt-get that records its arguments and "installs" a package by creating
 * `<dir>/<name>`. `update` fails with apt's lock message the first
 * `lockedUpdates` times, as when another apt-get holds the package lists.
 */
async function fakeApt(lockedUpdates = 0): Promise<FakeApt> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-setup-" });
  const aptGet = `${dir}/apt-get`;
  await Deno.writeTextFile(
    aptGet,
    `#!/bin/sh
printf '%s\\n' "$*" >> "${dir}/calls"
case " $* " in
  *" update "*)
    n=$(cat "${dir}/locked" 2>/dev/null || echo ${lockedUpdates})
    if [ "$n" -gt 0 ]; then
      echo $((n - 1)) > "${dir}/locked"
      echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)" >&2
      exit 100
    fi ;;
  *" install "*)
    for a in "$@"; do case "$a" in -*|install|DPkg::*) ;; *) touch "${dir}/$a" ;; esac; done ;;
esac
`,
    { mode: 0o755 },
  );
  return {
    dir,
    aptGet,
    calls: async () => {
      const text = await Deno.readTextFile(`${dir}/calls`).catch(() => "");
      return text.split("\n").filter((l) => l).map((l) => l.split(" "));
    },
    pkg: async (name, installed) => {
      if (installed) await Deno.writeTextFile(`${dir}/${name}`, "");
      return { name, present: anyFile([`${dir}/${name}`]), why: `${name} is needed because` };
    },
  };
}

Deno.test("setup installs only the missing packages, one line each saying why, and waits for apt's locks", async () => {
  const apt = await fakeApt();
  try {
    const packages = [
      await apt.pkg("present-pkg", true),
      await apt.pkg("missing-a", false),
      await apt.pkg("missing-b", false),
    ];
    const lines: string[] = [];
    const result = await ensureSystemPackages({
      packages,
      root: true,
      aptGet: apt.aptGet,
      lockTimeoutS: 77,
      log: (l) => lines.push(l),
    });

    assertEquals(result.installed, ["missing-a", "missing-b"]);
    assertEquals(lines.slice(0, 2), [
      "setup: installing missing-a: missing-a is needed because",
      "setup: installing missing-b: missing-b is needed because",
    ]);
    assert(
      /^setup: installed 2 Debian package\(s\) in [\d.]+ s$/.test(lines[2]!),
      String(lines[2]),
    );
    assertEquals(lines.length, 3);
    assertEquals(await apt.calls(), [
      ["-o", "DPkg::Lock::Timeout=77", "-qq", "update"],
      [
        "-o",
        "DPkg::Lock::Timeout=77",
        "-qq",
        "install",
        "-y",
        "--no-install-recommends",
        "missing-a",
        "missing-b",
      ],
    ]);
  } finally {
    await Deno.remove(apt.dir, { recursive: true });
  }
});

Deno.test("setup with every package present prints nothing and runs no apt-get", async () => {
  const apt = await fakeApt();
  try {
    const lines: string[] = [];
    const result = await ensureSystemPackages({
      packages: [await apt.pkg("one", true), await apt.pkg("two", true)],
      root: true,
      aptGet: apt.aptGet,
      log: (l) => lines.push(l),
    });
    assertEquals(result.installed, []);
    assertEquals(lines, []);
    assertEquals(await apt.calls(), []);
  } finally {
    await Deno.remove(apt.dir, { recursive: true });
  }
});

Deno.test("setup as a user who is not root names the apt-get install to run, and installs nothing", async () => {
  const apt = await fakeApt();
  try {
    const packages = [await apt.pkg("here", true), await apt.pkg("gone-1", false)];
    packages.push(await apt.pkg("gone-2", false));
    const caught = await setupFailure(
      ensureSystemPackages({ packages, root: false, aptGet: apt.aptGet, log: () => {} }),
    );
    assertEquals(caught.code, "NOT_ROOT");
    assertEquals(caught.packages, ["gone-1", "gone-2"]);
    assert(
      caught.message.includes("run as root: apt-get install -y gone-1 gone-2"),
      caught.message,
    );
    assert(caught.message.includes("gone-1: gone-1 is needed because"), caught.message);
    assert(!caught.message.includes("here"), caught.message);
    assertEquals(await apt.calls(), []);
  } finally {
    await Deno.remove(apt.dir, { recursive: true });
  }
});

Deno.test("setup waits while another apt-get holds the package lists lock, then installs", async () => {
  const apt = await fakeApt(2);
  try {
    const lines: string[] = [];
    const result = await ensureSystemPackages({
      packages: [await apt.pkg("late", false)],
      root: true,
      aptGet: apt.aptGet,
      lockRetryMs: 10,
      log: (l) => lines.push(l),
    });
    assertEquals(result.installed, ["late"]);
    assertEquals(
      lines.filter((l) => l.includes("waiting")),
      ["setup: waiting for another process to release apt's package lists lock"],
    );
    assertEquals((await apt.calls()).map((c) => c[3]), ["update", "update", "update", "install"]);
  } finally {
    await Deno.remove(apt.dir, { recursive: true });
  }
});

Deno.test("setup reports apt-get's own words when it fails, and a package its check still misses", async () => {
  const apt = await fakeApt(1);
  try {
    // A lock that is never released within the timeout is a failure with apt's message.
    let caught = await setupFailure(ensureSystemPackages({
      packages: [await apt.pkg("x", false)],
      root: true,
      aptGet: apt.aptGet,
      lockTimeoutS: 0,
      log: () => {},
    }));
    assertEquals(caught.code, "APT_FAILED");
    assert(caught.message.includes("update exited with 100"), caught.message);
    assert(caught.message.includes("Could not get lock /var/lib/apt/lists/lock"), caught.message);

    // apt-get "succeeds" but the file the check looks for never appears.
    const odd: SystemPackage = {
      name: "odd",
      present: anyFile([`${apt.dir}/never-created`]),
      why: "odd",
    };
    caught = await setupFailure(
      ensureSystemPackages({ packages: [odd], root: true, aptGet: apt.aptGet, log: () => {} }),
    );
    assertEquals(caught.code, "STILL_MISSING");
    assert(caught.message.includes(`${apt.dir}/never-created`), caught.message);
  } finally {
    await Deno.remove(apt.dir, { recursive: true });
  }
});

Deno.test("every Debian package the suite needs is present once setup has run", async () => {
  // The suite's own run went through setup first, so the real table must be satisfied here;
  // --check installs nothing and names what is missing.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/setup.ts", "--check"],
    cwd: root,
    stdin: "null",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  assertEquals(stderr, "");
  for (const p of SYSTEM_PACKAGES) {
    assert(await p.present.test(), `${p.name}: ${p.present.describe}`);
  }
});
