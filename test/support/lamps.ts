// Test fixture: a lighting group of N lamps, each a GroupServer with its own unicast address 127.0.0.(2+i)
// and a receiver on the group address. The group port is allocated by the OS (port 0) and shared.

import { CODES } from '../../src/coap/codes';
import { GroupServer, GroupServerOptions } from '../../src/group/group-server';
import { UdpTransport } from '../../src/transport/udp-transport';

export const GROUP_V4 = '224.0.1.187';

/** A free UDP port for a group: bind one throwaway group receiver to port 0 and read the port. */
export async function freeGroupPort(group = GROUP_V4): Promise<number> {
  const t = await UdpTransport.open({ groups: [{ address: group, port: 0 }] });
  const port = t.groupPort();
  await t.close();
  return port;
}

export interface Lamp {
  server: GroupServer;
  name: string;
  address: string;
  state: { on: boolean; brightness: number };
}

export async function startLamps(n: number, opts: Partial<GroupServerOptions> & { groupPort: number; group?: string; firstHost?: number }): Promise<Lamp[]> {
  const lamps: Lamp[] = [];
  for (let i = 0; i < n; i++) {
    const address = `127.0.0.${(opts.firstHost ?? 2) + i}`;
    const server = await GroupServer.open({
      leisure: 50,
      port: 0,
      ...opts,
      address,
      groups: [{ address: opts.group ?? GROUP_V4, port: opts.groupPort }],
    });
    const lamp: Lamp = { server, name: `lamp-${i + 1}`, address, state: { on: false, brightness: 0 } };
    server.addResource('/light', (req) => {
      if (req.message.code === CODES.PUT || req.message.code === CODES.POST) {
        const body = req.message.payload.toString();
        lamp.state.on = body === 'on' || body === '1' || body === 'true';
        return { code: CODES.CHANGED };
      }
      return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name, ...lamp.state }) };
    }, { attributes: { rt: 'light' } });
    lamps.push(lamp);
  }
  return lamps;
}

export async function stopAll(...things: ({ close(): Promise<void> } | { close(): Promise<void> }[] | undefined)[]): Promise<void> {
  for (const t of things) {
    if (!t) continue;
    if (Array.isArray(t)) await Promise.all(t.map((x) => x.close()));
    else await t.close();
  }
}
