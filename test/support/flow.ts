// Helpers for tests that run nodes in node-red-node-test-helper.

import { coreNode } from './node-red-runtime';

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

/** The core Complete and Catch nodes, to load beside the nodes under test when a flow uses completeWatch. */
export const WATCH_NODES = [coreNode('common/24-complete.js'), coreNode('common/25-catch.js')];

/**
 * A Complete node (done()) and a Catch node (done(err)) watching `scope` (node ids), both wired to one helper node:
 * add these to a test flow (and WATCH_NODES to the loaded nodes), then `new DoneCounter(helper.getNode(`${id}-out`))`
 * counts done() calls per input message id (STYLE.md: exactly one per input message).
 */
export function completeWatch(scope: string[], id = 'cmp'): Record<string, unknown>[] {
  return [
    { id, type: 'complete', scope, uncaught: false, wires: [[`${id}-out`]] },
    { id: `${id}-catch`, type: 'catch', scope, uncaught: false, wires: [[`${id}-out`]] },
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

export type Status = { fill?: string; shape?: string; text?: string };

/**
 * The first argument of every call of `method` (status, error, warn, log) made by this node. The test helper spies
 * on the Node prototype, so a spy's calls include every node's: keep this node's only.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function callsOf(node: any, method: 'status' | 'error' | 'warn' | 'log'): any[] {
  return node[method].getCalls().filter((c: { thisValue: unknown }) => c.thisValue === node).map((c: { args: unknown[] }) => c.args[0]);
}

/** A status of this node that satisfies `pred`: one already shown, or the next one. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function statusOf(node: any, pred: (s: Status) => boolean): Promise<Status> {
  const seen = callsOf(node, 'status').find(pred);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve) => node.on('call:status', (c: { args: [Status] }) => pred(c.args[0]) && resolve(c.args[0])));
}
