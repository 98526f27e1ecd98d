// Datagrams and bytes on the wire per change, for 10, 100 and 1000 observers: multicast notifications
// (observe-multicast-notifications-15) versus classic unicast Observe (RFC 7641) on the same server, as a ratio.
// Loopback only; every multicast socket is pinned to 127.0.0.1 with TTL 1. Bounded: a fixed number of changes.
// Run: npm run build && node --expose-gc dist/bench/observe.js [--observers=10,100,1000] [--changes=5]

import { GroupServer } from '../src/group/group-server';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { GroupObservation } from '../src/observe/group-observation';
import { MulticastObserver } from '../src/observe/multicast-observer';
import { UdpTransport } from '../src/transport/udp-transport';
import { fmt, listArg, numArg, parseArgs, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '239.255.0.99';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Result {
  datagrams: number;
  bytes: number;
  delivered: number;
  ms: number;
}

async function run(observers: number, changes: number, multicast: boolean): Promise<Result> {
  const groupPort = await freeGroupPort(GROUP);
  const server = await GroupServer.open({ address: '127.0.0.2', port: 0, groups: [], leisure: 0 });
  // threshold above the observer count keeps everyone on classic unicast Observe
  const observation = new GroupObservation({ server, path: '/state', group: { address: GROUP, port: groupPort }, initial: 'state-0', minInterval: 0, threshold: multicast ? 1 : observers + 1 });
  const uri = `coap://127.0.0.2:${server.address().port}/state`;
  const clients: { ep: CoapEndpoint; obs: MulticastObserver }[] = [];
  let delivered = 0;
  try {
    for (let i = 0; i < observers; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, observers - i) }, async () => {
          const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 1 << 20 }));
          const obs = new MulticastObserver(ep, { uri, leisure: 0 });
          obs.on('notification', (n) => n.via !== 'last_notif' && n.message.payload.toString() !== 'state-0' && delivered++);
          await obs.start();
          return { ep, obs };
        }),
      );
      clients.push(...batch);
    }
    await sleep(200);
    const t = server.endpoint.transport.counters;
    const d0 = t.sent;
    const b0 = t.bytesSent;
    const start = process.hrtime.bigint();
    for (let c = 1; c <= changes; c++) {
      observation.update(`state-${c}`);
      await sleep(multicast ? 50 : Math.max(50, observers / 5));
    }
    const deadline = Date.now() + 10_000;
    while (delivered < observers * changes && Date.now() < deadline) await sleep(20);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    await sleep(100);
    return { datagrams: (t.sent - d0) / changes, bytes: (t.bytesSent - b0) / changes, delivered, ms };
  } finally {
    for (const c of clients) {
      c.obs.cancel();
      await c.ep.close();
    }
    observation.close();
    await server.close();
  }
}

async function main(): Promise<void> {
  const args = parseArgs();
  const counts = listArg(args, 'observers', ['10', '100', '1000']).map(Number);
  const changes = numArg(args, 'changes', 5);
  const rows: (string | number)[][] = [];
  for (const n of counts) {
    const uni = await run(n, changes, false);
    const multi = await run(n, changes, true);
    rows.push([
      n,
      fmt(uni.datagrams, 1), fmt(uni.bytes, 0), `${uni.delivered}/${n * changes}`,
      fmt(multi.datagrams, 1), fmt(multi.bytes, 0), `${multi.delivered}/${n * changes}`,
      `${fmt(uni.datagrams / multi.datagrams, 0)}x`, `${fmt(uni.bytes / multi.bytes, 0)}x`,
    ]);
    console.error(`observers=${n} done`);
  }
  console.log(`\nPer change, server side (${changes} changes each):\n`);
  console.log(table(['observers', 'unicast datagrams', 'unicast bytes', 'unicast delivered', 'multicast datagrams', 'multicast bytes', 'multicast delivered', 'datagram ratio', 'byte ratio'], rows));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
