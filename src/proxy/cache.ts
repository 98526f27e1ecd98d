// Response cache of a group proxy (groupcomm-proxy-07 §7, updating RFC 7252 §5.6): one entry per server per
// request Cache-Key (RFC 7252 §5.6.2: method and the options that are part of the key; the group authority is
// replaced by the server), freshness from Max-Age (default 60 s), Reply-From added before storing (§5.4.1), and
// Group-ETag (§7.3) over the set J of fresh entries, which is only offered when the group's members are known.

import { createHash } from 'node:crypto';
import { CODES } from '../coap/codes';
import { CoapMessage, CoapOption, getOption } from '../coap/message';
import { OPT, decodeUint, encodeUint, isNoCacheKey, optionDef } from '../coap/options';

export interface CachedResponse {
  server: string;
  message: CoapMessage;
  storedAt: number;
  maxAge: number;
}

/** Options that never take part in the key at a group proxy, whatever their number says. */
function excluded(num: number): boolean {
  const names = ['Multicast-Timeout', 'Reply-From', 'Group-ETag', 'Response-Forwarding'];
  if (names.some((n) => optionDef(n)?.number === num)) return true;
  return num === OPT.PROXY_URI || num === OPT.PROXY_SCHEME || num === OPT.URI_HOST || num === OPT.URI_PORT || num === OPT.HOP_LIMIT || num === OPT.OBSERVE || num === OPT.NO_RESPONSE;
}

/** The request part of the Cache-Key (RFC 7252 §5.6.2), independent of the group authority. */
export function requestKey(code: number, options: CoapOption[], payload: Buffer): string {
  const h = createHash('sha256');
  h.update(Buffer.from([code]));
  for (const o of options) {
    if (isNoCacheKey(o.number) || excluded(o.number)) continue;
    const len = Buffer.alloc(6);
    len.writeUInt16BE(o.number, 0);
    len.writeUInt32BE(o.value.length, 2);
    h.update(len);
    h.update(o.value);
  }
  if (code === CODES.FETCH) h.update(payload); // RFC 8132 §2: the FETCH payload is part of the key
  return h.digest('base64url');
}

export function isCacheableRequest(code: number): boolean {
  return code === CODES.GET || code === CODES.FETCH;
}

/** RFC 7252 §5.6: 2.05 (and 2.03 as a validation) are cacheable; Max-Age 0 means "do not reuse". */
export function isCacheableResponse(m: CoapMessage): boolean {
  return m.code === CODES.CONTENT && maxAgeOf(m) > 0;
}

/**
 * Max-Age in seconds (RFC 7252 §5.10.5: default 60). A value longer than the option's 4 bytes (§5.10) is malformed:
 * it counts as 0, so that such a response is never cached or replayed as fresh (and never throws in the relay path).
 */
export function maxAgeOf(m: CoapMessage): number {
  const v = getOption(m, OPT.MAX_AGE);
  if (v === undefined) return 60;
  return v.length > 4 ? 0 : decodeUint(v);
}

export class ProxyCache {
  /** request key -> server "addr|port" -> entry */
  private readonly entries = new Map<string, Map<string, CachedResponse>>();
  private size = 0;

  constructor(
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get count(): number {
    return this.size;
  }

  /** Store (replacing that server's previous response "as they come", §7). */
  store(key: string, server: string, message: CoapMessage): void {
    if (!isCacheableResponse(message)) {
      // A non-cacheable answer from a server replaces nothing, but a stale entry of that server is dropped.
      this.remove(key, server);
      return;
    }
    let perServer = this.entries.get(key);
    if (!perServer) this.entries.set(key, (perServer = new Map()));
    if (!perServer.has(server)) this.size++;
    perServer.set(server, { server, message, storedAt: this.now(), maxAge: maxAgeOf(message) });
    if (this.size > this.maxEntries) this.evictOldest();
  }

  /** Residual lifetime in seconds (<= 0: stale). */
  residual(e: CachedResponse): number {
    return e.maxAge - (this.now() - e.storedAt) / 1000;
  }

  /** Fresh entries for a request key, with the Max-Age of each adjusted to its residual lifetime (RFC 7252 §5.6.1). */
  fresh(key: string): CachedResponse[] {
    const perServer = this.entries.get(key);
    if (!perServer) return [];
    const out: CachedResponse[] = [];
    for (const [server, e] of perServer) {
      const left = this.residual(e);
      if (left <= 0) {
        this.remove(key, server);
        continue;
      }
      out.push(e);
    }
    return out;
  }

  /** A copy of a cached response with Max-Age set to the residual lifetime. */
  served(e: CachedResponse): CoapMessage {
    const left = Math.max(0, Math.floor(this.residual(e)));
    const options = e.message.options.filter((o) => o.number !== OPT.MAX_AGE);
    options.push({ number: OPT.MAX_AGE, value: encodeUint(left) });
    options.sort((a, b) => a.number - b.number);
    return { ...e.message, options };
  }

  /**
   * §7.3: J (the fresh entries for this request) is complete when it has one for every current member; its
   * entity-tag changes whenever any entry changes. Undefined when J is not complete.
   */
  groupEtag(key: string, members: string[]): Buffer | undefined {
    if (!members.length) return undefined;
    const fresh = new Map(this.fresh(key).map((e) => [e.server, e]));
    if (!members.every((m) => fresh.has(m))) return undefined;
    const h = createHash('sha256');
    for (const m of [...members].sort()) {
      const e = fresh.get(m)!;
      h.update(m);
      h.update(String(e.storedAt));
      h.update(Buffer.from([e.message.code]));
      h.update(e.message.payload);
    }
    return h.digest().subarray(0, 8);
  }

  private evictOldest(): void {
    let oldest: { key: string; server: string; at: number } | undefined;
    for (const [key, m] of this.entries) for (const [server, e] of m) if (!oldest || e.storedAt < oldest.at) oldest = { key, server, at: e.storedAt };
    if (!oldest) return;
    this.remove(oldest.key, oldest.server);
  }

  private remove(key: string, server: string): void {
    const perServer = this.entries.get(key);
    if (!perServer || !perServer.delete(server)) return;
    this.size--;
    if (perServer.size === 0) this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
    this.size = 0;
  }
}
