/**
 * The fleet file of `blixard migrate --fleet` and which of its nodes a
 * percentage takes: every problem named with its node and key, the nodes in
 * the file's order, ceil(P% of N) of them.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { FleetError, parseFleet, selectedCount } from "../../src/cli/migrate_fleet.ts";

Deno.test("a fleet file lists its nodes in order; local relative paths are from the file's directory", () => {
  const nodes = parseFleet(
    `# two hosts
[[node]]
name = "a"
config = "a/agent.toml"
metrics = "127.0.0.1:9464"

[[node]]
config = "/etc/blixard/agent.toml"
command = ["ssh", "root@10.0.0.2", "blixard"]

[[node]]
config = "relative/on/the/host.toml"
command = ["ssh", "root@10.0.0.3", "blixard"]
`,
    "/srv/fleet/fleet.toml",
  );
  assertEquals(nodes, [
    { name: "a", config: "/srv/fleet/a/agent.toml", metrics: "127.0.0.1:9464" },
    {
      name: "/etc/blixard/agent.toml",
      config: "/etc/blixard/agent.toml",
      command: ["ssh", "root@10.0.0.2", "blixard"],
    },
    {
      name: "relative/on/the/host.toml",
      config: "relative/on/the/host.toml",
      command: ["ssh", "root@10.0.0.3", "blixard"],
    },
  ]);
});

Deno.test("every problem of a fleet file is named at once, with its node and key", () => {
  const e = thrown(
    FleetError,
    () =>
      parseFleet(
        `nodes = 1
[[node]]
config = "a.toml"
metric = "x"
[[node]]
name = ""
config = "b.toml"
metrics = "no port"
command = []
[[node]]
name = "a.toml"
config = "c.toml"
[[node]]
name = "d"
`,
        "fleet.toml",
      ),
  );
  assertEquals(e.code, "invalid_fleet");
  assertEquals(e.message.split("\n"), [
    "fleet.toml: nodes: unknown key; a fleet file has [[node]] tables",
    "fleet.toml: node[1].metric: unknown key; expected name, config, metrics, command",
    'fleet.toml: node[2].name = "": expected a non-empty string',
    'fleet.toml: node[2].metrics = "no port": expected "host:port"',
    `fleet.toml: node[2].command = []: expected a command line that runs blixard on the node's host, e.g. ["ssh", "root@10.0.0.1", "blixard"]`,
    'fleet.toml: node[3]: "a.toml" is listed twice',
    "fleet.toml: node[4].config: missing; give the path of the node's config file",
  ]);
  assert(/no \[\[node\]\] tables/.test(thrown(FleetError, () => parseFleet("", "f.toml")).message));
  assert(/f\.toml: /.test(thrown(FleetError, () => parseFleet("[[node]\n", "f.toml")).message));
});

Deno.test("P percent of N nodes is ceil(P% of N), at least one, and a whole product is not rounded up", () => {
  const cases: [number, number, number][] = [
    [20, 5, 1],
    [4, 25, 1],
    [3, 25, 1],
    [3, 33, 1],
    [3, 34, 2],
    [3, 50, 2],
    [3, 100, 3],
    [10, 0.1, 1],
    [100, 5, 5],
    [7, 100 / 7, 1],
  ];
  for (const [total, percent, want] of cases) {
    assertEquals(selectedCount(total, percent), want, `${percent}% of ${total}`);
  }
});
