/** How reconnects are spaced: exponential growth, capped, with jitter. */
export interface BackoffOptions {
  /** The first delay (before jitter), in ms. Default 250. */
  initialMs?: number;
  /** The largest delay, in ms. Default 15,000. */
  maxMs?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a drop): "equal jitter",
 * half fixed and half random, so that a whole gateway's worth of clients dropped at once
 * spreads its reconnects instead of returning in lockstep, while no client retries at once in
 * a loop.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 15_000;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(max, initial * factor ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
