/**
 * Reading the config schema as data: the keys a table allows, the schema at a
 * key path, a key's type, default and docs. Error messages (issues.ts) and
 * docs/configuration.md (scripts/config_docs.ts) both read the schema through
 * these functions, so neither repeats what the schema says.
 *
 * Owns: walking zod schemas. May import: zod and ./schema.ts.
 *
 * @module
 */

import { z } from "zod";
import { type KeyDoc, keyDocs } from "./schema.ts";

type Schema = z.core.$ZodType;

/** The layers of wrappers around a value schema, outermost first, then the value schema. */
export function layers(schema: Schema): Schema[] {
  const out = [schema];
  let s = schema;
  while (
    s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodPrefault ||
    s instanceof z.ZodNullable
  ) {
    s = s.unwrap();
    out.push(s);
  }
  return out;
}

/** The value schema under `.optional()`, `.default()` and `.prefault()`. */
export function unwrap(schema: Schema): Schema {
  return layers(schema).at(-1)!;
}

/** The docs of a schema, merged over its layers (outer layers win). */
export function docOf(schema: Schema): KeyDoc {
  const merged: Record<string, string> = {};
  for (const layer of layers(schema).reverse()) Object.assign(merged, keyDocs.get(layer) ?? {});
  return merged;
}

/** The keys a table allows, in schema order; `undefined` if `schema` is no table. */
export function tableKeys(schema: Schema): string[] | undefined {
  const s = unwrap(schema);
  return s instanceof z.ZodObject ? Object.keys(s.shape) : undefined;
}

/** The schema one step down: a table's key or an array's element. */
export function child(schema: Schema, key: PropertyKey): Schema | undefined {
  const s = unwrap(schema);
  if (s instanceof z.ZodObject && typeof key === "string") {
    return Object.hasOwn(s.shape, key) ? s.shape[key] : undefined;
  }
  if (s instanceof z.ZodArray && typeof key === "number") return s.element;
  if (s instanceof z.ZodUnion && typeof key === "number") {
    for (const option of s.options) {
      const element = child(option, key);
      if (element !== undefined) return element;
    }
  }
  return undefined;
}

/** The schema at a path of keys and indices, if the schema has one there. */
export function schemaAt(root: Schema, path: readonly PropertyKey[]): Schema | undefined {
  let s: Schema | undefined = root;
  for (const key of path) {
    if (s === undefined) return undefined;
    s = child(s, key);
  }
  return s;
}

/** Whether a key may be left out (it has a default or is optional). */
export function isOptional(schema: Schema): boolean {
  return layers(schema).some((l) =>
    l instanceof z.ZodOptional || l instanceof z.ZodDefault || l instanceof z.ZodPrefault
  );
}

/** The constant default of a key, or `undefined` (also for tables, which default to their keys' defaults). */
export function defaultOf(schema: Schema): unknown {
  for (const layer of layers(schema)) {
    if (layer instanceof z.ZodDefault) return layer.def.defaultValue;
  }
  return undefined;
}

/** A short name of a value schema's type, as "expected …" and the docs say it. */
export function typeName(schema: Schema, plural = false): string {
  const s = unwrap(schema);
  const noun = (one: string, many: string, article = "a") => plural ? many : `${article} ${one}`;
  if (s instanceof z.ZodNumber) {
    return s.isInt ? noun("integer", "integers", "an") : noun("number", "numbers");
  }
  if (s instanceof z.ZodString || s instanceof z.ZodStringFormat || s instanceof z.ZodEnum) {
    return noun("string", "strings");
  }
  if (s instanceof z.ZodBoolean) return noun("boolean", "booleans");
  if (s instanceof z.ZodObject) return noun("table", "tables");
  if (s instanceof z.ZodArray) {
    const element = unwrap(s.element);
    return element instanceof z.ZodObject
      ? noun("array of tables", "arrays of tables", "an")
      : noun(`array of ${typeName(element, true)}`, `arrays of ${typeName(element, true)}`, "an");
  }
  if (s instanceof z.ZodUnion) {
    const names = s.options.map((o) => typeName(o, plural));
    return [...new Set(names)].join(" or ");
  }
  return plural ? "values" : "a value";
}

/** Whether `value` has the TOML type `schema` takes (whatever its other constraints). */
export function sameType(schema: Schema, value: unknown): boolean {
  const s = unwrap(schema);
  if (s instanceof z.ZodString || s instanceof z.ZodEnum) return typeof value === "string";
  if (s instanceof z.ZodNumber) return typeof value === "number";
  if (s instanceof z.ZodBoolean) return typeof value === "boolean";
  if (s instanceof z.ZodArray) return Array.isArray(value);
  if (s instanceof z.ZodObject) {
    return value !== null && typeof value === "object" && !Array.isArray(value) &&
      !(value instanceof Date);
  }
  return false;
}

/** The allowed values of a value schema, as the phrase after "expected". */
export function allowedOf(schema: Schema): string {
  const doc = docOf(schema);
  if (doc.notSupported !== undefined) {
    return `nothing yet (not supported); once built: ${allowedOf(unwrap(schema))}`;
  }
  if (doc.allowed !== undefined) return doc.allowed;
  const s = unwrap(schema);
  if (s instanceof z.ZodEnum) return oneOf(s.options.map((o) => JSON.stringify(o)));
  if (s instanceof z.ZodArray && !(unwrap(s.element) instanceof z.ZodObject)) {
    return `a list, each ${allowedOf(s.element)}`;
  }
  return typeName(s);
}

/** `["a", "b", "c"]` → `a, b or c`. */
export function oneOf(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
}

/** Every key path of the schema's tables (`["transport", "migration", "prefer_iroh"]`, …). */
export function keyPaths(root: Schema, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const key of tableKeys(root) ?? []) {
    const path = [...prefix, key];
    out.push(path);
    const value = child(root, key)!;
    const inner = unwrap(value);
    const element = inner instanceof z.ZodArray ? inner.element : value;
    out.push(...keyPaths(element, path));
  }
  return out;
}
