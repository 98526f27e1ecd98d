// The client's store for Group-ETag revalidation through a proxy (groupcomm-proxy-07 §7.3, §7.4): per group request,
// the responses the client accepted (verified end to end when the exchange is protected), one per server, with their
// Max-Age freshness (RFC 7252 §5.6.1), and the one Group-ETag the proxy gave that set. A 2.03 (Valid) from the proxy
// with that Group-ETag refreshes each stored response as RFC 7252 §5.9.1.3 says, and the client reuses them.
// Bounded: at most `maxSets` request keys, `maxResponses` responses in a set and `maxBytes` in all, least recently
// used sets going first; a set larger than the bounds is not stored at all.

import { CoapMessage, CoapOption } from '../coap/message';
import { OPT, decodeUint, encodeUint } from '../coap/options';
import type { Origin } from '../group/group-client';
import { Clock, systemClock } from '../messaging/parameters';

/** RFC 7252 §5.10.5: Max-Age when the option is absent. */
export const DEFAULT_MAX_AGE = 60;

export interface StoredResponse {
  /** the server that produced it (from Reply-From, and for a protected exchange the member that verified it) */
  origin: Origin;
  /** the response as it was accepted (after every OSCORE layer came off) */
  message: CoapMessage;
  /** clock ms when it was stored or last revalidated */
  storedAt: number;
  /** seconds of freshness from storedAt (RFC 7252 §5.6.1) */
  maxAge: number;
}

export interface StoredSet {
  tag: Buffer;
  responses: StoredResponse[];
  bytes: number;
}

export interface GroupEtagStoreOptions {
  /** request keys (group requests) kept (default 32) */
  maxSets?: number;
  /** responses in one set (default 256); an exchange with more is not stored */
  maxResponses?: number;
  /** bytes of all stored responses: payloads and option values (default 1 MiB) */
  maxBytes?: number;
  clock?: Clock;
}

/** Max-Age of a message in seconds: the option's value, or 60 when absent (RFC 7252 §5.10.5); undefined if malformed. */
export function maxAgeSeconds(m: { options: CoapOption[] }): number | undefined {
  const o = m.options.find((x) => x.number === OPT.MAX_AGE);
  if (!o) return DEFAULT_MAX_AGE;
  return o.value.length <= 4 ? decodeUint(o.value) : undefined;
}

function sizeOf(m: CoapMessage): number {
  let n = m.payload.length + m.token.length;
  for (const o of m.options) n += o.value.length + 4;
  return n;
}

export class GroupEtagStore {
  /** Map order is recency: the first key is the least recently used. */
  private readonly sets = new Map<string, StoredSet>();
  private total = 0;
  readonly maxSets: number;
  readonly maxResponses: number;
  readonly maxBytes: number;
  readonly clock: Clock;

  constructor(o: GroupEtagStoreOptions = {}) {
    this.maxSets = o.maxSets ?? 32;
    this.maxResponses = o.maxResponses ?? 256;
    this.maxBytes = o.maxBytes ?? 1 << 20;
    this.clock = o.clock ?? systemClock;
    if (!(this.maxSets >= 1 && this.maxResponses >= 1 && this.maxBytes >= 1)) throw new RangeError('GroupEtagStore bounds must be at least 1');
  }

  /** Sets held. */
  get size(): number {
    return this.sets.size;
  }

  /** Bytes held (payloads, tokens and option values). */
  get bytes(): number {
    return this.total;
  }

  /** The Group-ETag to offer for a request key (GCP-07 §7.3: "one or more"; this store holds one per key). */
  tagFor(key: string): Buffer | undefined {
    return this.sets.get(key)?.tag;
  }

  /** A copy of the stored set, for inspection; does not count as a use. */
  peek(key: string): StoredSet | undefined {
    const s = this.sets.get(key);
    return s ? { tag: s.tag, bytes: s.bytes, responses: s.responses.map((r) => ({ ...r })) } : undefined;
  }

  /**
   * Whether every response of the set is still fresh (RFC 7252 §5.6.1: age below Max-Age). A stale set is kept: it
   * is what validation is for (RFC 7252 §5.6.2).
   */
  isFresh(key: string): boolean {
    const s = this.sets.get(key);
    if (!s) return false;
    const now = this.clock.now();
    return s.responses.every((r) => now - r.storedAt < r.maxAge * 1000);
  }

  /**
   * Keep `responses` (at most one per server: the last one) as the set named by `tag`, replacing what the key had.
   * False (and the key forgotten) when the set exceeds the bounds.
   */
  put(key: string, tag: Buffer, responses: { origin: Origin; message: CoapMessage }[]): boolean {
    this.delete(key);
    const byServer = new Map<string, { origin: Origin; message: CoapMessage }>();
    for (const r of responses) byServer.set(r.origin.uri, r);
    if (byServer.size === 0 || byServer.size > this.maxResponses) return false;
    const now = this.clock.now();
    const kept: StoredResponse[] = [];
    let bytes = tag.length + key.length;
    for (const r of byServer.values()) {
      const maxAge = maxAgeSeconds(r.message) ?? 0;
      // a copy: the caller's objects (delivered to an application) may change later
      const message: CoapMessage = { ...r.message, options: r.message.options.map((o) => ({ number: o.number, value: Buffer.from(o.value) })), payload: Buffer.from(r.message.payload), token: Buffer.from(r.message.token) };
      kept.push({ origin: { ...r.origin }, message, storedAt: now, maxAge });
      bytes += sizeOf(message) + r.origin.uri.length;
    }
    if (bytes > this.maxBytes) return false;
    this.sets.set(key, { tag: Buffer.from(tag), responses: kept, bytes });
    this.total += bytes;
    while (this.sets.size > this.maxSets || this.total > this.maxBytes) this.delete(this.sets.keys().next().value!);
    return true;
  }

  /**
   * GCP-07 §7.3: the proxy's 2.03 says the set named by `tag` is current. Each stored response is updated as RFC 7252
   * §5.9.1.3 says: its Max-Age becomes the 2.03's (explicit, or the default 60 s), and the Safe-to-Forward options the
   * 2.03 carries (here: its one Group-ETag, and Max-Age) replace the stored ones. Returns the refreshed responses, or
   * undefined when this key holds no set with that tag.
   */
  revalidate(key: string, tag: Buffer, maxAge: number, groupEtagNumber: number): StoredResponse[] | undefined {
    const s = this.sets.get(key);
    if (!s || !s.tag.equals(tag)) return undefined;
    // most recently used now
    this.sets.delete(key);
    this.sets.set(key, s);
    const now = this.clock.now();
    for (const r of s.responses) {
      r.storedAt = now;
      r.maxAge = maxAge;
      r.message = { ...r.message, options: refreshedOptions(r.message, maxAge, { number: groupEtagNumber, value: s.tag }) };
    }
    return s.responses.map((r) => ({ ...r }));
  }

  delete(key: string): void {
    const s = this.sets.get(key);
    if (!s) return;
    this.sets.delete(key);
    this.total -= s.bytes;
  }

  clear(): void {
    this.sets.clear();
    this.total = 0;
  }
}

/** Options to put on a revalidated response: the 2.03's Max-Age and Group-ETag (RFC 7252 §5.9.1.3). */
export function refreshedOptions(stored: CoapMessage, maxAge: number, groupEtag: CoapOption): CoapOption[] {
  const opts = stored.options.filter((o) => o.number !== OPT.MAX_AGE && o.number !== groupEtag.number);
  opts.push({ number: OPT.MAX_AGE, value: encodeUint(maxAge) }, groupEtag);
  return opts.sort((a, b) => a.number - b.number);
}
