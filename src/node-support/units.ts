// One unit of time for what a flow author types: seconds, as in every dialog (Timeout, Leisure, Multicast-Timeout
// is seconds on the wire too, groupcomm-proxy-07 §4). A string may name its unit ("500ms", "2s", "1.5 s").

export class DurationInputError extends Error {
  readonly code = 'ERR_DURATION';
}

/**
 * Milliseconds from a number of seconds or a string with an optional unit. `what` names the field in the error
 * (never the raw input when it is not a short number or string).
 */
export function parseDuration(value: unknown, what: string, opts: { min?: number; max?: number } = {}): number {
  let ms: number;
  if (typeof value === 'number') ms = value * 1000;
  else if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$/i.exec(value);
    if (!m) throw new DurationInputError(`${what}: ${JSON.stringify(value.slice(0, 20))} is not a duration (seconds, or e.g. "500ms")`);
    ms = Number(m[1]) * (m[2]?.toLowerCase() === 'ms' ? 1 : 1000);
  } else throw new DurationInputError(`${what} must be a number of seconds or a string such as "500ms" (got ${value === null ? 'null' : typeof value})`);
  if (!Number.isFinite(ms)) throw new DurationInputError(`${what} is not a finite duration`);
  const min = opts.min ?? 1;
  const max = opts.max ?? 3_600_000;
  if (ms < min || ms > max) throw new DurationInputError(`${what} must be between ${min / 1000} s and ${max / 1000} s`);
  return ms;
}
