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

export async function stopAll(...things: ({ close(): Promise<void> } | { close(): Promise<void> }[] | undefined)[]): Promise<void> {
  for (const t of things) {
    if (!t) continue;
    if (Array.isArray(t)) await Promise.all(t.map((x) => x.close()));
    else await t.close();
  }
}

/**
 * A bare UDP socket on 127.0.0.1 for sending hand-made datagrams and collecting what comes back (it never sends
 * multicast). `replies` fills as datagrams arrive.
 */
export async function rawProbe(): Promise<{ send(data: Buffer, dest: { address: string; port: number }): void; replies: Buffer[]; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const replies: Buffer[] = [];
  sock.on('message', (m) => replies.push(m));
  return {
    send: (data, dest) => sock.send(data, dest.port, dest.address),
    replies,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}
