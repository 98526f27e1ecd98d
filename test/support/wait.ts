// Waiting in tests: for a condition that events make true, or for one event. Never a fixed sleep: the wait ends as
// soon as what it waits for has happened, and the deadline only turns a hang into a failure that names what was
// awaited. Neither leaves a timer behind (test/support/leak-check.ts).

import type { EventEmitter } from 'node:events';

/** The deadline when a caller gives none, ms. */
export const DEFAULT_WAIT_MS = 5000;

/** For this long a condition is checked on every turn of the event loop; then every POLL_MS (no busy loop). */
const SPIN_MS = 50;
const POLL_MS = 5;

/**
 * Resolves once `cond()` holds; rejects after `ms` with "timed out waiting for <what>". `cond` is checked at once,
 * then on every turn of the event loop for the first 50 ms and every 5 ms after that, so socket callbacks run
 * between checks and a long wait does not keep a core busy.
 */
export function waitFor(cond: () => boolean, what: string, ms = DEFAULT_WAIT_MS): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      let ok: boolean;
      try {
        ok = cond();
      } catch (err) {
        return reject(err as Error);
      }
      if (ok) return resolve();
      const waited = Date.now() - start;
      if (waited > ms) return reject(new Error(`timed out waiting for ${what} (${ms} ms)`));
      if (waited < SPIN_MS) setImmediate(check);
      else setTimeout(check, POLL_MS);
    };
    check();
  });
}

/**
 * Resolves with the first `event` of `emitter` whose argument `accept` takes; rejects after `ms`. The listener and
 * the deadline's timer are removed either way.
 */
export function waitForEvent<T = unknown>(emitter: EventEmitter, event: string, accept: (value: T) => boolean = () => true, ms = DEFAULT_WAIT_MS): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    const on = (value: T): void => {
      if (!accept(value)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(value);
    };
    emitter.on(event, on);
  });
}
