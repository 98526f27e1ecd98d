// Helpers for tests that run nodes in node-red-node-test-helper.

export type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Collect the messages a helper node receives until `done(messages)` says enough. */
export function collect(node: { on(event: 'input', fn: (msg: Msg) => void): void }, done: (msgs: Msg[]) => boolean): Promise<Msg[]> {
  return new Promise((resolve) => {
    const got: Msg[] = [];
    node.on('input', (msg: Msg) => {
      got.push(msg);
      if (done(got)) resolve(got);
    });
  });
}

/**
 * A Complete node watching `scope` (node ids), wired to a helper node: add these to a test flow, then
 * `doneCounts(helper.getNode(id))` counts done() calls per input message id (STYLE.md: exactly one per input).
 */
export function completeWatch(scope: string[], id = 'cmp'): Record<string, unknown>[] {
  return [
    { id, type: 'complete', scope, uncaught: false, wires: [[`${id}-out`]] },
    { id: `${id}-out`, type: 'helper' },
  ];
}

export class DoneCounter {
  readonly counts = new Map<string, number>();
  private waiters: (() => void)[] = [];

  constructor(node: { on(event: 'input', fn: (msg: Msg) => void): void }) {
    node.on('input', (msg: Msg) => {
      this.counts.set(msg._msgid, (this.counts.get(msg._msgid) ?? 0) + 1);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  get total(): number {
    let n = 0;
    for (const c of this.counts.values()) n += c;
    return n;
  }

  /** Resolves once done() was called for `n` messages in all. */
  async waitFor(n: number): Promise<void> {
    while (this.total < n) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Each of these input messages completed exactly once (checked after the event loop has drained a few turns). */
  async assertOncePer(msgIds: string[]): Promise<void> {
    await this.waitFor(msgIds.length);
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    for (const id of msgIds) {
      const c = this.counts.get(id) ?? 0;
      if (c !== 1) throw new Error(`done() called ${c} times for message ${id}`);
    }
    if (this.total !== msgIds.length) throw new Error(`done() called ${this.total} times for ${msgIds.length} input messages`);
  }
}
