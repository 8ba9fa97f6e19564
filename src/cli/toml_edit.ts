/**
 * Edits of one table of a TOML file that keep everything else byte for byte:
 * the operator's comments, blank lines, key order, quoting and line endings.
 * smol-toml (the project's parser) reads values and drops the rest, so
 * `blixard migrate` cannot write a file back through it.
 *
 * Owns: {@link lexToml} (a file as a list of statements with their byte
 * ranges), {@link setTableKeys} and {@link removeTable}, and
 * {@link TomlEditError}. Imports nothing; the caller validates the result
 * with the real parser (this lexer only finds where statements start and
 * end, and assumes a file that parser accepts).
 *
 * @module
 */

/** Why a file cannot be edited here. */
export type TomlEditErrorCode =
  /** The table is written in a form these edits do not rewrite (dotted keys, inline table). */
  | "unsupported_form"
  /** The text is not TOML this lexer can follow (the real parser would refuse it too). */
  | "syntax";

/** A file these edits cannot rewrite safely; `message` says what to change. */
export class TomlEditError extends Error {
  override readonly name = "TomlEditError";
  readonly code: TomlEditErrorCode;
  constructor(code: TomlEditErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** One statement of a TOML file, with offsets into its text. */
export type TomlStatement =
  /** `[a.b]` or `[[a.b]]`: `start` is the line's start, `end` past its newline. */
  | {
    readonly kind: "table";
    readonly path: readonly string[];
    readonly array: boolean;
    readonly start: number;
    readonly end: number;
  }
  /**
   * `a.b = value`: `valueStart`/`valueEnd` bound the value itself (a
   * multi-line array or string included), `end` is past the newline after it
   * and its comment.
   */
  | {
    readonly kind: "keyval";
    readonly path: readonly string[];
    readonly start: number;
    readonly valueStart: number;
    readonly valueEnd: number;
    readonly end: number;
  }
  /** A blank line or a line with only a comment. */
  | {
    readonly kind: "trivia";
    readonly comment: boolean;
    readonly start: number;
    readonly end: number;
  };

const BARE_KEY = /[A-Za-z0-9_-]/;

/** A quoted key's text; TOML escapes JSON lacks (`\e`, `\U…`) are kept as written. */
function unquote(quoted: string): string {
  try {
    return JSON.parse(quoted);
  } catch {
    return quoted.slice(1, -1);
  }
}

/**
 * The statements of a TOML file, in order, covering every byte of it.
 * @throws {TomlEditError} `syntax` when the text is not TOML it can follow.
 *
 * @example
 * ```ts
 * import { lexToml } from "./toml_edit.ts";
 * const kinds = lexToml('# hi\n[transport]\nmode = "dual" # why\n').map((s) => s.kind);
 * console.log(kinds); // ["trivia", "table", "keyval"]
 * ```
 */
export function lexToml(text: string): TomlStatement[] {
  return new Lexer(text).statements();
}

class Lexer {
  readonly #text: string;
  #at = 0;

  constructor(text: string) {
    this.#text = text;
  }

  statements(): TomlStatement[] {
    const out: TomlStatement[] = [];
    while (this.#at < this.#text.length) {
      const start = this.#at;
      this.#spaces();
      const c = this.#text[this.#at];
      if (c === undefined || c === "\n" || c === "\r" || c === "#") {
        const comment = c === "#";
        this.#endOfLine();
        out.push({ kind: "trivia", comment, start, end: this.#at });
      } else if (c === "[") {
        const array = this.#text[this.#at + 1] === "[";
        this.#at += array ? 2 : 1;
        const path = this.#key();
        this.#spaces();
        this.#expect(array ? "]]" : "]");
        this.#endOfLine();
        out.push({ kind: "table", path, array, start, end: this.#at });
      } else {
        const path = this.#key();
        this.#spaces();
        this.#expect("=");
        this.#spaces();
        const valueStart = this.#at;
        this.#value(false);
        const valueEnd = this.#at;
        this.#endOfLine();
        out.push({ kind: "keyval", path, start, valueStart, valueEnd, end: this.#at });
      }
    }
    return out;
  }

  #fail(what: string): never {
    const before = this.#text.slice(0, this.#at);
    const line = before.split("\n").length;
    const column = this.#at - before.lastIndexOf("\n");
    throw new TomlEditError("syntax", `line ${line}, column ${column}: ${what}`);
  }

  #expect(token: string): void {
    if (!this.#text.startsWith(token, this.#at)) this.#fail(`expected "${token}"`);
    this.#at += token.length;
  }

  #spaces(): void {
    while (this.#text[this.#at] === " " || this.#text[this.#at] === "\t") this.#at++;
  }

  /** Spaces, an optional comment, then a newline or the end of the text. */
  #endOfLine(): void {
    this.#spaces();
    if (this.#text[this.#at] === "#") {
      while (this.#at < this.#text.length && this.#text[this.#at] !== "\n") this.#at++;
    }
    if (this.#text.startsWith("\r\n", this.#at)) this.#at += 2;
    else if (this.#text[this.#at] === "\n") this.#at++;
    else if (this.#at < this.#text.length) this.#fail("expected the end of the line");
  }

  /** Whitespace, newlines and comments inside an array. */
  #blank(): void {
    for (;;) {
      this.#spaces();
      const c = this.#text[this.#at];
      if (c === "#") {
        while (this.#at < this.#text.length && this.#text[this.#at] !== "\n") this.#at++;
      } else if (c === "\n" || c === "\r") this.#at++;
      else return;
    }
  }

  /** A dotted key: bare, "basic" or 'literal' parts joined by dots. */
  #key(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.#spaces();
      const c = this.#text[this.#at];
      if (c === '"') parts.push(unquote(this.#text.slice(this.#at, this.#basic())));
      else if (c === "'") {
        const start = this.#at;
        parts.push(this.#text.slice(start + 1, this.#literal() - 1));
      } else {
        const start = this.#at;
        while (this.#at < this.#text.length && BARE_KEY.test(this.#text[this.#at]!)) this.#at++;
        if (this.#at === start) this.#fail("expected a key");
        parts.push(this.#text.slice(start, this.#at));
      }
      this.#spaces();
      if (this.#text[this.#at] !== ".") return parts;
      this.#at++;
    }
  }

  /** A "basic string" on one line; returns the offset past its closing quote. */
  #basic(): number {
    this.#at++;
    for (;;) {
      const c = this.#text[this.#at];
      if (c === undefined || c === "\n") this.#fail("unterminated string");
      this.#at += c === "\\" ? 2 : 1;
      if (c === '"') return this.#at;
    }
  }

  /** A 'literal string' on one line; returns the offset past its closing quote. */
  #literal(): number {
    const close = this.#text.indexOf("'", this.#at + 1);
    const newline = this.#text.indexOf("\n", this.#at + 1);
    if (close < 0 || (newline >= 0 && newline < close)) this.#fail("unterminated string");
    this.#at = close + 1;
    return this.#at;
  }

  /** A multi-line string opened by `quote` x3; up to two more quotes may close it. */
  #multiline(quote: '"' | "'"): void {
    const delimiter = quote.repeat(3);
    this.#at += 3;
    for (;;) {
      const c = this.#text[this.#at];
      if (c === undefined) this.#fail("unterminated multi-line string");
      if (quote === '"' && c === "\\") {
        this.#at += 2;
        continue;
      }
      if (this.#text.startsWith(delimiter, this.#at)) {
        this.#at += 3;
        let extra = 0;
        while (extra < 2 && this.#text[this.#at] === quote) {
          this.#at++;
          extra++;
        }
        return;
      }
      this.#at++;
    }
  }

  /** One value; `nested` inside an array or inline table, where `,` `]` `}` end a bare value. */
  #value(nested: boolean): void {
    const c = this.#text[this.#at];
    if (this.#text.startsWith('"""', this.#at)) this.#multiline('"');
    else if (this.#text.startsWith("'''", this.#at)) this.#multiline("'");
    else if (c === '"') this.#basic();
    else if (c === "'") this.#literal();
    else if (c === "[") {
      this.#at++;
      for (;;) {
        this.#blank();
        if (this.#text[this.#at] === "]") break;
        this.#value(true);
        this.#blank();
        if (this.#text[this.#at] === ",") this.#at++;
        else if (this.#text[this.#at] !== "]") this.#fail('expected "," or "]" in an array');
      }
      this.#at++;
    } else if (c === "{") {
      this.#at++;
      for (;;) {
        this.#blank();
        if (this.#text[this.#at] === "}") break;
        this.#key();
        this.#spaces();
        this.#expect("=");
        this.#spaces();
        this.#value(true);
        this.#blank();
        if (this.#text[this.#at] === ",") this.#at++;
        else if (this.#text[this.#at] !== "}") this.#fail('expected "," or "}" in an inline table');
      }
      this.#at++;
    } else {
      // Numbers, booleans, dates and times (a date-time may hold one space).
      const stop = nested ? /[,\]}#\r\n]/ : /[#\r\n]/;
      const start = this.#at;
      while (this.#at < this.#text.length && !stop.test(this.#text[this.#at]!)) this.#at++;
      while (this.#at > start && /[ \t]/.test(this.#text[this.#at - 1]!)) this.#at--;
      if (this.#at === start) this.#fail("expected a value");
    }
  }
}

/** The statements of one table: its header (absent for the root) and what follows it. */
interface Block {
  readonly header: Extract<TomlStatement, { kind: "table" }> | null;
  readonly body: readonly TomlStatement[];
}

function blocks(statements: readonly TomlStatement[]): Block[] {
  const out: { header: Block["header"]; body: TomlStatement[] }[] = [{ header: null, body: [] }];
  for (const s of statements) {
    if (s.kind === "table") out.push({ header: s, body: [] });
    else out.at(-1)!.body.push(s);
  }
  return out;
}

const samePath = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((p, i) => p === b[i]);

const startsWith = (path: readonly string[], prefix: readonly string[]) =>
  prefix.every((p, i) => path[i] === p);

/** The end of a block's last key (or of its header): where keys are appended. */
function contentEnd(block: Block): number {
  const keys = block.body.filter((s) => s.kind === "keyval");
  return keys.at(-1)?.end ?? block.header?.end ?? 0;
}

/**
 * Refuses a file that writes any part of table `path` from outside its own
 * `[path]` header (what these edits rewrite): dotted keys reaching into it
 * from a parent table or the root, or an inline table.
 */
function assertPlainTable(text: string, all: readonly Block[], path: readonly string[]): void {
  const name = path.join(".");
  for (const block of all) {
    const at = block.header?.path ?? [];
    // Keys under [path] or one of its sub-tables are in table form.
    if (at.length >= path.length || !startsWith(path, at)) continue;
    for (const s of block.body) {
      if (s.kind !== "keyval") continue;
      const full = [...at, ...s.path];
      if (!startsWith(full, path) && !startsWith(path, full)) continue;
      const line = text.slice(0, s.start).split("\n").length;
      const key = text.slice(s.start, s.valueStart).replace(/\s*=\s*$/, "").trim();
      const form = full.length <= path.length ? "an inline table" : "dotted keys";
      throw new TomlEditError(
        "unsupported_form",
        `line ${line}: "${key} = ..." writes [${name}] as ${form}; write it as a [${name}] table with one key per line`,
      );
    }
  }
}

function lineEnding(text: string): string {
  return text.includes("\r\n") ? "\r\n" : "\n";
}

/** `text` with `insert` at `at`, adding the newline a last line without one lacks. */
function insertAt(text: string, at: number, insert: string, eol: string): string {
  const before = text.slice(0, at);
  const glue = before.length > 0 && !before.endsWith("\n") ? eol : "";
  return before + glue + insert + text.slice(at);
}

/** Where {@link setTableKeys} puts a table the file does not have. */
export interface Placement {
  /** Before the first of these tables that the file has (and the comments directly above it). */
  readonly before?: readonly (readonly string[])[];
  /** Else after the last key of the first of these tables that the file has. */
  readonly after?: readonly (readonly string[])[];
}

/**
 * Sets keys of table `path` (`[a.b]`) to the given TOML values, written as
 * they are (`'"dual"'`, `'["health", "status"]'`, `"true"`). A key the
 * table has keeps its line, indentation, spacing and trailing comment; only
 * its value is replaced (a multi-line value becomes the one-line value
 * given). A key it lacks is appended after its last key, in the order
 * given. A missing table is added where `placement` says, else before the
 * first table, else at the end, set off by a blank line. Everything else
 * stays byte for byte, line endings included.
 * @throws {TomlEditError} when the file writes that table in another form.
 *
 * @example
 * ```ts
 * import { setTableKeys } from "./toml_edit.ts";
 * const text = '[transport]\nmode = "grpc" # the rollback target\n';
 * console.log(setTableKeys(text, ["transport"], [["mode", '"dual"']]));
 * // [transport]\nmode = "dual" # the rollback target\n
 * ```
 */
export function setTableKeys(
  text: string,
  path: readonly string[],
  keys: readonly (readonly [string, string])[],
  placement: Placement = {},
): string {
  const all = blocks(lexToml(text));
  assertPlainTable(text, all, path);
  const eol = lineEnding(text);
  const find = (p: readonly string[]) =>
    all.find((b) => b.header && !b.header.array && samePath(b.header.path, p));
  const block = find(path);
  if (!block) {
    const table = `[${path.join(".")}]${eol}${keys.map(([k, v]) => `${k} = ${v}${eol}`).join("")}`;
    const before = (placement.before ?? []).map(find).find((b) => b !== undefined);
    const after = (placement.after ?? []).map(find).find((b) => b !== undefined);
    const first = before ?? (after ? undefined : all.find((b) => b.header !== null));
    if (first) return insertAt(text, leadingCommentStart(all, first), `${table}${eol}`, eol);
    if (after) return insertAt(text, contentEnd(after), `${eol}${table}`, eol);
    return insertAt(text, text.length, text.length > 0 ? `${eol}${table}` : table, eol);
  }
  // Replace from the end of the file backwards, so earlier offsets stay right.
  const edits: { at: number; end: number; insert: string }[] = [];
  const missing: (readonly [string, string])[] = [];
  for (const [key, value] of keys) {
    const line = block.body.find((s) => s.kind === "keyval" && samePath(s.path, [key]));
    if (line?.kind === "keyval") {
      edits.push({ at: line.valueStart, end: line.valueEnd, insert: value });
    } else missing.push([key, value]);
  }
  if (missing.length > 0) {
    const last = block.body.filter((s) => s.kind === "keyval").at(-1);
    const indent = last ? /^[ \t]*/.exec(text.slice(last.start))![0] : "";
    const at = contentEnd(block);
    const glue = at > 0 && !text.slice(0, at).endsWith("\n") ? eol : "";
    edits.push({
      at,
      end: at,
      insert: glue + missing.map(([k, v]) => `${indent}${k} = ${v}${eol}`).join(""),
    });
  }
  edits.sort((a, b) => b.at - a.at);
  let out = text;
  for (const e of edits) out = out.slice(0, e.at) + e.insert + out.slice(e.end);
  return out;
}

/** Where the comment lines directly above `block`'s header begin (no blank line between). */
function leadingCommentStart(all: readonly Block[], block: Block): number {
  const previous = all[all.indexOf(block) - 1];
  let at = block.header!.start;
  if (!previous) return at;
  for (let i = previous.body.length - 1; i >= 0; i--) {
    const s = previous.body[i]!;
    if (s.kind !== "trivia" || !s.comment) break;
    at = s.start;
  }
  return at;
}

/**
 * Removes table `path` (`[a.b]`): its header, the comment lines directly
 * above it, and its lines up to its last key. Comments after its last key
 * stay (they may belong to the next table), and so does everything else. A
 * blank line left doubled by the removal is removed too. A file without the
 * table is returned as it is.
 * @throws {TomlEditError} when the file writes that table in another form.
 *
 * @example
 * ```ts
 * import { removeTable } from "./toml_edit.ts";
 * const text = '[transport]\nmode = "grpc"\n\n[transport.migration]\nraft_transport = "grpc"\n\n[grpc]\n';
 * console.log(removeTable(text, ["transport", "migration"]));
 * // [transport]\nmode = "grpc"\n\n[grpc]\n
 * ```
 */
export function removeTable(text: string, path: readonly string[]): string {
  const all = blocks(lexToml(text));
  assertPlainTable(text, all, path);
  const block = all.find((b) => b.header && !b.header.array && samePath(b.header.path, path));
  if (!block) return text;
  const start = leadingCommentStart(all, block);
  let end = contentEnd(block);
  const blankAt = (at: number) => /^[ \t]*(\r?\n)/.exec(text.slice(at));
  const blankBefore = start === 0 || /(^|\n)[ \t]*\r?\n$/.test(text.slice(0, start));
  const next = blankAt(end);
  if (blankBefore && next) end += next[0].length;
  return text.slice(0, start) + text.slice(end);
}
