/**
 * The errors of the on-disk Raft log besides those the contract defines
 * (`CompactedError`, `UnavailableError`, `StorageFailure` in
 * `src/raft/storage.ts`).
 *
 * Owns: {@link LogRequestError}, {@link LogFileError} and their codes.
 * Imports nothing.
 *
 * The split: a {@link LogRequestError} is a caller's mistake caught before
 * anything was written (the storage stays usable and unchanged); a
 * {@link LogFileError} is a file that cannot be opened as a Raft log; a
 * `StorageFailure` is a write that may not have reached the disk, after which
 * the storage refuses everything.
 *
 * @module
 */

/** Machine-readable reason of a {@link LogRequestError}. */
export type LogRequestErrorCode =
  /** A number or shape the storage cannot take: a fractional index, a negative size, a bad kind. */
  | "INVALID_ARGUMENT"
  /** The first new entry would leave a gap after the last index. */
  | "LOG_GAP"
  /** An entry's index does not follow the one before it in the same batch. */
  | "NOT_CONSECUTIVE"
  /** An entry's term is lower than the term of the entry before it. */
  | "TERM_REGRESSION"
  /** Entries at or below the first index minus one, which the log has compacted. */
  | "COMPACTED_WRITE"
  /** The write would change the term of an entry at or below the commit index. */
  | "COMMITTED_OVERWRITE"
  /** A snapshot older than the one held. */
  | "SNAPSHOT_OUT_OF_DATE"
  /** A snapshot past the commit index (it may only cover applied entries). */
  | "NOT_COMMITTED"
  /** A hard state whose term or commit goes down, or whose vote changes within a term. */
  | "HARD_STATE_REGRESSION"
  /** A hard state whose commit index is past the last index of the log. */
  | "COMMIT_BEYOND_LOG";

/**
 * A read or write the storage refused because of what it was asked: nothing
 * was written and the storage stays usable. It means a bug in the caller.
 */
export class LogRequestError extends Error {
  override readonly name = "LogRequestError";
  readonly code: LogRequestErrorCode;
  constructor(code: LogRequestErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** Machine-readable reason of a {@link LogFileError}. */
export type LogFileErrorCode =
  /** The file is not a SQLite database, or one that is not a Raft log. */
  | "NOT_A_RAFT_LOG"
  /** A Raft log written by a schema version this build does not know. */
  | "UNKNOWN_SCHEMA_VERSION"
  /** A row that breaks the log's rules: a wrong type, a value out of range, a gap. */
  | "CORRUPT"
  /** Another connection (another process, or this one) has the log open. */
  | "LOCKED"
  /** SQLite could not open or read the file. */
  | "OPEN_FAILED";

/** A file that cannot be opened as a Raft log; names the file. */
export class LogFileError extends Error {
  override readonly name = "LogFileError";
  readonly code: LogFileErrorCode;
  /** The file that was being opened. */
  readonly path: string;
  /** The entry index of the bad row, for `CORRUPT` rows of the entries table. */
  readonly index: number | undefined;
  constructor(code: LogFileErrorCode, path: string, message: string, index?: number) {
    super(`raft log ${path}: ${message}`);
    this.code = code;
    this.path = path;
    this.index = index;
  }
}
