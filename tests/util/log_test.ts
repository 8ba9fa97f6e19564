import { assert, assertEquals } from "../assert.ts";
import { createLogger, RateLimiter } from "../../src/util/log.ts";

Deno.test("a peer knocking 1,000 times a minute is logged once, then with the count it hid", () => {
  const limiter = new RateLimiter(60_000);
  const t0 = 1_000_000;
  assertEquals(limiter.allow("refused:3f2a", t0), 0);
  for (let i = 1; i <= 999; i++) assertEquals(limiter.allow("refused:3f2a", t0 + i), -1);
  assertEquals(limiter.allow("refused:beef", t0 + 1000), 0, "another peer is not silenced");
  assertEquals(limiter.allow("refused:3f2a", t0 + 60_000), 999);
});

Deno.test("the limiter forgets the oldest keys first, so a flood of ids cannot grow it", () => {
  const limiter = new RateLimiter(60_000, 3);
  for (const id of ["a", "b", "c", "d"]) limiter.allow(id, 0);
  assertEquals(limiter.allow("a", 1), 0, "a was forgotten, so it may be logged again");
  assertEquals(limiter.allow("d", 1), -1);
});

Deno.test("log lines carry the level, the component and quoted fields", () => {
  const lines: string[] = [];
  const log = createLogger("blixard", { level: "info", sink: (l) => lines.push(l) });
  log.debug("hidden");
  log.child("iroh").warn("refused a connection", { peer: "3f2a", reason: "not on the allowlist" });
  assertEquals(lines, [
    'WARN  blixard.iroh: refused a connection peer=3f2a reason="not on the allowlist"',
  ]);
  assert(!lines.some((l) => l.includes("hidden")));
});
