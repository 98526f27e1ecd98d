// Mocha root hooks: a test file fails if it leaves a UDP socket or a (ref'd) timer open (a Californium-style leak
// check). The check runs after the last top-level suite of EVERY test file, so the file that leaked is the one
// that fails, and it waits only a few event-loop turns (closing a socket takes one or two), not seconds.

import { createHook } from 'node:async_hooks';

// LEAK_TRACE=1 records where every timer was created, so a failing check can say which one is left.
const timerStacks = new Map<number, { stack: string; resource: { hasRef?: () => boolean } }>();
if (process.env.LEAK_TRACE) {
  Error.stackTraceLimit = 40;
  createHook({
    init(id, type, _trigger, resource) {
      if (type === 'Timeout') timerStacks.set(id, { stack: new Error().stack ?? '', resource: resource as { hasRef?: () => boolean } });
    },
    destroy(id) {
      timerStacks.delete(id);
    },
  }).enable();
}

function describeTimers(): string {
  if (!process.env.LEAK_TRACE) return ' (run with LEAK_TRACE=1 to see where the timers were created)';
  const live = [...timerStacks.values()].filter((t) => t.resource.hasRef?.() !== false && (t.resource as { _destroyed?: boolean })._destroyed !== true);
  return '\n' + live.map((t) => {
    const r = t.resource as { _onTimeout?: () => void; _idleTimeout?: number };
    return `timer of ${r._idleTimeout} ms: ${String(r._onTimeout).slice(0, 300)}\n` + t.stack.split('\n').slice(1, 30).join('\n');
  }).join('\n----\n');
}

export function openHandles(): { udp: number; timers: number } {
  const info = process.getActiveResourcesInfo();
  // Node names the UDP handle 'UDPWrap' (older versions 'UDPWRAP'); unref'd timers are not listed.
  return { udp: info.filter((r) => r.toUpperCase() === 'UDPWRAP').length, timers: info.filter((r) => r === 'Timeout').length };
}

/** Wait until no UDP socket and no timer is open, or fail after `turns` event-loop turns (+ at most `ms`). */
export async function expectNoOpenHandles(where: string, turns = 20, ms = 250, beforeEachCheck?: () => void): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; ; i++) {
    beforeEachCheck?.();
    const h = openHandles();
    if (h.udp === 0 && h.timers === 0) return;
    if (i >= turns && Date.now() > deadline) throw new Error(`${where} left open: ${h.udp} UDP socket(s), ${h.timers} timer(s)${h.timers ? describeTimers() : ''}`);
    await new Promise((r) => setImmediate(r));
  }
}

interface SuiteLike {
  file?: string;
  suites: SuiteLike[];
  afterAll(fn: (this: Mocha.Context) => Promise<void>): void;
}

export const mochaHooks = {
  beforeAll(this: Mocha.Context) {
    const root = this.test?.parent as unknown as SuiteLike | undefined;
    if (!root) return;
    // The last top-level suite of each file gets the check as its final after-hook.
    const lastOfFile = new Map<string, SuiteLike>();
    for (const s of root.suites) if (s.file) lastOfFile.set(s.file, s);
    for (const [file, suite] of lastOfFile) {
      const name = file.replace(/^.*\/dist\//, '');
      suite.afterAll(async function (this: Mocha.Context) {
        // Mocha arms a timeout timer for this very hook once it has returned its promise: it is not the file's,
        // so it is cleared before each look (the check bounds its own time).
        const hook = this.runnable() as unknown as { timer?: NodeJS.Timeout };
        await expectNoOpenHandles(name, 20, 250, () => clearTimeout(hook.timer));
      });
    }
  },
};
