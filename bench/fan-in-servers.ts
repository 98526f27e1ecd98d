// A pool of N group servers (GroupServer, groupcomm-bis §3.1 / RFC 10020) for the fan-in benchmark: server i
// answers from its own loopback address 127.0.(10 + i div 200).(10 + i mod 200) and has a receiver on the group.
// Used in-process, or as a forked child (so the client reads while the servers answer): the parent sends
// {cmd:'stats'} and {cmd:'close'}; the child also exits on its own if the parent goes away or after maxMs.

import { CODES } from '../src/coap/codes';
import { GroupServer } from '../src/group/group-server';
import { UdpTransport } from '../src/transport/udp-transport';
import { assertLoopback } from './common';

export interface PoolOptions {
  n: number;
  group: string;
  groupPort: number;
  /** ms; 0 = every server answers as soon as the request arrives */
  leisure: number;
}

export interface PoolStats {
  servers: number;
  groupRequests: number;
  responses: number;
  sendErrors: number;
  socketErrors: number;
}

export type ChildMessage =
  | { type: 'ready'; servers: number; ms: number }
  | { type: 'stats'; stats: PoolStats }
  | { type: 'error'; message: string };

export function serverAddress(i: number): string {
  if (i < 0 || i >= 200 * 200) throw new RangeError('server index out of range');
  return assertLoopback(`127.0.${10 + Math.floor(i / 200)}.${10 + (i % 200)}`);
}

/** A group port nobody uses: bind a throwaway group receiver to port 0 and read the port. */
export async function freeGroupPort(group: string): Promise<number> {
  const t = await UdpTransport.open({ bindAddress: '127.0.0.1', groups: [{ address: group, port: 0 }] });
  const port = t.groupPort();
  await t.close();
  return port;
}

export async function openPool(o: PoolOptions): Promise<GroupServer[]> {
  const servers: GroupServer[] = [];
  const BATCH = 50;
  try {
    for (let i = 0; i < o.n; i += BATCH) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, o.n - i) }, (_, j) =>
          GroupServer.open({ address: serverAddress(i + j), port: 0, groups: [{ address: o.group, port: o.groupPort }], leisure: o.leisure }),
        ),
      );
      batch.forEach((s, j) => {
        const body = JSON.stringify({ name: `lamp-${i + j + 1}`, on: true, brightness: 42 });
        s.addResource('/light', () => ({ code: CODES.CONTENT, contentFormat: 50, payload: body }));
        // transient socket errors are counted by the transport; a listener keeps them from throwing
        s.endpoint.transport.on('error', () => undefined);
        servers.push(s);
      });
    }
  } catch (err) {
    await closePool(servers);
    throw err;
  }
  return servers;
}

export function poolStats(servers: GroupServer[]): PoolStats {
  const st: PoolStats = { servers: servers.length, groupRequests: 0, responses: 0, sendErrors: 0, socketErrors: 0 };
  for (const s of servers) {
    st.groupRequests += s.counters.groupRequests;
    st.responses += s.counters.responses;
    st.sendErrors += s.endpoint.transport.counters.sendErrors;
    st.socketErrors += s.endpoint.transport.counters.socketErrors;
  }
  return st;
}

export async function closePool(servers: GroupServer[]): Promise<void> {
  for (let i = 0; i < servers.length; i += 100) await Promise.all(servers.slice(i, i + 100).map((s) => s.close()));
}

async function child(): Promise<void> {
  const o = JSON.parse(process.argv[2]) as PoolOptions & { maxMs: number };
  const send = (m: ChildMessage) => process.send?.(m);
  let servers: GroupServer[] = [];
  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    await closePool(servers);
    process.disconnect?.();
    process.exit(0);
  };
  // Bounded in time even if the parent forgets us.
  setTimeout(() => void shutdown(), o.maxMs).unref();
  process.on('disconnect', () => void shutdown());
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'stats') send({ type: 'stats', stats: poolStats(servers) });
    else if (m.cmd === 'close') void shutdown();
  });
  const t0 = Date.now();
  try {
    servers = await openPool(o);
  } catch (err) {
    send({ type: 'error', message: (err as Error).message });
    process.exit(1);
  }
  send({ type: 'ready', servers: servers.length, ms: Date.now() - t0 });
}

if (require.main === module) void child();
