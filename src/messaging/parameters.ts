// Transmission parameters (RFC 7252 §4.8, §4.8.2) and the group token-reuse bound (groupcomm-bis §3.1.5 /
// RFC 10020), in milliseconds. All of them can be overridden per endpoint (tests shorten them).

export interface TransmissionParams {
  ACK_TIMEOUT: number;
  ACK_RANDOM_FACTOR: number;
  MAX_RETRANSMIT: number;
  /** RFC 7252 DEFAULT_LEISURE (5 s); groupcomm-bis raises it to 20 s / 13 s only with Group OSCORE */
  DEFAULT_LEISURE: number;
  MAX_LATENCY: number;
  PROCESSING_DELAY: number;
  /** MAX_SERVER_RESPONSE_DELAY (groupcomm-bis §3.1.5): 250 s when unknown */
  MAX_SERVER_RESPONSE_DELAY: number;
  /** delay before a CON request gets an empty ACK and a separate response (must stay below ACK_TIMEOUT) */
  SEPARATE_RESPONSE_AFTER: number;
}

export const DEFAULT_PARAMS: TransmissionParams = {
  ACK_TIMEOUT: 2000,
  ACK_RANDOM_FACTOR: 1.5,
  MAX_RETRANSMIT: 4,
  DEFAULT_LEISURE: 5000,
  MAX_LATENCY: 100_000,
  PROCESSING_DELAY: 2000,
  MAX_SERVER_RESPONSE_DELAY: 250_000,
  SEPARATE_RESPONSE_AFTER: 1000,
};

/** RFC 7252 §4.8.2 derived times. */
export function maxTransmitSpan(p: TransmissionParams): number {
  return p.ACK_TIMEOUT * (2 ** p.MAX_RETRANSMIT - 1) * p.ACK_RANDOM_FACTOR;
}
export function maxTransmitWait(p: TransmissionParams): number {
  return p.ACK_TIMEOUT * (2 ** (p.MAX_RETRANSMIT + 1) - 1) * p.ACK_RANDOM_FACTOR;
}
export function exchangeLifetime(p: TransmissionParams): number {
  return maxTransmitSpan(p) + 2 * p.MAX_LATENCY + p.PROCESSING_DELAY;
}
export function nonLifetime(p: TransmissionParams): number {
  return maxTransmitSpan(p) + p.MAX_LATENCY;
}
/**
 * groupcomm-bis §3.1.5: NON_LIFETIME + MAX_LATENCY + MAX_SERVER_RESPONSE_DELAY. The document rounds the first two
 * up to 250 s (as RFC 7390 did), so the conservative max of both readings is used: 500 s with defaults.
 */
export function minTokenReuseTime(p: TransmissionParams): number {
  return Math.max(nonLifetime(p) + p.MAX_LATENCY, 250_000) + p.MAX_SERVER_RESPONSE_DELAY;
}

/** Injectable clock (timers included) so tests can drive time. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Let a timer not keep the process alive (a no-op for clocks whose handles are not Node timers). */
export function unrefTimer(handle: unknown): void {
  (handle as { unref?: () => void } | undefined)?.unref?.();
}

/**
 * The process's clock. `now()` is monotonic (performance.now() from the process's start, offset to the epoch): every
 * deadline compares against it, and a wall clock that steps (NTP's first sync on a board without a real-time clock)
 * must not cut group requests short or hold retransmissions back. Nothing in the core needs the calendar time.
 */
export const systemClock: Clock = {
  now: () => Math.floor(performance.timeOrigin + performance.now()), // whole ms, as Date.now() gave
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};
