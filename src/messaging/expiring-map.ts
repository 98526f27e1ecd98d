// A map whose entries expire: the duplicate-detection cache of RFC 7252 §4.5, the retired tokens of
// groupcomm-bis §3.1.5 and the NON messages awaiting a possible RST. Expiry is swept from a FIFO queue with a head
// index, because starting a Map iterator on every message walks over the holes deleted entries leave behind and
// gets slower the longer a server runs. Besides a cap on entries, each entry may carry a weight (e.g. the bytes it
// holds) under a cap on the total weight; beyond either cap the oldest entries go first. The queue holds the map's
// own slot objects, so an entry costs one object (not a slot plus a queue record): the duplicate cache keeps one
// per received message, and fewer live objects shorten the garbage collector's pauses (docs/BENCHMARKS.md §6).

/** An entry as the map keeps it. A value may be its own slot (see insert()), which saves an object per entry. */
export interface Slot<V> {
  readonly key: string;
  value: V;
  expires: number;
  weight: number;
}

export class ExpiringMap<V> {
  private readonly map = new Map<string, Slot<V>>();
  private queue: Slot<V>[] = [];
  private head = 0;
  private totalWeight = 0;
  /** entries removed before their time because a cap was reached */
  evicted = 0;

  constructor(
    private readonly maxEntries = Infinity,
    private readonly maxWeight = Infinity,
  ) {}

  get size(): number {
    return this.map.size;
  }

  /** Sum of the weights of the entries held. */
  get weight(): number {
    return this.totalWeight;
  }

  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (!e || e.expires <= now) return undefined;
    return e.value;
  }

  has(key: string, now: number): boolean {
    return this.get(key, now) !== undefined;
  }

  /** Add or replace; the entry lives until `expires`. Beyond maxEntries or maxWeight the oldest entries go. */
  set(key: string, value: V, expires: number, weight = 0): void {
    this.insert({ key, value, expires, weight });
  }

  /**
   * Add or replace a slot the caller made: a value that carries key, expires and weight itself (with `value`
   * pointing back at it) is stored as one object. The slot must not be inserted twice.
   */
  insert(slot: Slot<V>): void {
    const old = this.map.get(slot.key);
    if (old) {
      this.totalWeight -= old.weight;
      old.value = undefined as V;
    }
    this.map.set(slot.key, slot);
    this.totalWeight += slot.weight;
    this.queue.push(slot);
    this.enforceCaps();
  }

  /** Change the weight of an entry (e.g. a reply was stored in it); the caps are enforced again. */
  addWeight(key: string, delta: number): void {
    const e = this.map.get(key);
    if (!e) return;
    e.weight += delta;
    this.totalWeight += delta;
    this.enforceCaps();
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.totalWeight -= e.weight;
    this.map.delete(key);
    e.value = undefined as V; // the queue still points at the slot until its turn: let the value go now
  }

  /** Remove what expired by `now`. Queue entries whose key was replaced or deleted are skipped. */
  sweep(now: number): void {
    while (this.head < this.queue.length) {
      const q = this.queue[this.head];
      if (q.expires > now) {
        // Entries with a shorter lifetime may sit behind a longer one; they are dropped when their turn comes
        // (get() already treats them as gone).
        break;
      }
      this.dropHead();
    }
    this.compact();
  }

  private enforceCaps(): void {
    while ((this.map.size > this.maxEntries || this.totalWeight > this.maxWeight) && this.head < this.queue.length) {
      if (this.dropHead()) this.evicted++;
    }
    this.compact();
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** Returns true if a map entry was removed. */
  private dropHead(): boolean {
    const q = this.queue[this.head];
    // Let the slot go now, not at the next compaction: a full cache (100,000 entries) would otherwise keep up to as
    // many dead slots with their key strings, a sawtooth of about 25 MB in the proxy soak (docs/BENCHMARKS.md §4c).
    this.queue[this.head++] = undefined as unknown as Slot<V>;
    // Only remove the map entry this queue slot is (not a later replacement with the same key).
    if (this.map.get(q.key) === q) {
      this.totalWeight -= q.weight;
      this.map.delete(q.key);
      return true;
    }
    return false;
  }

  clear(): void {
    this.map.clear();
    this.queue = [];
    this.head = 0;
    this.totalWeight = 0;
  }
}
