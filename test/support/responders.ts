// A fleet of group members that are only sockets: one receiver joined to the group (on 127.0.0.1) and one unicast
// socket per member on its own loopback address (127.0.0.2 ... 127.0.0.251, then 127.0.1.2 ..., all in 127/8). Every request that reaches the group is
// answered from every member's socket with NON 2.05 responses on the request's token, at once and without leisure:
// the many distinct servers (or spoofed sources) of a hostile network. No socket here sends multicast.

import dgram from 'node:dgram';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';

export interface ResponderFleet {
  /** the members' addresses, in order */
  addresses: string[];
  /** group requests the receiver saw */
  requests: number;
  close(): Promise<void>;
}

export interface FleetOptions {
  group: string;
  groupPort: number;
  members: number;
  /** responses each member sends per request, with distinct Message IDs (default 1) */
  perMember?: number;
  /** the payload of member `i`'s response `j` (default "member i") */
  payload?: (i: number, j: number) => Buffer;
}

/** Member `i`'s loopback address: 250 a /24, from 127.0.0.2. */
export function memberAddress(i: number): string {
  return `127.0.${Math.floor(i / 250)}.${2 + (i % 250)}`;
}

export async function startResponderFleet(opts: FleetOptions): Promise<ResponderFleet> {
  const rx = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  rx.on('error', () => undefined);
  await new Promise<void>((r) => rx.bind(opts.groupPort, opts.group, () => r()));
  rx.addMembership(opts.group, '127.0.0.1');
  const members: dgram.Socket[] = [];
  let closed = false;
  const closeAll = () => (closed = true) && Promise.all([rx, ...members].map((s) => new Promise<void>((r) => s.close(() => r()))));
  try {
    for (let i = 0; i < opts.members; i++) {
      const s = dgram.createSocket('udp4');
      s.on('error', () => undefined);
      members.push(s);
      await new Promise<void>((r) => s.bind(0, memberAddress(i), () => r()));
    }
  } catch (err) {
    await closeAll();
    throw err;
  }
  const fleet: ResponderFleet = { addresses: members.map((s) => s.address().address), requests: 0, close: async () => void (await closeAll()) };
  let mid = 0x2000;
  rx.on('message', (data, rinfo) => {
    let token: Buffer;
    try {
      token = decode(data).token;
    } catch {
      return;
    }
    fleet.requests++;
    // 100 members a turn of the event loop, so that a large fleet does not overrun the client's receive buffer
    const answer = (from: number): void => {
      if (closed) return;
      for (let i = from; i < Math.min(from + 100, members.length); i++) {
        for (let j = 0; j < (opts.perMember ?? 1); j++) {
          const payload = opts.payload?.(i, j) ?? Buffer.from(`member ${i + 1}`);
          members[i].send(encode({ type: 'NON', code: CODES.CONTENT, messageId: mid++ & 0xffff, token, options: [], payload }), rinfo.port, rinfo.address);
        }
      }
      if (from + 100 < members.length) setImmediate(answer, from + 100);
    };
    answer(0);
  });
  return fleet;
}
