// Message IDs per destination endpoint (RFC 7252 §4.4). "The same Message ID MUST NOT be reused (in the
// communication with the same endpoint) within the EXCHANGE_LIFETIME". One counter for every peer, the simplest
// strategy §4.4 describes, allows at most 65,536 messages per EXCHANGE_LIFETIME (about 265 per second) in all: a
// group proxy that relays 4,000 responses per second to 40 clients (the soak of docs/BENCHMARKS.md §4c) would send
// each client the same Message ID again every 16 s, and a peer's duplicate detection (§4.5) may then drop a new
// response as a duplicate of an old one. So each destination (address and port; a multicast group is one
// destination) has its own counter, which §4.4 names as the strategy for endpoints "dealing with large numbers of
// transactions". A counter starts at a random value and lives while it is used; one unused for EXCHANGE_LIFETIME
// is forgotten, since none of its IDs can still be confused. The number of counters is capped (a proxy sends to
// every host that writes to it): at the cap the least recently used eighth goes, and should such a destination come
// back within EXCHANGE_LIFETIME its new random start may meet one of its recent IDs (counted in `evictions`).

import { RemoteAddress } from '../transport/udp-transport';

interface Counter {
  next: number;
  lastUsed: number;
}

export class MessageIds {
  private readonly counters = new Map<string, Counter>();
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
    const key = `${remote.port}|${remote.address}`;
    let c = this.counters.get(key);
    if (!c || now - c.lastUsed >= this.lifetimeMs) {
      if (!c && this.counters.size >= this.max) this.makeRoom(now);
      c = { next: Math.floor(Math.random() * 0x10000), lastUsed: now };
      this.counters.set(key, c);
    }
    c.lastUsed = now;
    const id = c.next;
    c.next = (id + 1) & 0xffff;
    return id;
  }

  /** Forget counters unused for EXCHANGE_LIFETIME. */
  sweep(now: number): void {
    for (const [k, c] of this.counters) if (now - c.lastUsed >= this.lifetimeMs) this.counters.delete(k);
  }

  clear(): void {
    this.counters.clear();
  }

  private makeRoom(now: number): void {
    this.sweep(now);
    if (this.counters.size < this.max) return;
    // Still full of live counters: drop the least recently used eighth in one pass, so that the scan is paid once
    // per max/8 new destinations.
    const used = [...this.counters.values()].map((c) => c.lastUsed).sort((a, b) => a - b);
    const drop = Math.max(1, Math.floor(this.max / 8));
    const threshold = used[drop - 1];
    let dropped = 0;
    for (const [k, c] of this.counters) {
      if (dropped >= drop) break;
      if (c.lastUsed <= threshold) {
        this.counters.delete(k);
        dropped++;
      }
    }
    this.evictions += dropped;
  }
}
