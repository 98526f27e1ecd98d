// Test fixtures: the simulated lighting group of scripts/lighting-group.ts, with the group port allocated by the
// OS (port 0) so that tests never depend on a fixed port.

import dgram from 'node:dgram';
import { UdpTransport } from '../../src/transport/udp-transport';
import { Lamp, LightingGroupOptions, startLightingGroup } from '../../scripts/lighting-group';

export type { Lamp };
export const GROUP_V4 = '224.0.1.187';

/** A free UDP port for a group: bind one throwaway group receiver to port 0 and read the port. */
export async function freeGroupPort(group = GROUP_V4): Promise<number> {
  const t = await UdpTransport.open({ groups: [{ address: group, port: 0 }] });
  const port = t.groupPort();
  await t.close();
  return port;
}

export function startLamps(n: number, opts: LightingGroupOptions): Promise<Lamp[]> {
  return startLightingGroup(n, opts);
}

/** A lighting group that lives as long as one mocha `describe`: see lampsForSuite. */
export interface SuiteLamps {
  /** the group port (known once the suite's `before` has run) */
  readonly port: number;
  readonly lamps: Lamp[];
  /** group requests the lamps have received in all (what a proxy fanned out to them) */
  groupRequests(): number;
}

/**
 * Start `n` lamps on a free group port in the calling `describe`'s `before`, and stop them in its `after`. Call it in
 * the body of a `describe`; read `port` and `lamps` from the result inside hooks and tests.
 */
export function lampsForSuite(n: number, opts: Omit<LightingGroupOptions, 'groupPort'>): SuiteLamps {
  const suite = {
    port: 0,
    lamps: [] as Lamp[],
    groupRequests: () => suite.lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0),
  };
  before(async function () {
    suite.port = await freeGroupPort(opts.group);
    suite.lamps = await startLamps(n, { ...opts, groupPort: suite.port });
  });
  after(async function () {
    await stopAll(suite.lamps.map((l) => l.server));
  });
  return suite;
}

export async function stopAll(...things: ({ close(): Promise<void> } | { close(): Promise<void> }[] | undefined)[]): Promise<void> {
  for (const t of things) {
    if (!t) continue;
    if (Array.isArray(t)) await Promise.all(t.map((x) => x.close()));
    else await t.close();
  }
}

/**
 * A bare UDP socket (on 127.0.0.1 unless `address` names another loopback address) for sending hand-made datagrams and
 * collecting what comes back; with `multicast` it may send to a group too (interface 127.0.0.1, TTL 1). `replies` fills as datagrams arrive; `next()` resolves with the next reply not yet taken by `next()`.
 */
export interface RawProbe {
  send(data: Buffer, dest: { address: string; port: number }): void;
  replies: Buffer[];
  /** the next reply (in arrival order) not yet returned by next() */
  next(): Promise<Buffer>;
  /** resolves once `n` replies have arrived in total */
  count(n: number): Promise<void>;
  address(): { address: string; port: number };
  close(): Promise<void>;
}

export async function rawProbe(address = '127.0.0.1', opts: { multicast?: boolean } = {}): Promise<RawProbe> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, address, () => r()));
  if (opts.multicast) {
    sock.setMulticastInterface('127.0.0.1');
    sock.setMulticastTTL(1);
  }
  const replies: Buffer[] = [];
  let taken = 0;
  const waiters: (() => void)[] = [];
  sock.on('message', (m) => {
    replies.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const until = (cond: () => boolean): Promise<void> =>
    new Promise((resolve) => {
      const check = () => (cond() ? resolve() : waiters.push(check));
      check();
    });
  return {
    send: (data, dest) => sock.send(data, dest.port, dest.address),
    replies,
    next: async () => {
      const i = taken++;
      await until(() => replies.length > i);
      return replies[i];
    },
    count: (n) => until(() => replies.length >= n),
    address: () => sock.address(),
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}
