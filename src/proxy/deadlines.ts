// The T' timers of the pending exchanges (groupcomm-proxy-07 §5.2.1 step 6) without a timer per exchange: one clock
// timer per distinct duration. Deadlines of one duration come due in the order they were added, so each duration is
// a FIFO queue whose head arms the timer (the system clock is monotonic, src/messaging/parameters.ts; a clock that
// stepped back would make a deadline added after the step wait for the ones before it). A cancelled entry lets go of its item at
// once and is dropped when it comes due, or sooner when cancelled entries outnumber live ones (so a flood of
// exchanges that end early keeps no state of its own). A pending exchange holds one small entry instead of a
// Timeout, its callback and their context (docs/BENCHMARKS.md §6.6).

import { Clock } from '../messaging/parameters';

interface Queue<T> {
  ms: number;
  entries: Deadline<T>[];
  head: number;
  live: number;
  timer: unknown;
}

export interface Deadline<T> {
  readonly at: number;
  item: T | undefined;
  readonly queue: Queue<T>;
}

export class Deadlines<T> {
  private readonly queues = new Map<number, Queue<T>>();

  constructor(
    private readonly clock: Clock,
    private readonly due: (item: T) => void,
  ) {}

  /** Entries not cancelled and not yet due. */
  get size(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.live;
    return n;
  }

  /** `item` comes due `ms` from now. */
  add(item: T, ms: number): Deadline<T> {
    let q = this.queues.get(ms);
    if (!q) {
      q = { ms, entries: [], head: 0, live: 0, timer: undefined };
      this.queues.set(ms, q);
    }
    const d: Deadline<T> = { at: this.clock.now() + ms, item, queue: q };
    q.entries.push(d);
    q.live++;
    if (q.timer === undefined) this.arm(q);
    return d;
  }

  /** The item will not come due (a no-op if it already did or was cancelled). */
  cancel(d: Deadline<T>): void {
    if (d.item === undefined) return;
    d.item = undefined;
    const q = d.queue;
    q.live--;
    const waiting = q.entries.length - q.head;
    if (waiting > 2 * q.live + 1024) {
      q.entries = q.entries.slice(q.head).filter((e) => e.item !== undefined);
      q.head = 0;
    }
  }

  private arm(q: Queue<T>): void {
    const first = q.entries[q.head];
    if (!first) {
      this.queues.delete(q.ms);
      return;
    }
    q.timer = this.clock.setTimeout(() => this.fire(q), Math.max(0, first.at - this.clock.now()));
  }

  private fire(q: Queue<T>): void {
    q.timer = undefined;
    const now = this.clock.now();
    // Should `due` throw, the queue's timer is armed again all the same, so the other deadlines of this T' still end
    // their exchanges (groupcomm-proxy-07 §5.2.1 step 6) instead of waiting for the next add().
    try {
      while (q.head < q.entries.length && q.entries[q.head].at <= now) {
        const d = q.entries[q.head++];
        const item = d.item;
        if (item === undefined) continue;
        d.item = undefined;
        q.live--;
        this.due(item);
      }
    } finally {
      if (q.head > 1024 && q.head * 2 > q.entries.length) {
        q.entries = q.entries.slice(q.head);
        q.head = 0;
      }
      if (q.timer === undefined && this.queues.get(q.ms) === q) this.arm(q);
    }
  }

  /** Clears every timer; nothing comes due any more. */
  close(): void {
    for (const q of this.queues.values()) {
      if (q.timer !== undefined) this.clock.clearTimeout(q.timer);
      for (let i = q.head; i < q.entries.length; i++) q.entries[i].item = undefined;
    }
    this.queues.clear();
  }
}
