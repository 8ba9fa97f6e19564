/**
 * What the README's Quick start promises about installing: the Node.js it
 * names is one every locked package accepts (so `npm install` does not warn
 * about engines), npm is told which install scripts to run, and the commands
 * it gives are the ones CI and the tasks really run.
 */

import { assert, assertEquals } from "../assert.ts";

const root = new URL("../../", import.meta.url).pathname;
const readme = await Deno.readTextFile(`${root}README.md`);

type Version = [number, number, number];

function parseVersion(text: string): Version | undefined {
  const m = /^v?(\d+)(?:\.(\d+|[x*]))?(?:\.(\d+|[x*]))?$/.exec(text.trim());
  if (!m) return undefined;
  const part = (
    s: string | undefined,
  ) => (s === undefined || s === "x" || s === "*" ? 0 : Number(s));
  return [Number(m[1]), part(m[2]), part(m[3])];
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/**
 * Whether `version` satisfies an npm `engines` range, for the forms packages
 * use (`>=X`, `>= X`, `>X`, `<X`, `<=X`, `^X`, `~X`, `X.*`, `X`, joined by
 * spaces and `||`). Throws on any other form, so a new one is not passed over.
 */
function satisfies(version: Version, range: string): boolean {
  return range.split("||").some((alternative) => {
    const comparators = alternative.trim().replace(/([<>=^~]+)\s+/g, "$1").split(/\s+/);
    return comparators.every((c) => {
      const m = /^(>=|<=|>|<|=|\^|~)?(.+)$/.exec(c);
      const bound = m && parseVersion(m[2]!);
      if (!m || !bound) throw new Error(`engines range "${range}": cannot read "${c}"`);
      const cmp = compare(version, bound);
      const wildcard = /[x*]|^\d+$|^\d+\.\d+$/.test(m[2]!);
      switch (m[1]) {
        case ">=":
          return cmp >= 0;
        case ">":
          return cmp > 0;
        case "<=":
          return cmp <= 0;
        case "<":
          return cmp < 0;
        case "^":
          return cmp >= 0 && version[0] === bound[0];
        case "~":
          return cmp >= 0 && version[0] === bound[0] && version[1] === bound[1];
        default:
          // "8.*", "16", "16.2": that major (and minor); a full version: exactly it.
          if (!wildcard) return cmp === 0;
          return version[0] === bound[0] &&
            (!/^\d+\.\d+$/.test(m[2]!) || version[1] === bound[1]);
      }
    });
  });
}

interface LockEntry {
  readonly engines?: { readonly node?: string };
  readonly hasInstallScript?: boolean;
  readonly optional?: boolean;
}

const lock = JSON.parse(await Deno.readTextFile(`${root}package-lock.json`)) as {
  packages: Record<string, LockEntry>;
};
const pkg = JSON.parse(await Deno.readTextFile(`${root}package.json`)) as {
  allowScripts?: Record<string, boolean>;
};

/** The package name of a lock key such as `node_modules/@scope/name`. */
const nameOf = (key: string) =>
  key.slice(key.lastIndexOf("node_modules/") + "node_modules/".length);

Deno.test("every locked package accepts the oldest Node.js the README names, so npm install does not warn", () => {
  const named = /Node\.js\s+\((\d+(?:\.\d+)?)\s+or\s+later\)/.exec(readme)?.[1];
  assert(named !== undefined, 'README: no "Node.js (N or later)" in the Quick start');
  const oldest = parseVersion(named)!;
  const refused = Object.entries(lock.packages)
    .filter(([key, e]) => key !== "" && e.engines?.node !== undefined)
    .filter(([, e]) => !satisfies(oldest, e.engines!.node!))
    .map(([key, e]) => `${nameOf(key)} wants node ${e.engines!.node}`);
  assertEquals(refused, [], `the README promises Node.js ${named}`);
});

Deno.test("the engines reader understands the ranges packages write", () => {
  const v = (s: string) => parseVersion(s)!;
  assert(satisfies(v("20.3"), ">= 20.3.0") && !satisfies(v("20.2.9"), ">= 20.3.0"));
  assert(!satisfies(v("20.19.0"), ">=22") && satisfies(v("22.0.0"), ">=22"));
  assert(
    satisfies(v("20.0.0"), "^16 || ^18 || >=20") && !satisfies(v("19.0.0"), "^16 || ^18 || >=20"),
  );
  assert(
    satisfies(v("20.3.0"), "6.* || 8.* || >= 10.*") &&
      !satisfies(v("9.1.0"), "6.* || 8.* || >= 10.*"),
  );
  assert(satisfies(v("14.17.0"), ">=14.17") && !satisfies(v("14.16.9"), ">=14.17"));
});

Deno.test("every locked package with an install script is approved or denied in package.json, so npm install does not warn", () => {
  const allowed = pkg.allowScripts ?? {};
  const unlisted = Object.entries(lock.packages)
    .filter(([key, e]) => key !== "" && e.hasInstallScript === true)
    .map(([key]) => nameOf(key))
    .filter((name) => !(name in allowed));
  assertEquals(unlisted, []);
  // The tasks run node_modules/deno/deno, which deno's install script puts there.
  assertEquals(allowed["deno"], true);
});

Deno.test("CI runs the README's test line, and every task that runs tests or benchmarks sets up, then leaves the network", async () => {
  const quickStart = /## Quick start\n[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? "";
  const lines = quickStart.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
  assertEquals(lines, [
    "npm install && npx deno task test",
    "npm install && npx deno task demo",
  ]);
  const ci = await Deno.readTextFile(`${root}.ci/run`);
  assert(ci.includes(lines[0]!), ".ci/run does not run the README's test line");

  const tasks = JSON.parse(await Deno.readTextFile(`${root}deno.json`)).tasks as Record<
    string,
    string
  >;
  const prefix =
    "./node_modules/deno/deno run -A scripts/setup.ts && bash scripts/loopback.sh ./node_modules/deno/deno ";
  // Anything that runs the suite or code under bench/ (type-checking it is not running it).
  const runners = Object.entries(tasks).filter(([, cmd]) =>
    /deno (test|bench) /.test(cmd) || /deno run -A bench\//.test(cmd)
  );
  assert(runners.length >= 5, JSON.stringify(runners));
  for (const [name, cmd] of runners) {
    assert(cmd.startsWith(prefix), `task ${name} runs outside the loopback namespace: ${cmd}`);
  }
});
