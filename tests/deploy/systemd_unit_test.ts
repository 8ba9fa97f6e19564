/**
 * deploy/blixard.service: systemd accepts it (`systemd-analyze verify`; PID 1
 * is not systemd on these machines, so the unit is verified, never started),
 * it names the paths the READMEs and the config defaults use, and its
 * hardening leaves what the agent and qemu need: a JIT, /dev/kvm, and the
 * socket families of gRPC, Iroh and QMP.
 *
 * May import: tests/assert.ts and the config defaults (src/config/schema.ts).
 */

import { assert, assertEquals } from "../assert.ts";
import { DEFAULTS } from "../../src/config/schema.ts";

const root = new URL("../../", import.meta.url).pathname;
const UNIT = `${root}deploy/blixard.service`;
const dec = new TextDecoder();

interface Setting {
  readonly section: string;
  readonly key: string;
  readonly value: string;
  /** The line before it, trimmed. */
  readonly before: string;
}

/** The unit's settings in file order (no line continuations are used in it). */
function parseUnit(text: string): Setting[] {
  const out: Setting[] = [];
  let section = "";
  let before = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1]!;
    else if (line !== "" && !line.startsWith("#")) {
      const at = line.indexOf("=");
      assert(at > 0, `not a setting: ${line}`);
      out.push({ section, key: line.slice(0, at), value: line.slice(at + 1), before });
    }
    before = line;
  }
  return out;
}

const settings = parseUnit(await Deno.readTextFile(UNIT));

/** The values of `key` in [Service] (a key may be given more than once). */
function service(key: string): string[] {
  return settings.filter((s) => s.section === "Service" && s.key === key).map((s) => s.value);
}

function one(key: string): string {
  const values = service(key);
  assertEquals(values.length, 1, `[Service] ${key}: ${JSON.stringify(values)}`);
  return values[0]!;
}

function seconds(value: string): number {
  const m = /^(\d+)(s|min)?$/.exec(value);
  assert(m, `not a time span this test reads: ${value}`);
  return Number(m[1]) * (m[2] === "min" ? 60 : 1);
}

const [installedFile, ...execArgs] = one("ExecStart").split(" ");

Deno.test("systemd-analyze verify accepts the unit without a warning", async () => {
  // verify checks that ExecStart's file is executable: install a stand-in at
  // that path in a private mount namespace, so nothing on the host changes.
  const binDir = installedFile!.slice(0, installedFile!.lastIndexOf("/"));
  const script = `set -e
mount -t tmpfs tmpfs "${binDir}"
printf '#!/bin/sh\\nexit 0\\n' > "${installedFile}"
chmod 755 "${installedFile}"
exec systemd-analyze verify "$1"`;
  const namespace = Deno.uid() === 0 ? ["--mount"] : ["--map-root-user", "--mount"];
  const out = await new Deno.Command("unshare", {
    args: [...namespace, "sh", "-c", script, "sh", UNIT],
    stdin: "null",
  }).output();
  const stderr = dec.decode(out.stderr);
  assertEquals(out.code, 0, `systemd-analyze verify failed (setup installs systemd):\n${stderr}`);
  assertEquals(stderr, "", "verify warned");
});

Deno.test("the unit runs the installed file with the config and data paths the READMEs and defaults use", async () => {
  const config = "/etc/blixard/agent.toml";
  assertEquals(execArgs, ["node", "--config", config]);
  assertEquals(one("ExecReload"), "/bin/kill -HUP $MAINPID");
  // /etc/<ConfigurationDirectory>, /var/lib/<StateDirectory> (the default data_dir), /var/cache/<CacheDirectory>.
  assertEquals(`/etc/${one("ConfigurationDirectory")}/agent.toml`, config);
  assertEquals(`/var/lib/${one("StateDirectory")}`, DEFAULTS.dataDir);
  assert(service("ReadWritePaths").join(" ").split(" ").includes(DEFAULTS.dataDir));
  assertEquals(one("CacheDirectory"), "blixard");
  for (const readme of ["README.md", "deploy/README.md"]) {
    const text = await Deno.readTextFile(`${root}${readme}`);
    for (const path of [installedFile!, config, "deploy/blixard.service"]) {
      assert(text.includes(path), `${readme} does not name ${path}`);
    }
  }
  const deployReadme = await Deno.readTextFile(`${root}deploy/README.md`);
  for (
    const command of [
      `install -m 0755 dist/blixard ${installedFile}`,
      "systemctl enable --now blixard",
      "systemctl reload blixard",
      `blixard config check ${config}`,
    ]
  ) {
    assert(deployReadme.includes(command), `deploy/README.md does not show: ${command}`);
  }
});

Deno.test("the unit stops, restarts and confines the agent, and still lets it run qemu", () => {
  assert(["exec", "simple"].includes(one("Type")), one("Type"));
  assertEquals(one("Restart"), "on-failure");
  assert(seconds(one("RestartSec")) >= 1, one("RestartSec"));
  // Calls in flight get shutdown_timeout_ms; the unit waits that and a margin before SIGKILL.
  assert(
    seconds(one("TimeoutStopSec")) >= DEFAULTS.shutdownTimeoutMs / 1000 + 10,
    `TimeoutStopSec=${one("TimeoutStopSec")}`,
  );
  for (
    const [key, value] of [
      ["NoNewPrivileges", "yes"],
      ["ProtectSystem", "strict"],
      ["ProtectHome", "yes"],
      ["PrivateTmp", "yes"],
      ["LockPersonality", "yes"],
      ["DeviceAllow", "/dev/kvm rw"],
      ["SupplementaryGroups", "kvm"],
      ["RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
      // V8's JIT needs writable and executable memory.
      ["MemoryDenyWriteExecute", "no"],
      // Restarting the agent must not kill its VMs.
      ["KillMode", "process"],
    ]
  ) {
    assertEquals(one(key!), value, `${key}`);
  }
  // A private /dev would hide /dev/kvm.
  assert(!service("PrivateDevices").includes("yes"));
});

Deno.test("every setting of the service says why in a comment above it", () => {
  // Settings that belong with the one before them share its comment.
  const pairs: Record<string, string> = {
    Group: "User",
    AmbientCapabilities: "CapabilityBoundingSet",
    StateDirectoryMode: "StateDirectory",
  };
  let previous = "";
  for (const s of settings.filter((s) => s.section === "Service")) {
    const paired = pairs[s.key] !== undefined && s.before.startsWith(`${pairs[s.key]}=`);
    assert(
      s.before.startsWith("# ") || paired,
      `${s.key}=${s.value} has no comment (after ${previous})`,
    );
    previous = s.key;
  }
});
