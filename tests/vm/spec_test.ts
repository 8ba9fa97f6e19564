/**
 * VM spec validation: every field of VmSpec is checked, and each problem
 * names the field, the value and what is allowed.
 */

import { assertEquals, assertMatch, thrown } from "../assert.ts";
import {
  restartPolicyOf,
  stopTimeoutMsOf,
  validateVmSpec,
  VmSpecError,
  vmSpecIssues,
} from "../../src/vm/spec.ts";
import { spec } from "./helpers.ts";

const fields = (s: Parameters<typeof vmSpecIssues>[0]) => vmSpecIssues(s).map((i) => i.field);

Deno.test("a good spec of each backend has no issues", () => {
  assertEquals(vmSpecIssues(spec("web-1")), []);
  assertEquals(
    vmSpecIssues(
      spec("db", {
        backend: "qemu",
        kernel: "/boot/vmlinuz",
        options: {
          initrd: "/boot/i",
          cmdline: "console=ttyS0",
          accel: "tcg",
          restart: "always",
          stop_timeout_ms: "5000",
        },
      }),
    ),
    [],
  );
});

Deno.test("a name must be a DNS label of at most 63 characters", () => {
  for (const bad of ["", "Web", "-web", "web-", "web_1", "a".repeat(64), "../etc", "web 1"]) {
    const issues = vmSpecIssues(spec(bad));
    assertEquals(issues.map((i) => i.field), ["name"], bad);
    assertMatch(issues[0]!.message, /expected 1 to 63 characters of a-z, 0-9 and '-'/);
  }
  assertEquals(vmSpecIssues(spec("a".repeat(63))), []);
});

Deno.test("vcpus and memory have bounds, and the message says them", () => {
  const issues = vmSpecIssues(spec("web", { vcpus: 0, memoryMib: 8n }));
  assertEquals(issues, [
    { field: "vcpus", message: "0: expected 1 to 256" },
    { field: "memory_mib", message: "8: expected 16 to 1048576" },
  ]);
  assertEquals(fields(spec("web", { vcpus: 257, memoryMib: 1048577n })), ["vcpus", "memory_mib"]);
});

Deno.test("an unknown backend is named with the ones there are", () => {
  const issues = vmSpecIssues(spec("web", { backend: "firecracker" }));
  assertEquals(issues, [{
    field: "backend",
    message: '"firecracker": expected "qemu" or "process"',
  }]);
});

Deno.test("an extension backend brings its own option keys", () => {
  const s = spec("web", { backend: "firecracker", options: { socket: "/run/fc.sock" } });
  const backends = { firecracker: { socket: { describe: "api socket", check: () => undefined } } };
  assertEquals(vmSpecIssues(s, { backends }), []);
});

Deno.test("kernel, image and initrd must be absolute paths", () => {
  const s = spec("web", { backend: "qemu", kernel: "vmlinuz", options: { initrd: "boot/initrd" } });
  s.image = "disk.img";
  const issues = vmSpecIssues(s);
  assertEquals(issues.map((i) => i.field), ["image", "kernel", "backend_options.initrd"]);
  assertMatch(issues[0]!.message, /"disk.img": expected an absolute path/);
});

Deno.test("qemu needs a kernel; the process backend takes neither kernel nor image", () => {
  assertEquals(vmSpecIssues(spec("web", { backend: "qemu" })), [{
    field: "kernel",
    message: "the qemu backend boots a kernel from the host (microvm): expected a path",
  }]);
  const p = spec("web", { kernel: "/boot/vmlinuz" });
  p.image = "/var/disk.img";
  assertEquals(fields(p), ["kernel", "image"]);
});

