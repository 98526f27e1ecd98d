// The NON messages we sent that a RST may still reject (RFC 7252 §4.3; e.g. an observer that forgot its observation,
// RFC 7641 §3.6, or a proxy's client that rejects a relayed response): Message ID and destination, for NON_LIFETIME,
// among the last `capacity` such messages sent. A proxy records one for every response it relays, so the table keeps
// them in a ring of parallel arrays, found through a table of buckets indexed by the Message ID's low bits (as many
// buckets as the ring has slots, rounded up to a power of two; each holds the newest slot whose ID falls in it, the
// older ones chained), no Map and no string. A record is no object of its own: an entry per relayed response that
// lived NON_LIFETIME reached V8's old generation and was paid for in major collections (docs/BENCHMARKS.md §6.6.3),
// and the Map from Message ID that came next cost a hash lookup and an entry per record (§6.6.4).
//
// The n-th record sent lives in slot n mod the ring's size, so a record is forgotten exactly when `capacity` newer
// ones were sent (or it was taken by its RST, or it expired): no rewrite when a RST leaves a hole. The ring starts
// small and doubles up to `capacity`; records expire in the order they were sent, so expiry walks from the oldest.

import { RemoteAddress } from '../transport/udp-transport';

export class NonResetTable {
  private cap = 0;
  private mids = new Uint16Array(0);
  private ports = new Uint16Array(0);
  private expires = new Float64Array(0);
  /** the sequence number of the record in the slot */
  private seqs = new Float64Array(0);
  /** the next older slot in the same bucket, or -1 */
  private older = new Int32Array(0);
  /** bucket (Message ID & mask) → newest slot in it, or -1 */
  private buckets = new Int32Array(0);
  private mask = 0;
  private addresses: (string | undefined)[] = [];
  private handlers: ((() => void) | undefined)[] = [];
  /** sequence number of the next record */
  private nextSeq = 0;
  /** no record older than this one is live */
  private oldestSeq = 0;
  private live = 0;

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.live;
  }

  /** Remember a NON to `remote` with `messageId` until `expires`; the one sent `capacity` records ago is forgotten. */
  add(messageId: number, remote: RemoteAddress, onReset: () => void, expires: number): void {
    if (this.capacity <= 0) return;
    const seq = this.nextSeq++;
    // the slot's record was sent `cap` records ago: it may stay only if the ring can still grow
    if (this.cap === 0 || (this.handlers[seq % this.cap] !== undefined && this.cap < this.capacity)) this.grow();
    const i = seq % this.cap;
    if (this.handlers[i] !== undefined) this.remove(i);
    this.place(i, seq, messageId, remote.port, remote.address, onReset, expires);
    this.oldestSeq = Math.max(this.oldestSeq, seq - this.cap + 1);
  }

  /** The handler of the live record for (Message ID, source), which is forgotten; undefined if none. */
  take(messageId: number, remote: RemoteAddress, now: number): (() => void) | undefined {
    if (this.cap === 0) return undefined;
    for (let i = this.buckets[messageId & this.mask]; i >= 0; i = this.older[i]) {
      if (this.mids[i] !== messageId || this.ports[i] !== remote.port || this.addresses[i] !== remote.address) continue;
      const h = this.handlers[i];
      this.remove(i);
      return this.expires[i] > now ? h : undefined;
    }
    return undefined;
  }

  /** Forget the records that expired (they are the oldest). */
  sweep(now: number): void {
    while (this.live > 0 && this.oldestSeq < this.nextSeq) {
      const i = this.oldestSeq % this.cap;
      if (this.handlers[i] !== undefined && this.seqs[i] === this.oldestSeq) {
        if (this.expires[i] > now) return;
        this.remove(i);
      }
      this.oldestSeq++;
    }
  }

  clear(): void {
    this.buckets.fill(-1);
    this.addresses.fill(undefined);
    this.handlers.fill(undefined);
    this.live = 0;
    this.oldestSeq = this.nextSeq;
  }

  private place(i: number, seq: number, messageId: number, port: number, address: string, onReset: () => void, expires: number): void {
    this.mids[i] = messageId;
    this.ports[i] = port;
    this.addresses[i] = address;
    this.handlers[i] = onReset;
    this.expires[i] = expires;
    this.seqs[i] = seq;
    const b = messageId & this.mask;
    this.older[i] = this.buckets[b];
    this.buckets[b] = i;
    this.live++;
  }

  private remove(i: number): void {
    const b = this.mids[i] & this.mask;
    if (this.buckets[b] === i) this.buckets[b] = this.older[i];
    else {
      let j = this.buckets[b];
      while (j >= 0 && this.older[j] !== i) j = this.older[j];
      if (j >= 0) this.older[j] = this.older[i];
    }
    this.addresses[i] = undefined;
    this.handlers[i] = undefined;
    this.live--;
  }

  /** Double the ring (up to the capacity); each live record moves to its sequence number's slot in the new ring. */
  private grow(): void {
    const old = { cap: this.cap, mids: this.mids, ports: this.ports, expires: this.expires, seqs: this.seqs, addresses: this.addresses, handlers: this.handlers };
    const cap = Math.min(this.capacity, Math.max(16, this.cap * 2));
    this.cap = cap;
    this.mids = new Uint16Array(cap);
    this.ports = new Uint16Array(cap);
    this.expires = new Float64Array(cap);
    this.seqs = new Float64Array(cap);
    this.older = new Int32Array(cap);
    // a power of two at least the ring's size (at most 65,536: one bucket per Message ID)
    const nb = Math.min(65536, 2 ** Math.ceil(Math.log2(cap)));
    this.buckets = new Int32Array(nb).fill(-1);
    this.mask = nb - 1;
    this.addresses = new Array<string | undefined>(cap).fill(undefined);
    this.handlers = new Array<(() => void) | undefined>(cap).fill(undefined);
    this.live = 0;
    // oldest first, so that each bucket's chain runs from the newest to the oldest again
    const live: number[] = [];
    for (let i = 0; i < old.cap; i++) if (old.handlers[i] !== undefined) live.push(i);
    live.sort((a, b) => old.seqs[a] - old.seqs[b]);
    for (const i of live) this.place(old.seqs[i] % cap, old.seqs[i], old.mids[i], old.ports[i], old.addresses[i]!, old.handlers[i]!, old.expires[i]);
  }
}
