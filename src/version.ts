/**
 * The agent's version, from deno.json: one place for `blixard version`,
 * Health.Check and the logs.
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };

/** The agent's version, e.g. `"0.1.0"`. */
export const AGENT_VERSION: string = denoJson.version;
