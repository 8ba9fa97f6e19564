/**
 * Shared by the config tests: parse a text and insist on success (with the
 * messages in the failure) or on failure.
 *
 * May import: src/config/ and tests/assert.ts.
 */

import { assert } from "../assert.ts";
import { type AgentConfig, type ConfigIssue, parseConfig } from "../../src/config/mod.ts";

/** A valid config's object and warnings; fails the test with every message otherwise. */
export function valid(text: string): { config: AgentConfig; warnings: readonly ConfigIssue[] } {
  const result = parseConfig(text);
  assert(result.ok, result.ok ? "" : result.errors.map((e) => e.message).join("\n"));
  return { config: result.config, warnings: result.warnings };
}

/** The errors of an invalid config; fails the test if it is valid. */
export function invalid(text: string): readonly ConfigIssue[] {
  const result = parseConfig(text);
  assert(!result.ok, `expected errors, got a valid config from:\n${text}`);
  return result.errors;
}

/** The one error at `path`; fails the test unless there is exactly one. */
export function errorAt(issues: readonly ConfigIssue[], path: string): ConfigIssue {
  const found = issues.filter((i) => i.path === path);
  assert(
    found.length === 1,
    `expected one error at ${path}, got:\n${issues.map((i) => i.message).join("\n")}`,
  );
  return found[0]!;
}

/** A minimal valid file plus `rest`. */
export function withNode(rest: string, id = 1): string {
  return `[node]\nid = ${id}\n${rest}`;
}

/** 64 lowercase hex characters derived from `n`: a well-formed endpoint id. */
export function endpointId(n: number): string {
  return n.toString(16).padStart(2, "0").repeat(32);
}
