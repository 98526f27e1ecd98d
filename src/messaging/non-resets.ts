// The NON messages we sent that a RST may still reject (RFC 7252 §4.3; e.g. an observer that forgot its observation,
// RFC 7641 §3.6, or a proxy's client that rejects a relayed response): Message ID and destination, for NON_LIFETIME,
// the last `capacity` of them. A proxy records one for every response it relays, so the table keeps them in a ring of
// parallel arrays, found through a map from Message ID (a small integer key, no string) to the newest slot with that
// ID; slots with the same ID to other destinations are chained. A record is no object of its own: an entry per
// relayed response that lived NON_LIFETIME reached V8's old generation and was paid for in major collections
// (docs/BENCHMARKS.md §6.6.3). Entries expire in the order they were written, so expiry is a walk from the oldest.

import { RemoteAddress } from '../transport/udp-transport';

export class NonResetTable {
  private cap = 0;
  private mids = new Uint16Array(0);
  private ports = new Uint16Array(0);
  private expires = new Float64Array(0);
  /** the next older slot with the same Message ID, or -1 */
  private older = new Int32Array(0);
  private addresses: (string | undefined)[] = [];
  private handlers: ((() => void) | undefined)[] = [];
  /** Message ID → newest slot with it */
  private readonly newest = new Map<number, number>();
  /** slot the next record is written to */
  private next = 0;
  /** every live record is in the slots from here going round to `next` (there may be holes) */
  private oldest = 0;
  private live = 0;

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.live;
  }

  /** Remember a NON to `remote` with `messageId` until `expires`; beyond the capacity the oldest is forgotten. */
  add(messageId: number, remote: RemoteAddress, onReset: () => void, expires: number): void {
    if (this.capacity <= 0) return;
    // a record taken out leaves a hole; the oldest live record is the first one from `oldest`
    while (this.live > 0 && this.handlers[this.oldest] === undefined) this.oldest = (this.oldest + 1) % this.cap;
    // the slots are all in use (some may be holes): grow, or at the capacity close the holes
    if (this.cap === 0 || (this.handlers[this.next] !== undefined && (this.cap < this.capacity || this.live < this.cap))) this.grow();
    const i = this.next;
    if (this.handlers[i] !== undefined) {
      // capacity records live: the slot holds the oldest, which goes
      this.remove(i);
      this.oldest = (i + 1) % this.cap;
    } else if (this.live === 0) this.oldest = i;
    this.mids[i] = messageId;
    this.ports[i] = remote.port;
    this.addresses[i] = remote.address;
    this.handlers[i] = onReset;
    this.expires[i] = expires;
    this.older[i] = this.newest.get(messageId) ?? -1;
    this.newest.set(messageId, i);
    this.live++;
    this.next = (i + 1) % this.cap;
  }

  /** The handler of the live record for (Message ID, source), which is forgotten; undefined if none. */
  take(messageId: number, remote: RemoteAddress, now: number): (() => void) | undefined {
    for (let i = this.newest.get(messageId) ?? -1; i >= 0; i = this.older[i]) {
      if (this.ports[i] !== remote.port || this.addresses[i] !== remote.address) continue;
      const h = this.handlers[i];
      this.remove(i);
      return this.expires[i] > now ? h : undefined;
    }
    return undefined;
  }

  /** Forget the records that expired (they are the oldest). */
  sweep(now: number): void {
    while (this.live > 0) {
      const i = this.oldest;
      if (this.handlers[i] !== undefined) {
        if (this.expires[i] > now) return;
        this.remove(i);
      }
      this.oldest = (i + 1) % this.cap;
    }
  }

  clear(): void {
    this.newest.clear();
    this.addresses.fill(undefined);
    this.handlers.fill(undefined);
    this.live = 0;
    this.oldest = this.next;
  }

  private remove(i: number): void {
    const id = this.mids[i];
    const head = this.newest.get(id);
    if (head === i) {
      if (this.older[i] >= 0) this.newest.set(id, this.older[i]);
      else this.newest.delete(id);
    } else {
      let j = head ?? -1;
      while (j >= 0 && this.older[j] !== i) j = this.older[j];
      if (j >= 0) this.older[j] = this.older[i];
    }
    this.addresses[i] = undefined;
    this.handlers[i] = undefined;
    this.live--;
  }

  /**
   * Double the ring (up to the capacity), or at the capacity rewrite it without holes; the records keep their order,
   * oldest first.
   */
  private grow(): void {
    const order: number[] = [];
    for (let n = 0, i = this.oldest; n < this.cap; n++, i = (i + 1) % this.cap) if (this.handlers[i] !== undefined) order.push(i);
    const cap = Math.min(this.capacity, Math.max(16, this.cap * 2));
    const [mids, ports, expires, addresses, handlers] = [this.mids, this.ports, this.expires, this.addresses, this.handlers];
    this.cap = cap;
    this.mids = new Uint16Array(cap);
    this.ports = new Uint16Array(cap);
    this.expires = new Float64Array(cap);
    this.older = new Int32Array(cap);
    this.addresses = new Array<string | undefined>(cap).fill(undefined);
    this.handlers = new Array<(() => void) | undefined>(cap).fill(undefined);
    this.newest.clear();
    this.live = 0;
    this.next = 0;
    this.oldest = 0;
    for (const i of order) this.add(mids[i], { address: addresses[i]!, port: ports[i] }, handlers[i]!, expires[i]);
  }
}
