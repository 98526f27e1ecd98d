// Duplicate detection for Non-confirmable responses (RFC 7252 §4.5: "SHOULD silently ignore any duplicated
// Non-confirmable message"), kept per source as a window of its last responses instead of one cache entry per
// message. A response needs no reply kept for its duplicates (unlike a CON, whose ACK is repeated), and a proxy or a
// group client receives them at the rate of its group's servers: one entry per message, held for NON_LIFETIME, was
// an object, a key string and a token string per datagram that lived long enough to reach V8's old generation and
// cost a major collection each time the cap was reached (docs/BENCHMARKS.md §6.6.3). A window is one Float64Array per
// source and nothing per message.
//
// What is remembered: for each of the last responses of a source, its Message ID, a 32-bit fingerprint of its token
// and code (a peer whose Message IDs wrapped sends a new message with an old ID but another token, as in the
// endpoint's duplicate cache), and when it came; a match younger than NON_LIFETIME is a duplicate. A window holds
// NON_WINDOW responses; a busy source (one that overwrites a response younger than NON_LIFETIME) gets one of
// BUSY_WINDOW, up to `maxBusySources` of them: a proxy's client hears every relayed response from one address, a
// proxy hears each server once per exchange. Only responses that matched one of our exchanges are recorded (the
// caller checks first), so datagrams with made-up tokens create nothing. Sources are capped (the first recorded go
// first). A duplicate delayed behind a full window of newer responses of the same source, or whose source was dropped
// at the cap, is processed again: the bound this trades for.

import { RemoteAddress } from '../transport/udp-transport';
import { EndpointMap } from './endpoint-map';

/** NON responses remembered per source; BUSY_WINDOW for a busy one. */
export const NON_WINDOW = 32;
export const BUSY_WINDOW = 512;

/** A 32-bit fingerprint of token and code (FNV-1a over the code, the token's length and bytes). */
function fingerprint(token: Buffer, code: number): number {
  let h = Math.imul(0x811c9dc5 ^ code, 0x01000193);
  h = Math.imul(h ^ token.length, 0x01000193);
  for (let i = 0; i < token.length; i++) h = Math.imul(h ^ token[i], 0x01000193);
  return h >>> 0;
}

/** [2i]: Message ID × 2^32 + fingerprint (exact in a double; -1 = empty), [2i + 1]: when it came (ms). */
interface Window {
  slots: Float64Array;
  /** the slot pair to write next */
  next: number;
}

export class RecentNonResponses {
  private readonly bySource = new EndpointMap<Window>();
  private busy = 0;
  private lastSweep = 0;
  /** sources dropped at the cap */
  evicted = 0;

  constructor(
    private readonly lifetimeMs: number,
    private readonly maxSources = 10_000,
    private readonly maxBusySources = 256,
  ) {}

  /** Sources with a window. */
  get size(): number {
    return this.bySource.size;
  }

  /** Was this response (source, Message ID, token, code) recorded less than NON_LIFETIME ago? Records nothing. */
  has(remote: RemoteAddress, messageId: number, token: Buffer, code: number, now: number): boolean {
    const w = this.bySource.get(remote);
    return w !== undefined && this.find(w, messageId * 0x1_0000_0000 + fingerprint(token, code), now);
  }

  /** has(), and if not, the response is recorded. */
  seen(remote: RemoteAddress, messageId: number, token: Buffer, code: number, now: number): boolean {
    let w = this.bySource.get(remote);
    const key = messageId * 0x1_0000_0000 + fingerprint(token, code);
    if (w) {
      if (this.find(w, key, now)) return true;
    } else {
      // a new source: now and then (at most four times per NON_LIFETIME) forget the sources gone quiet
      if (now - this.lastSweep >= this.lifetimeMs / 4) {
        this.lastSweep = now;
        this.sweep(now);
      }
      w = { slots: new Float64Array(2 * NON_WINDOW).fill(-1), next: 0 };
      this.bySource.set(remote, w);
      if (this.bySource.size > this.maxSources) this.evicted += this.bySource.deleteWhere(this.forget, 1);
    }
    let s = w.slots;
    // the oldest response is still within NON_LIFETIME: the source is busy, give it the larger window if one is left
    if (s.length === 2 * NON_WINDOW && s[w.next] >= 0 && now - s[w.next + 1] < this.lifetimeMs && this.busy < this.maxBusySources) {
      const big = new Float64Array(2 * BUSY_WINDOW).fill(-1);
      // oldest first, so that the ring order stays the age order
      big.set(s.subarray(w.next), 0);
      big.set(s.subarray(0, w.next), s.length - w.next);
      w.next = s.length;
      w.slots = s = big;
      this.busy++;
    }
    s[w.next] = key;
    s[w.next + 1] = now;
    w.next = (w.next + 2) % s.length;
    return false;
  }

  private find(w: Window, key: number, now: number): boolean {
    const s = w.slots;
    for (let i = 0; i < s.length; i += 2) if (s[i] === key && now - s[i + 1] < this.lifetimeMs) return true;
    return false;
  }

  /** A window is going: a busy one gives its place back (a deleteWhere() predicate, always true). */
  private readonly forget = (w: Window): boolean => {
    if (w.slots.length > 2 * NON_WINDOW) this.busy--;
    return true;
  };

  /** Forget sources none of whose remembered responses is younger than NON_LIFETIME. */
  sweep(now: number): void {
    // the newest response of a window is in the slot pair before `next`
    const newest = (w: Window) => w.slots[((w.next - 2 + w.slots.length) % w.slots.length) + 1];
    this.bySource.deleteWhere((w) => now - newest(w) >= this.lifetimeMs && this.forget(w));
  }
}
