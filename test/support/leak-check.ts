// Mocha root hooks: the run fails if a test file leaves a UDP socket or a timer open (Californium-style leak
// check). Each file's own `after` hooks must close what it opened; this checks after every top-level suite.

export function openHandles(): { udp: number; timers: number } {
  const info = process.getActiveResourcesInfo();
  return { udp: info.filter((r) => r === 'UDPWRAP').length, timers: info.filter((r) => r === 'Timeout').length };
}

/** Wait until no UDP socket and no timer is open, or fail after `ms`. */
export async function expectNoOpenHandles(ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const h = openHandles();
    if (h.udp === 0 && h.timers === 0) return;
    if (Date.now() > deadline) throw new Error(`left open: ${h.udp} UDP socket(s), ${h.timers} timer(s)`);
    await new Promise((r) => setImmediate(r));
    await new Promise<void>((r) => {
      const t = setTimeout(r, 20);
      t.unref();
    });
  }
}

export const mochaHooks = {
  async afterAll(this: Mocha.Context) {
    this.timeout(5000);
    await expectNoOpenHandles(3000);
  },
};
