// Closing test endpoints with a check: a test fails if an endpoint saw a request handler throw (counters.
// handlerErrors), instead of a no-op 'handler-error' listener hiding it.

import assert from 'node:assert/strict';
import { CoapEndpoint } from '../../src/messaging/endpoint';

type Closable = { close(): Promise<void> };
type WithEndpoint = Closable & { endpoint?: CoapEndpoint; server?: { endpoint: CoapEndpoint } };

function endpointOf(thing: Closable): CoapEndpoint | undefined {
  if (thing instanceof CoapEndpoint) return thing;
  const t = thing as WithEndpoint;
  return t.endpoint ?? t.server?.endpoint;
}

/**
 * Close everything given (arrays in parallel, in the order given otherwise), then assert that no endpoint among
 * them counted a handler error. Everything is closed even when an assertion fails, so no socket is left open.
 */
export async function closeChecked(...things: (Closable | Closable[] | undefined)[]): Promise<void> {
  const errors: string[] = [];
  const check = (t: Closable) => {
    const ep = endpointOf(t);
    if (ep && ep.counters.handlerErrors !== 0) errors.push(`${ep.counters.handlerErrors} handler error(s) on ${ep.transport.address().address}`);
  };
  for (const t of things) {
    if (!t) continue;
    const list = Array.isArray(t) ? t : [t];
    for (const x of list) check(x); // before close: the address is still known
    await Promise.all(list.map((x) => x.close()));
  }
  assert.deepEqual(errors, [], 'endpoints closed with handler errors');
}

/** Remember handler errors with their cause, for an assertion message that says what threw. */
export function recordHandlerErrors(ep: CoapEndpoint): Error[] {
  const seen: Error[] = [];
  ep.on('handler-error', (err: Error) => seen.push(err));
  return seen;
}
