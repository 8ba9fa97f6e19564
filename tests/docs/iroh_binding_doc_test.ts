/**
 * docs/iroh-binding.md tells operators about the binding's port mapper, and
 * what it says about the binding's API stays true: the installed
 * `@number0/iroh` is the version the page describes, and its endpoint builder
 * still has no way to turn the port mapper off. When a binding adds one, this
 * fails, so the switch gets wired into `iroh.relay = "disabled"` and the page
 * is rewritten.
 */

import { assert, assertEquals } from "../assert.ts";

const root = new URL("../../", import.meta.url).pathname;
const doc = await Deno.readTextFile(`${root}docs/iroh-binding.md`);
const binding = `${root}node_modules/@number0/iroh`;

/** The text of the page's `## title` section, with line breaks as spaces (prose is rewrapped). */
function section(title: string): string {
  const at = doc.indexOf(`\n## ${title}\n`);
  assert(at >= 0, `docs/iroh-binding.md has no "## ${title}" section`);
  const next = doc.indexOf("\n## ", at + 1);
  return doc.slice(at, next < 0 ? undefined : next).replace(/\s+/g, " ");
}

Deno.test("the binding page tells operators what the port mapper sends, where, and why", () => {
  const text = section("The port mapper");
  for (
    const fact of [
      "239.255.255.250:1900", // where the UPnP search goes
      "M-SEARCH",
      "default gateway, UDP port 5351", // NAT-PMP and PCP
      'relay = "disabled"', // it runs anyway
      "direct path through a", // why
      "portmapper_config", // upstream's switch
    ]
  ) assert(text.includes(fact), `"The port mapper" does not say ${fact}`);
});

Deno.test("the installed binding is the one the page describes, and its endpoint builder has no port mapper switch", async () => {
  const version = JSON.parse(await Deno.readTextFile(`${binding}/package.json`)).version;
  assert(
    section("The port mapper").includes(`\`@number0/iroh\` ${version}`),
    `the page does not describe ${version}`,
  );

  const types = await Deno.readTextFile(`${binding}/index.d.ts`);
  const builder = /export declare class EndpointBuilder \{([\s\S]*?)\n\}/.exec(types)?.[1];
  assert(builder !== undefined, "index.d.ts declares no EndpointBuilder");
  const methods = [...builder.matchAll(/^\s+(?:static\s+)?(\w+)\(/gm)].map((m) => m[1]!);
  assertEquals(
    methods.filter((m) => /portmap|upnp|nat|pcp/i.test(m)),
    [],
    'the binding now has a port mapper switch: use it for relay = "disabled" and update the page',
  );
  // The page lists the builder's surface; a new method means it needs reading again.
  for (const m of methods) assert(section("The port mapper").includes(`\`${m}\``), m);
});
