// One timer for many deadlines: the CON retransmission timeouts of RFC 7252 §4.2, the wait for a response
// (§5.2.2), and the deadline of a group request (groupcomm-bis §3.1). A binary min-heap on the due time with the
// entries' own fields as heap slots, and a single Clock timer armed for the earliest. A Node Timeout and a closure per
// message were a large part of what a pending exchange holds and of the garbage per request (docs/BENCHMARKS.md §6).

import { Clock } from './parameters';

const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the queue keeps in an entry (the entry is the caller's own object). */
export interface Deadline {
  /** clock ms at which the entry falls due; written by the queue */
  dueAt?: number;
  /** place in the heap, -1 (or undefined) when not queued; written by the queue */
  dueSlot?: number;
}

export class DeadlineQueue<T extends Deadline> {
  private readonly heap: T[] = [];
  private timer: unknown = undefined;
  private timerAt = Infinity;

  constructor(
    private readonly clock: Clock,
    /** called for every entry that fell due, after it left the queue */
    private readonly fire: (entry: T) => void,
  ) {}

  get size(): number {
    return this.heap.length;
  }

  /** The entry due first (undefined when empty). */
  peek(): T | undefined {
    return this.heap[0];
  }

  /** A copy of the queued entries, in no particular order. */
  entries(): T[] {
    return this.heap.slice();
  }

  has(e: T): boolean {
    return e.dueSlot !== undefined && e.dueSlot >= 0 && this.heap[e.dueSlot] === e;
  }

  /** Queue `e` to fall due `ms` from now (re-queued if it is queued already). */
  add(e: T, ms: number): void {
    // A NaN would sit at the root for ever and block every entry behind it.
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`deadline must be a finite, non-negative number of ms, not ${ms}`);
    if (this.has(e)) this.remove(e);
    e.dueAt = this.clock.now() + ms;
    e.dueSlot = this.heap.length;
    this.heap.push(e);
    this.siftUp(e.dueSlot);
    this.arm();
  }

  /** Take `e` out (nothing happens if it is not queued). */
  remove(e: T): void {
    if (!this.has(e)) return;
    const h = this.heap;
    const i = e.dueSlot!;
    e.dueSlot = -1;
    const last = h.pop()!;
    if (last !== e) {
      h[i] = last;
      last.dueSlot = i;
      this.siftDown(i);
      this.siftUp(last.dueSlot);
    }
    // A timer armed for an entry that left stays: it fires, finds nothing due and re-arms (cheaper than re-arming on
    // every removal). Only an empty queue clears it, so that nothing keeps the process alive.
    if (h.length === 0) this.arm();
  }

  /** Empty the queue and clear the timer without firing anything. */
  clear(): void {
    for (const e of this.heap) e.dueSlot = -1;
    this.heap.length = 0;
    this.arm();
  }

  private siftUp(i: number): void {
    const h = this.heap;
    const x = h[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent].dueAt! <= x.dueAt!) break;
      h[i] = h[parent];
      h[i].dueSlot = i;
      i = parent;
    }
    h[i] = x;
    x.dueSlot = i;
  }

  private siftDown(i: number): void {
    const h = this.heap;
    const x = h[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const c = l + 1 < h.length && h[l + 1].dueAt! < h[l].dueAt! ? l + 1 : l;
      if (h[c].dueAt! >= x.dueAt!) break;
      h[i] = h[c];
      h[i].dueSlot = i;
      i = c;
    }
    h[i] = x;
    x.dueSlot = i;
  }

  /** Arm the timer for the earliest entry, or clear it when the queue is empty. */
  private arm(): void {
    const top = this.heap[0];
    if (!top) {
      if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== undefined && this.timerAt <= top.dueAt!) return; // fires in time (and re-arms then)
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timerAt = top.dueAt!;
    // Node's timers take at most 2^31-1 ms; a later entry is re-armed when that timer fires.
    this.timer = this.clock.setTimeout(this.onTimer, Math.min(MAX_TIMER_MS, Math.max(0, top.dueAt! - this.clock.now())));
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = this.clock.now();
    // A timer may fire a little before the clock reads the due time: what is not due yet is re-armed below.
    // Entries added by `fire` for now or earlier run in this loop too, in due order.
    try {
      while (this.heap.length > 0 && this.heap[0].dueAt! <= now) {
        const e = this.heap[0];
        this.remove(e);
        this.fire(e);
      }
    } finally {
      // a throwing `fire` (e.g. a user's 'end' listener) must not strand the entries behind it
      this.arm();
    }
  };
}
