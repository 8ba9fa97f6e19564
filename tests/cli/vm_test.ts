/**
 * `blixard vm` as an operator uses it: usage and spec errors refused before
 * any node is called, then against a real 3-node cluster (three `blixard
 * node` processes on loopback, process backend): create and wait, get, list,
 * stop, start, a VM that fails, watch (live and resumed), delete, the VM
 * counts of `status`, refusals shown readably, and every `--json` document
 * checked against docs/cli.md.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { within } from "../wait.ts";
import { clusterFiles, startCluster, type TestNode } from "./cluster_helpers.ts";
import { blixard, blixardJson as json, freeTcpPort } from "./helpers.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";
import { makePki } from "../transport/grpc/helpers.ts";

const root = new URL("../../", import.meta.url).pathname;

Deno.test("vm create refuses a bad spec before calling any node, naming every field and its option", async () => {
  // Nothing listens there: a call would fail with exit status 1, not 2.
  const addr = `127.0.0.1:${freeTcpPort()}`;
  const r = await blixard(["vm", "create", "Web", "--vcpus", "0", "--memory", "8", "--addr", addr]);
  assertEquals([r.code, r.stdout], [2, ""], r.stderr);
  const lines = r.stderr.split("\n");
  assertEquals(lines[0], 'blixard: vm create: vm "Web" is not a valid spec:');
  assertMatch(lines[1]!, /^ {2}name: "Web": expected 1 to 63 characters .* \(NAME\)$/);
  assertEquals(lines[2], "  vcpus: 0: expected 1 to 256 (--vcpus)");
  assertEquals(lines[3], "  memory_mib: 8: expected 16 to 1048576 (--memory)");
  assertMatch(lines[4]!, /^ {2}kernel: the qemu backend boots a kernel .* \(--kernel\)$/);

  const relative = await blixard(["vm", "create", "a", "--addr", addr, "--", "sleep", "60"]);
  assertEquals(relative.code, 2, relative.stderr);
  assertMatch(
    relative.stderr,
    /backend_options\.command: .*program "sleep": expected an absolute path \(--command\)/,
  );

  const dir = await Deno.makeTempDir({ prefix: "blixard-vm-spec-" });
  try {
    const file = `${dir}/spec.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({ name: "web", vcpus: 1, memoryMib: "64", backend: "process" }),
    );
    const fromFile = await blixard(["vm", "create", "--spec", file, "--addr", addr]);
    assertEquals(fromFile.code, 2, fromFile.stderr);
    assertEquals(
      fromFile.stderr.split("\n").slice(0, 2),
      [
        `blixard: vm create: vm "web" in ${file} is not a valid spec:`,
        '  backend_options.command: required by the process backend: the argv to run, as a JSON array of strings, the first an absolute path: ["/usr/bin/sleep", "60"]',
      ],
    );
    await Deno.writeTextFile(file, JSON.stringify({ name: "web", cpus: 1 }));
    const unknown = await blixard(["vm", "create", "--spec", file, "--addr", addr]);
    assertEquals(unknown.code, 2, unknown.stderr);
    assertMatch(unknown.stderr, /not a VmSpec in proto3 JSON .*cpus/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vm usage errors exit 2 and say what is wrong, before any node is called", async () => {
  const addr = ["--addr", `127.0.0.1:${freeTcpPort()}`];
  const cases: [string[], RegExp][] = [
    [["vm", "frob"], /unknown vm command "frob": expected create, start, .* or watch/],
    [["vm", "start", ...addr], /vm start: NAME is required/],
    [["vm", "get", "a", "b", ...addr], /vm get: unexpected argument "b"/],
    [["vm", "stop", "a", "--", "x", ...addr], /vm stop: unexpected argument "x"/],
    [["vm", "start", "a", "--wait", "--no-wait", ...addr], /--wait and --no-wait/],
    [["vm", "list", "--state", "up", ...addr], /--state up: expected pending, starting, running/],
    [["vm", "list", "--node", "0", ...addr], /--node 0: expected a node id/],
    [["vm", "watch", "--from", "x", ...addr], /--from x: expected a revision/],
    [["vm", "create", "a", "--memory", "lots", ...addr], /--memory lots: expected MiB/],
    [
      ["vm", "create", "a", "--command", "/bin/true", ...addr, "--", "/bin/false"],
      /give the command once/,
    ],
    [
      ["vm", "create", "a", "--option", "restart=never", "--restart", "always", ...addr],
      /--option restart=\.\.\. and --restart both set restart/,
    ],
    [["vm", "create", "a", "--spec", "f.json", "--vcpus", "2", ...addr], /--vcpus cannot join/],
    [["vm", "create", "a", "--kernel", "/k"], /give exactly one of --ticket \(Iroh\) or --addr/],
  ];
  for (const [args, message] of cases) {
    const r = await blixard(args);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assertMatch(r.stderr, message, args.join(" "));
  }
});

Deno.test("vm: VMs created, followed, stopped, started and deleted through any member, as an operator does it", async (t) => {
  await using c = await clusterFiles([1, 2, 3], [], '\n[vm]\nbackends = ["process"]\n');
  await startCluster(c, [1, 2, 3]);
  const [n1, n2, n3] = [c.node(1), c.node(2), c.node(3)];
  const at = (n: TestNode) => ["--addr", n.addr];
  // The target goes before a `--`: what follows it is the VM's command.
  const vm = (n: TestNode, ...args: string[]) => {
    const end = args.includes("--") ? args.indexOf("--") : args.length;
    return blixard(["vm", ...args.slice(0, end), ...at(n), ...args.slice(end)]);
  };

  await t.step("create waits until the VM runs, with its states on stderr", async () => {
    const r = await vm(n2, "create", "sleeper", "--", "/bin/sleep", "600");
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /^vm sleeper: RUNNING on node [123] \(\d+\.\d s\)\n$/);
    assertMatch(r.stderr, /^vm sleeper created on node [123]; waiting until it runs\n/);
    assertMatch(r.stderr, /\d+\.\d s {2}RUNNING on node [123]\n/);
  });

  await t.step("create --json prints the running VM as docs/cli.md describes it", async () => {
    const created = await json("vm", [
      "vm",
      "create",
      "pinned",
      "--node",
      "3",
      "--vcpus",
      "2",
      "--memory",
      "1G",
      "--json",
      ...at(n1),
      "--",
      "/bin/sleep",
      "600",
    ]);
    const spec = created.spec as Record<string, unknown>;
    const status = created.status as Record<string, unknown>;
    assertEquals([spec.name, spec.vcpus, spec.memoryMib, spec.backend], [
      "pinned",
      2,
      "1024",
      "process",
    ]);
    assertEquals([status.state, status.nodeId], ["VM_STATE_RUNNING", "3"]);
  });

  await t.step("get shows the VM as a block, and as JSON", async () => {
    const r = await vm(n3, "get", "sleeper");
    assertEquals(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assertEquals(lines[0], "vm sleeper");
    assertMatch(r.stdout, /\n {2}state: +RUNNING on node [123]\n/);
    assertMatch(r.stdout, /\n {2}desired: +running\n/);
    assertMatch(r.stdout, /\n {2}command: +\["\/bin\/sleep","600"\]\n/);
    assertMatch(r.stdout, /\n {2}restart: +on-failure\n/);
    const got = await json("vm", ["vm", "get", "pinned", "--json", ...at(n2)]);
    assertEquals((got.spec as Record<string, unknown>).name, "pinned");
  });

  await t.step("list shows a table, filters by state and node, and prints JSON", async () => {
    const r = await vm(n1, "list");
    assertEquals(r.code, 0, r.stderr);
    const [head, ...rows] = r.stdout.trimEnd().split("\n");
    assertMatch(head!, /^ {2}NAME +STATE +NODE +VCPUS +MEMORY +BACKEND +AGE +REASON$/);
    assertEquals(rows.map((l) => l.trim().split(/\s+/).slice(0, 6)), [
      ["pinned", "RUNNING", "3", "2", "1024", "MiB"],
      ["sleeper", "RUNNING", rows[1]!.trim().split(/\s+/)[2]!, "1", "256", "MiB"],
    ]);
    const onThree = await json("vm list", ["vm", "list", "--node", "3", "--json", ...at(n2)]);
    assert((onThree.vms as { spec: { name: string } }[]).some((v) => v.spec.name === "pinned"));
    const stopped = await vm(n2, "list", "--state", "stopped");
    assertEquals([stopped.code, stopped.stdout, stopped.stderr], [0, "", "no VMs match\n"]);
  });

  await t.step("stop waits until stopped; start runs it again; stop --force kills it", async () => {
    const stop = await vm(n3, "stop", "sleeper");
    assertEquals(stop.code, 0, stop.stderr);
    assertMatch(stop.stdout, /^vm sleeper: STOPPED on node [123]/);
    assertMatch(stop.stderr, /STOPPING on node/);
    const again = await vm(n1, "stop", "sleeper");
    assertEquals(again.code, 0, again.stderr);
    assertMatch(again.stdout, /^vm sleeper: STOPPED on node [123]/);
    const start = await vm(n2, "start", "sleeper");
    assertEquals(start.code, 0, start.stderr);
    assertMatch(start.stdout, /^vm sleeper: RUNNING on node [123] \(\d+\.\d s\)\n$/);
    const kill = await vm(n2, "stop", "sleeper", "--force", "--json");
    assertEquals(kill.code, 0, kill.stderr);
    const killed = JSON.parse(kill.stdout);
    assertDocumented("vm stop --json", await jsonDoc("vm"), killed);
    assertEquals(killed.status.state, "VM_STATE_STOPPED");
    assertMatch(killed.status.exitReason, /SIGKILL/);
  });

  await t.step("a VM that fails is reported FAILED with its reason, exit status 1", async () => {
    const r = await vm(
      n1,
      "create",
      "crash",
      "--restart",
      "never",
      "--",
      "/bin/sh",
      "-c",
      "echo disk full; exit 3",
    );
    if (r.code === 0) {
      // The node reported it RUNNING before it saw the exit, and the wait ended there, as
      // docs/cli.md says; the failure is in its state a moment later.
      assertMatch(r.stderr, /RUNNING on node [123]/);
      type Got = { status: { state: string; exitReason: string } };
      const get = async () =>
        await json("vm", ["vm", "get", "crash", "--json", ...at(n1)]) as unknown as Got;
      let got = await get();
      for (let i = 0; i < 50 && got.status.state !== "VM_STATE_FAILED"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        got = await get();
      }
      assertEquals(got.status.state, "VM_STATE_FAILED");
      assertMatch(got.status.exitReason, /exit code 3/);
      return;
    }
    assertEquals(r.code, 1, r.stderr);
    assertMatch(
      r.stderr,
      /blixard: vm create: vm crash is FAILED on node [123]: .*exit code 3.*, not running/,
    );
  });

  await t.step(
    "a name in use, and a VM that does not exist, are refused with exit status 1",
    async () => {
      const dup = await vm(n2, "create", "sleeper", "--", "/bin/sleep", "1");
      assertEquals(dup.code, 1, dup.stderr);
      assertMatch(
        dup.stderr,
        /^blixard: vm create: the cluster did not create vm "sleeper": ALREADY_EXISTS/,
      );
      for (const sub of ["get", "start", "stop", "delete"]) {
        const r = await vm(n3, sub, "nosuch");
        assertEquals(r.code, 1, `${sub}: ${r.stderr}`);
        assertMatch(r.stderr, /NOT_FOUND/, sub);
      }
    },
  );

  await t.step(
    "watch follows the changes live, resumes from a revision, and ends on Ctrl-C",
    async () => {
      const existing = await blixard([
        "vm",
        "watch",
        "--existing",
        "--json",
        "--timeout",
        "1500",
        ...at(n1),
      ]);
      assertEquals(existing.code, 0, existing.stderr);
      const doc = await jsonDoc("vm watch");
      const events = existing.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
      for (const e of events) assertDocumented("vm watch --existing --json", doc, e);
      assertEquals(
        events.map((e) => [e.kind, e.vm.spec.name]),
        [["VM_EVENT_KIND_EXISTING", "crash"], ["VM_EVENT_KIND_EXISTING", "pinned"], [
          "VM_EVENT_KIND_EXISTING",
          "sleeper",
        ]],
      );
      const revision = events.map((e) => BigInt(e.index)).reduce((a, b) => a > b ? a : b);

      // From that revision on, nothing is missed however late the watch starts.
      const watch = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${root}src/cli/main.ts`,
          "vm",
          "watch",
          "--from",
          `${revision}`,
          ...at(n3),
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).spawn();
      const created = await vm(n2, "create", "late", "--", "/bin/sleep", "600");
      assertEquals(created.code, 0, created.stderr);
      const out = watch.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      await within(
        (async () => {
          while (!/ late {2}status {2}RUNNING on node/.test(text)) {
            const { value, done } = await out.read();
            if (done) throw new Error(`watch ended: ${text}`);
            text += value;
          }
        })(),
        20_000,
        "the watch shows late running",
      );
      watch.kill("SIGINT");
      const [status] = await Promise.all([
        watch.status,
        out.cancel(),
        watch.stderr.cancel(),
      ]);
      assertEquals(status.code, 0);
      const lines = text.trimEnd().split("\n");
      assertMatch(
        lines[0]!,
        /^\d{4}-\d\d-\d\dT[\d:.]+Z {2}#\d+ {2}late {2}created {2}PENDING on node [123]$/,
      );
      for (const l of lines) {
        const index = BigInt(/#(\d+)/.exec(l)![1]!);
        assert(index > revision, `${l} after revision ${revision}`);
      }
    },
  );

  await t.step(
    "status shows each member's VMs by state, and --json has the resource summary",
    async () => {
      const r = await blixard(["status", ...at(n1)]);
      assertEquals(r.code, 0, r.stderr);
      const table = r.stdout.split("\n");
      assertMatch(table[1]!, /^ {2}NODE +ROLE +ENDPOINT +IROH ADDRESSES +GRPC +VMS +SERVICES$/);
      const three = table.find((l) => /^ {2}3 /.test(l))!;
      assertMatch(three, /\d running/);
      const s = await json("status", ["status", "--json", ...at(n2)]);
      const nodes = (s.resources as { nodes: { nodeId: string }[] }).nodes;
      assertEquals(nodes.map((n) => n.nodeId), ["1", "2", "3"]);
    },
  );

  await t.step("delete removes the VM; get then says NOT_FOUND", async () => {
    const r = await json("vm delete", ["vm", "delete", "crash", "--json", ...at(n3)]);
    assertEquals(r, { name: "crash" });
    const gone = await vm(n1, "get", "crash");
    assertEquals(gone.code, 1, gone.stderr);
    assertMatch(gone.stderr, /NOT_FOUND/);
  });

  await t.step(
    "an operator key the node does not list is refused readably, and nothing is created",
    async () => {
      const stranger = `${c.dir}/stranger_key`;
      const r = await blixard([
        "vm",
        "create",
        "intruder",
        "--ticket",
        n1.ticket,
        "--key",
        stranger,
        "--",
        "/bin/sleep",
        "60",
      ]);
      assertEquals(r.code, 1, r.stderr);
      assertMatch(r.stderr, /PERMISSION_DENIED/);
      assertMatch(
        r.stderr,
        /add this operator's endpoint id to the node's \[cluster\] operator_keys: [0-9a-f]{64}/,
      );
      const none = await vm(n2, "get", "intruder");
      assertEquals(none.code, 1, none.stderr);
      assertMatch(none.stderr, /NOT_FOUND/);
    },
  );
});

Deno.test("over gRPC, a change from a client the node cannot authenticate is refused readably; reads still answer", async () => {
  const pki = await makePki();
  try {
    // TLS without a CA: the node proves who it is, but cannot tell who calls.
    await using c = await clusterFiles(
      [1],
      [],
      `\n[grpc.tls]\ncert_file = "${pki.serverCertFile}"\nkey_file = "${pki.serverKeyFile}"\n` +
        '\n[vm]\nbackends = ["process"]\n',
    );
    await c.start(1);
    const at = ["--addr", c.node(1).addr, "--tls-ca", pki.caFile];
    const r = await blixard(["vm", "create", "web", ...at, "--", "/bin/sleep", "60"]);
    assertEquals([r.code, r.stdout], [1, ""], r.stderr);
    // One line: what was refused, and the node's word on what would allow it.
    assertEquals(r.stderr.split("\n").length, 2, r.stderr);
    assertMatch(
      r.stderr,
      /^blixard: vm create: the cluster did not create vm "web": PERMISSION_DENIED: .*needs an authenticated caller.*: use mutual TLS, or Iroh with an operator key\n$/,
    );
    const list = await blixard(["vm", "list", ...at]);
    assertEquals([list.code, list.stdout, list.stderr], [0, "", "no VMs\n"]);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
