// Message IDs per destination endpoint (RFC 7252 §4.4). "The same Message ID MUST NOT be reused (in the
// communication with the same endpoint) within the EXCHANGE_LIFETIME". One counter for every peer, the simplest
// strategy §4.4 describes, allows at most 65,536 messages per EXCHANGE_LIFETIME (about 265 per second) in all: a
// group proxy that relays 4,000 responses per second to 40 clients (the soak of docs/BENCHMARKS.md §4c) would send
// each client the same Message ID again every 16 s, and a peer's duplicate detection (§4.5) may then drop a new
// response as a duplicate of an old one. So each destination (address and port; a multicast group is one
// destination) has its own counter, which §4.4 names as the strategy for endpoints "dealing with large numbers of
// transactions". A counter starts at a random value and lives while it is used; one unused for EXCHANGE_LIFETIME
// is forgotten, since none of its IDs can still be confused. The number of counters is capped (a proxy sends to
// every host that writes to it): at the cap the least recently used go first, down to seven eighths of the cap, and
// should such a destination come back within EXCHANGE_LIFETIME its new random start may meet one of its recent IDs
// (counted in `evictions`).
//
// A group member receives both what we send to the group and what we send to it alone, from the same source
// endpoint, and its duplicate detection (§4.5) keys on that source and the ID. So the two kinds of counter never
// draw the same ID: multicast destinations count in the upper half of the ID space (top bit set), unicast ones in
// the lower half. That leaves 32,768 IDs per destination and EXCHANGE_LIFETIME (about 132 messages per second to one
// destination, for 247 s) before an ID comes round again.

import { isMulticastAddress } from '../coap/uri';
import { RemoteAddress } from '../transport/udp-transport';
import { EndpointMap } from './endpoint-map';

interface Counter {
  /** the next value, 15 bits */
  next: number;
  /** 0x8000 for a multicast destination, else 0 */
  half: number;
  lastUsed: number;
}

export class MessageIds {
  private readonly counters = new EndpointMap<Counter>();
  /** counters dropped at the cap while still within EXCHANGE_LIFETIME of their last use */
  evictions = 0;

  constructor(
    private readonly lifetimeMs: number,
    private readonly max: number,
  ) {
    if (!(max >= 1)) throw new RangeError('the cap on Message ID counters must be at least 1');
  }

  /** Destinations with a counter. */
  get size(): number {
    return this.counters.size;
  }

  /** The next Message ID towards `remote`. */
  next(remote: RemoteAddress, now: number): number {
    let c = this.counters.get(remote);
    if (!c || now - c.lastUsed >= this.lifetimeMs) {
      if (!c && this.counters.size >= this.max) this.makeRoom(now);
      c = { next: Math.floor(Math.random() * 0x8000), half: isMulticastAddress(remote.address) ? 0x8000 : 0, lastUsed: now };
      this.counters.set(remote, c);
    }
    c.lastUsed = now;
    const id = c.next;
    c.next = (id + 1) & 0x7fff;
    return id | c.half;
  }

  /** Forget counters unused for EXCHANGE_LIFETIME. */
  sweep(now: number): void {
    this.counters.deleteWhere((c) => now - c.lastUsed >= this.lifetimeMs);
  }

  clear(): void {
    this.counters.clear();
  }

  /**
   * At the cap: forget what expired, then, if that left more than seven eighths of the cap, the least recently used
   * down to seven eighths, so that this scan is paid once per max/8 new destinations at most.
   */
  private makeRoom(now: number): void {
    this.sweep(now);
    const keep = Math.floor((this.max * 7) / 8);
    const drop = this.counters.size - keep;
    if (drop <= 0) return;
    const used = Array.from(this.counters.values(), (c) => c.lastUsed).sort((a, b) => a - b);
    const threshold = used[drop - 1];
    this.evictions += this.counters.deleteWhere((c) => c.lastUsed <= threshold, drop);
  }
}
