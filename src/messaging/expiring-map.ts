// A map whose entries expire: the duplicate-detection cache of RFC 7252 §4.5 and the retired tokens of
// groupcomm-bis §3.1.5. Expiry is swept from a FIFO queue with a head index, because starting a Map iterator on
// every message walks over the holes deleted entries leave behind and gets slower the longer a server runs.

export class ExpiringMap<V> {
  private readonly map = new Map<string, { value: V; expires: number }>();
  private queue: { key: string; expires: number }[] = [];
  private head = 0;

  constructor(private readonly maxEntries = Infinity) {}

  get size(): number {
    return this.map.size;
  }

  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (!e || e.expires <= now) return undefined;
    return e.value;
  }

  has(key: string, now: number): boolean {
    return this.get(key, now) !== undefined;
  }

  /** Add or replace; the entry lives until `expires`. Beyond maxEntries the oldest entry goes. */
  set(key: string, value: V, expires: number): void {
    this.map.set(key, { value, expires });
    this.queue.push({ key, expires });
    while (this.map.size > this.maxEntries && this.head < this.queue.length) this.dropHead();
  }

  delete(key: string): void {
    this.map.delete(key);
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
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private dropHead(): void {
    const q = this.queue[this.head++];
    const e = this.map.get(q.key);
    // Only remove the map entry this queue slot stands for (not a later replacement with the same key).
    if (e && e.expires === q.expires) this.map.delete(q.key);
  }

  clear(): void {
    this.map.clear();
    this.queue = [];
    this.head = 0;
  }
}
