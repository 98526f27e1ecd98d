// The group proxy of this build against the group proxy of another build, in one process (issue 12): one set of 10
// servers, the raw node:dgram relay of bench/raw-relay.ts, one proxy from each build, each path driven by a raw client
// of the same kind, rounds interleaved. Separate runs of bench/proxy.ts differ from each other by more than
// a change of a few percent in the proxy (the same build gave 1.24x-1.33x against the raw relay in consecutive runs
// on a quiet machine); inside one process both proxies share the machine's state, its heap and its load, so their
// ratio shows such a change. The rounds go through all six orders of the three paths in turn, so that each path
// follows each other path equally often: the work a proxy leaves behind (ending its exchanges at T', the garbage it
// made) lands on whatever round runs then, and the garbage collector's work is shared by the three columns rather
// than attributed to the build that caused it (bench/proxy.ts, one proxy per process, shows that part). The other
// build is another checkout's compiled `dist` (e.g. a worktree of main built with `npx tsc -p .`, with node_modules
// reachable from it). Loopback only, multicast pinned to 127.0.0.1, TTL 1; bounded in rounds.
// Run: npm run build && node dist/bench/proxy-ab.js --base=/path/to/other/dist [--rounds=3000] [--runs=3]

import os from 'node:os';
import path from 'node:path';
import type { GroupProxy as GroupProxyClass } from '../src/proxy/group-proxy';
import type { loopbackEndpoint as LoopbackEndpoint } from './common';
import { answeringServers, fmt, median, numArg, parseArgs, percentile, table } from './common';
import { freeGroupPort } from '../test/support/lamps';
import { RawClient, openRawClient, openRawRelay } from './raw-relay';

const GROUP = '224.0.1.187';

/** A proxy built from the compiled tree `dist` (this build's own when `dist` is the directory above this file). */
async function proxyFrom(dist: string): Promise<{ address: string; port: number; close(): Promise<void> }> {
  const { GroupProxy } = require(path.join(dist, 'src/proxy/group-proxy')) as { GroupProxy: typeof GroupProxyClass };
  const { loopbackEndpoint } = require(path.join(dist, 'bench/common')) as { loopbackEndpoint: typeof LoopbackEndpoint };
  const listen = await loopbackEndpoint();
  const upstream = await loopbackEndpoint();
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], maxPendingPerClient: 50000, maxResponsesPerSecond: 1e9, maxExchanges: 100000 });
  const a = listen.transport.address();
  return {
    address: a.address,
    port: a.port,
    close: async () => {
      await proxy.close();
      await Promise.all([listen.close(), upstream.close()]);
    },
  };
}

async function main(): Promise<void> {
  const args = parseArgs();
  const base = args.base;
  if (!base) throw new Error('--base=DIR: the compiled dist directory of the build to compare with');
  const rounds = numArg(args, 'rounds', 3000);
  const runs = numArg(args, 'runs', 3);
  const port = await freeGroupPort(GROUP);
  const servers = await answeringServers(GROUP, port);
  const uri = `coap://${GROUP}:${port}/r`;
  const relay = await openRawRelay(GROUP, port);
  const proxies = { base: await proxyFrom(path.resolve(base)), this: await proxyFrom(path.resolve(__dirname, '..')) };
  // T' = 2 s, as in bench/proxy.ts: the raw client sends no Early Stop Request, so each proxy keeps every exchange
  // that long and ends it itself
  const clients: Record<'raw' | 'base' | 'this', RawClient> = {
    raw: await openRawClient(relay, { path: 'r' }),
    base: await openRawClient(proxies.base, { proxyUri: uri, tPrime: 2 }),
    this: await openRawClient(proxies.this, { proxyUri: uri, tPrime: 2 }),
  };
  await clients.base.verifyEcho();
  await clients.this.verifyEcho();
  const orders: ('raw' | 'base' | 'this')[][] = [
    ['raw', 'base', 'this'],
    ['raw', 'this', 'base'],
    ['base', 'raw', 'this'],
    ['base', 'this', 'raw'],
    ['this', 'raw', 'base'],
    ['this', 'base', 'raw'],
  ];
  const rows: string[][] = [];
  const incomplete = { raw: 0, base: 0, this: 0 };
  for (let run = 1; run <= runs; run++) {
    const t: Record<'raw' | 'base' | 'this', number[]> = { raw: [], base: [], this: [] };
    const load = os.loadavg()[0];
    for (let i = 0; i < rounds; i++) {
      for (const k of orders[i % orders.length]) {
        const ms = await clients[k].timeTo(10, 2000);
        if (ms === undefined) incomplete[k]++;
        else t[k].push(ms);
      }
    }
    for (const k of ['raw', 'base', 'this'] as const) t[k].sort((a, b) => a - b);
    const m = { raw: median(t.raw), base: median(t.base), this: median(t.this) };
    rows.push([
      String(run),
      fmt(load, 2),
      fmt(m.raw, 3),
      `${fmt(m.base, 3)} (${fmt(m.base / m.raw, 2)}x, p95 ${fmt(percentile(t.base, 95) / percentile(t.raw, 95), 2)}x)`,
      `${fmt(m.this, 3)} (${fmt(m.this / m.raw, 2)}x, p95 ${fmt(percentile(t.this, 95) / percentile(t.raw, 95), 2)}x)`,
      `${fmt(m.this / m.base, 3)}`,
    ]);
  }
  console.log(`\nTime until all 10 responses arrived, ${rounds} rounds per path and run, interleaved; "base" = ${base}:\n`);
  console.log(table(['run', 'load', 'raw relay median ms', 'proxy, base build: median ms (/ raw)', 'proxy, this build: median ms (/ raw)', 'this / base'], rows));
  if (incomplete.raw + incomplete.base + incomplete.this) console.log(`\nrounds that did not complete within 2 s (left out): ${JSON.stringify(incomplete)}`);
  await Promise.all([...Object.values(clients).map((c) => c.close()), relay.close(), proxies.base.close(), proxies.this.close(), ...servers.map((s) => s.close())]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
