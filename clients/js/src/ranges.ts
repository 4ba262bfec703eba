/**
 * A set of integers kept as sorted, disjoint, non-adjacent closed ranges: the `seq`s of a
 * conversation that this client actually received. A conversation is usually one range (or a
 * handful while history is paged in), so the linear scans stay short.
 */
export class RangeSet {
  private list: [number, number][] = [];

  /** True when `n` was added. */
  has(n: number): boolean {
    for (const [a, b] of this.list) {
      if (n < a) return false;
      if (n <= b) return true;
    }
    return false;
  }

  /** Adds `n`; returns false when it was already there. */
  add(n: number): boolean {
    const list = this.list;
    let i = 0;
    while (i < list.length && list[i]![1] < n - 1) i += 1;
    const at = list[i];
    if (!at || n < at[0] - 1) {
      list.splice(i, 0, [n, n]);
      return true;
    }
    if (n >= at[0] && n <= at[1]) return false;
    if (n === at[0] - 1) at[0] = n;
    else at[1] = n;
    const next = list[i + 1];
    if (next && next[0] === at[1] + 1) {
      at[1] = next[1];
      list.splice(i + 1, 1);
    }
    return true;
  }

  /** The ranges, lowest first, as `[first, last]` pairs (a copy). */
  ranges(): [number, number][] {
    return this.list.map(([a, b]) => [a, b]);
  }

  /** The lowest and highest member, or undefined when empty. */
  get lowest(): number | undefined {
    return this.list[0]?.[0];
  }

  get highest(): number | undefined {
    return this.list[this.list.length - 1]?.[1];
  }

  /** The first seq of the range that holds `n` (so `history before` it continues that range). */
  startOf(n: number): number | undefined {
    for (const [a, b] of this.list) if (n >= a && n <= b) return a;
    return undefined;
  }

  /** How many integers the set holds. */
  get size(): number {
    return this.list.reduce((sum, [a, b]) => sum + b - a + 1, 0);
  }

  clear(): void {
    this.list = [];
  }
}
