/**
 * Majority arithmetic: how many voters make a quorum, the highest index a
 * quorum has reached, and the outcome of an election.
 *
 * Owns: {@link majority}, {@link quorumIndex}, {@link VoteResult},
 * {@link voteResult}. Imports nothing.
 *
 * @module
 */

/** Voters that make a quorum of `voters`: more than half. */
export function majority(voters: number): number {
  return (voters >> 1) + 1;
}

/**
 * The highest value that at least a majority of `values` reach (for match
 * indexes: the highest index a quorum holds). Sorts `values` in place: pass
 * a scratch array. 0 for no values.
 */
export function quorumIndex(values: number[]): number {
  const n = values.length;
  if (n === 0) return 0;
  // Insertion sort: clusters have a handful of voters, and it allocates nothing.
  for (let i = 1; i < n; i++) {
    const v = values[i]!;
    let j = i - 1;
    while (j >= 0 && values[j]! > v) {
      values[j + 1] = values[j]!;
      j--;
    }
    values[j + 1] = v;
  }
  return values[n - majority(n)]!;
}

/** Where an election stands. */
export const VoteResult = {
  Pending: "pending",
  Won: "won",
  Lost: "lost",
} as const;
/** One of the values of {@link VoteResult}. */
export type VoteResult = typeof VoteResult[keyof typeof VoteResult];

/**
 * The outcome of an election among `voters` given the answers so far
 * (answers from non-voters are ignored): won once a majority granted, lost
 * once a majority can no longer be reached.
 */
export function voteResult(
  voters: Iterable<number>,
  votes: ReadonlyMap<number, boolean>,
): VoteResult {
  let total = 0, granted = 0, missing = 0;
  for (const id of voters) {
    total++;
    const vote = votes.get(id);
    if (vote === undefined) missing++;
    else if (vote) granted++;
  }
  const need = majority(total);
  if (granted >= need) return VoteResult.Won;
  if (granted + missing >= need) return VoteResult.Pending;
  return VoteResult.Lost;
}
