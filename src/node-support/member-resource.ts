// What a group member (RFC 10020 §3.1 server side) needs between its GroupServer and an application such as a
// Node-RED flow: a resource whose representation is the last state it was given (RFC 7252 §5.8.1 GET, §5.8.2-3
// POST/PUT that change it, RFC 7641 notifications on change), and a bounded table of requests waiting for the
// application to answer, so a flow that never answers cannot make the member hold requests forever.

import { CODES } from '../coap/codes';
import { decodePayload, encodePayload } from '../coap/payload';
import { OPT, decodeUint } from '../coap/options';
import { Clock, systemClock } from '../messaging/parameters';
import type { ServerRequest, ServerResponse } from '../group/group-server';

export interface StateResourceOptions {
  /** Content-Format of the representation (default: none for strings, 50 application/json for other values) */
  contentFormat?: number;
  /** initial state */
  initial?: unknown;
  /** PUT and POST replace the state (a JSON object merges into an object state) */
  writable?: boolean;
}

export interface WriteResult {
  response: ServerResponse;
  /** the new state when the request changed it */
  changed?: { value: unknown };
}

/** Parse a configured initial value: JSON when it parses as JSON and the format is JSON (or unset), else text. */
export function parseInitialState(text: string | undefined, contentFormat?: number): unknown {
  if (text === undefined || text === '') return '';
  if (contentFormat === undefined || contentFormat === 50 || contentFormat === 60) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

export class StateResource {
  private state: unknown;
  private etagSeq = 0;

  constructor(private readonly opts: StateResourceOptions = {}) {
    this.state = opts.initial ?? '';
  }

  get value(): unknown {
    return this.state;
  }

  set(value: unknown): void {
    this.state = value;
    this.etagSeq++;
  }

  private contentFormat(): number | undefined {
    if (this.opts.contentFormat !== undefined) return this.opts.contentFormat;
    return typeof this.state === 'string' || Buffer.isBuffer(this.state) ? undefined : 50;
  }

  /** The representation (RFC 7252 §5.8.1). */
  read(): ServerResponse {
    const cf = this.contentFormat();
    return { code: CODES.CONTENT, contentFormat: cf, payload: encodePayload(this.state, cf) };
  }

  /** Serve one request: GET/FETCH read, PUT/POST write when writable, anything else 4.05 (RFC 7252 §5.8). */
  handle(req: ServerRequest): WriteResult {
    const code = req.message.code;
    if (code === CODES.GET || code === CODES.FETCH) return { response: this.read() };
    if ((code === CODES.PUT || code === CODES.POST) && this.opts.writable) {
      const cfOpt = req.message.options.find((o) => o.number === OPT.CONTENT_FORMAT);
      const cf = cfOpt ? decodeUint(cfOpt.value) : undefined;
      const decoded = decodePayload(req.message.payload, cf ?? this.contentFormat(), 'auto');
      // A body that does not parse as its Content-Format is rejected (RFC 7252 §5.9.2.1: 4.00), without echoing it.
      if (decoded.error) return { response: { code: CODES.BAD_REQUEST, payload: 'body does not match its Content-Format' } };
      let value = decoded.value;
      if (typeof value === 'string' && cf === undefined) value = parseInitialState(value, this.contentFormat());
      if (isPlainObject(this.state) && isPlainObject(value)) value = { ...(this.state as object), ...(value as object) };
      this.set(value);
      return { response: { code: CODES.CHANGED }, changed: { value } };
    }
    return { response: { code: CODES.METHOD_NOT_ALLOWED } };
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

export class PendingRepliesFull extends Error {
  readonly code = 'ERR_PENDING_FULL';
}

/**
 * Requests handed to an application and waiting for its answer. Each id resolves once: with the application's
 * response, or with `onTimeout()`'s after `timeout` ms. At most `max` wait at once; beyond that `add` throws.
 */
export class PendingReplies {
  private seq = 0;
  private readonly waiting = new Map<string, { resolve: (r: ServerResponse | undefined) => void; timer: unknown }>();

  constructor(
    readonly timeout: number,
    readonly max = 256,
    private readonly onTimeout: () => ServerResponse | undefined = () => ({ code: CODES.SERVICE_UNAVAILABLE }),
    private readonly clock: Clock = systemClock,
  ) {}

  /** A new id and the promise of its response. */
  add(): { id: string; response: Promise<ServerResponse | undefined> } {
    if (this.waiting.size >= this.max) throw new PendingRepliesFull('too many requests waiting for the flow');
    const id = (++this.seq).toString(36);
    const response = new Promise<ServerResponse | undefined>((resolve) => {
      const timer = this.clock.setTimeout(() => this.settle(id, this.onTimeout()), this.timeout);
      this.waiting.set(id, { resolve, timer });
    });
    return { id, response };
  }

  /** Answer a waiting request; false when it is unknown, already answered or timed out. */
  settle(id: string, response: ServerResponse | undefined): boolean {
    const w = this.waiting.get(id);
    if (!w) return false;
    this.waiting.delete(id);
    this.clock.clearTimeout(w.timer);
    w.resolve(response);
    return true;
  }

  get size(): number {
    return this.waiting.size;
  }

  /** Drop everything that waits (each gets no response). */
  clear(): void {
    for (const id of [...this.waiting.keys()]) this.settle(id, undefined);
  }
}