Deno.test("option keys are known per backend, and values are checked", () => {
  const q = spec("web", {
    backend: "qemu",
    kernel: "/k",
    options: { command: "[]", accel: "hvf", restart: "sometimes", stop_timeout_ms: "-1" },
  });
  const issues = vmSpecIssues(q);
  assertEquals(issues.map((i) => i.field), [
    "backend_options.accel",
    "backend_options.command",
    "backend_options.restart",
    "backend_options.stop_timeout_ms",
  ]);
  assertMatch(issues[0]!.message, /"hvf": expected "auto", "kvm", "tcg"/);
  assertMatch(
    issues[1]!.message,
    /unknown to the qemu backend: expected one of accel, cmdline, image_format, initrd, restart, stop_timeout_ms/,
  );
  assertMatch(issues[3]!.message, /expected an integer from 0 to 600000/);
});

Deno.test("the process backend needs a command: a JSON array whose first element is an absolute path", () => {
  const none = spec("web");
  delete none.backendOptions["command"];
  assertEquals(vmSpecIssues(none).map((i) => i.field), ["backend_options.command"]);
  for (
    const [command, message] of [
      ["sleep 1", /expected a JSON array of strings/],
      ["[]", /expected a non-empty JSON array of strings/],
      ['["sleep", "1"]', /program "sleep": expected an absolute path/],
      ['["/bin/true", 1]', /expected a non-empty JSON array of strings/],
      [
        JSON.stringify(["/bin/true", ...Array(256).fill("x")]),
        /expected at most 256 arguments, got 257/,
      ],
    ] as const
  ) {
    const issues = vmSpecIssues(spec("web", { options: { command } }));
    assertEquals(issues.length, 1, command);
    assertMatch(issues[0]!.message, message);
  }
});

Deno.test("option counts and sizes are bounded", () => {
  const many: Record<string, string> = {};
  for (let i = 0; i < 33; i++) many[`k${i}`] = "v";
  assertMatch(
    vmSpecIssues(spec("web", { options: many }))[0]!.message,
    /34 keys: expected at most 32/,
  );
  const huge = vmSpecIssues(
    spec("web", { backend: "qemu", kernel: "/k", options: { cmdline: "x".repeat(2049) } }),
  );
  assertEquals(huge, [{
    field: "backend_options.cmdline",
    message: `"${"x".repeat(200)}": expected at most 2048 bytes`,
  }]);
});

Deno.test("labels are bounded in count, key form and value size", () => {
  const labelled = (labels: Record<string, string>) => {
    const s = spec("web");
    s.labels = labels;
    return vmSpecIssues(s);
  };
  assertEquals(labelled({ team: "web", "example.com/tier": "front", a_b: "x".repeat(256) }), []);
  assertEquals(labelled({ Team: "web", "-x": "y", ok: "x".repeat(257) }), [
    {
      field: "labels.-x",
      message:
        "key: expected 1 to 63 characters of a-z, 0-9, '.', '_', '/', '-', starting with a letter or digit",
    },
    {
      field: "labels.Team",
      message:
        "key: expected 1 to 63 characters of a-z, 0-9, '.', '_', '/', '-', starting with a letter or digit",
    },
    { field: "labels.ok", message: "value of 257 bytes: expected at most 256" },
  ]);
  const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, ""]));
  assertEquals(labelled(many), [{ field: "labels", message: "33 labels: expected at most 32" }]);
});

Deno.test("validateVmSpec throws one error with a code and every issue", () => {
  const e = thrown(VmSpecError, () => validateVmSpec(spec("Bad", { vcpus: 0 })));
  assertEquals(e.code, "INVALID_SPEC");
  assertEquals(e.issues.length, 2);
  assertMatch(e.message, /^vm "Bad": name: .*; vcpus: 0: expected 1 to 256$/);
});

Deno.test("restart policy and stop timeout come from the options, with defaults", () => {
  assertEquals(restartPolicyOf(spec("a")), "on-failure");
  assertEquals(restartPolicyOf(spec("a", { options: { restart: "always" } })), "always");
  assertEquals(stopTimeoutMsOf(spec("a")), 30_000);
  assertEquals(stopTimeoutMsOf(spec("a", { options: { stop_timeout_ms: "250" } })), 250);
});
