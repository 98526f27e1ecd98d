// Cacheable protected group exchanges (groupcomm-proxy-07 §7.4) with Deterministic Requests (draft-ietf-core-
// cacheable-oscore-02): client -> GroupProxy (cache on, members known) -> N GroupServers (127.0.3.x, leisure 0), each
// with its own GroupContext naming the Deterministic Client. Three configurations on the same proxy and servers:
// a group-mode request (never cacheable), a Deterministic Request that misses the cache (cleared before each
// exchange: fan-out, N group-mode responses), and one that hits it (the proxy answers from its cache alone). Measures
// the time until all N responses were verified and the CPU time of the process per exchange (client, proxy and
// servers share it). Loopback only, multicast pinned to 127.0.0.1 with TTL 1; bounded in rounds; all closed at the end.
// Run: npm run build && node --expose-gc dist/bench/group-oscore-deterministic.js [--sizes=10,100] [--rounds=30]

import { RequestContext } from '../src/oscore';
import { InterleavedRow, assertLoopback, benchGroup, fmt, listArg, loadAverage, machineLine, numArg, openProxiedGroup, parseArgs, proxiedExchange, runInterleaved, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const serverAddress = (i: number) => assertLoopback(`127.0.${3 + Math.floor(i / 200)}.${10 + (i % 200)}`);

async function runSize(n: number, rounds: number, deadlineMs: number): Promise<InterleavedRow[]> {
  const port = await freeGroupPort(GROUP);
  const members = benchGroup(n, { deterministicClient: { senderId: Buffer.from('dc', 'hex') } });
  const g = await openProxiedGroup({ servers: n, address: serverAddress, group: GROUP, port, transform: members.serverTransform, cache: { maxEntries: 100_000 }, knownMembers: true });
  const configs: { name: string; context: RequestContext; before?: () => void }[] = [
    { name: 'group mode (not cacheable)', context: members.client.groupRequests() },
    { name: 'Deterministic Request, cache miss', context: members.client.deterministicRequests(), before: () => g.proxy.cache!.clear() },
    { name: 'Deterministic Request, cache hit', context: members.client.deterministicRequests() },
  ];

  const once = (k: number) =>
    new Promise<number | undefined>((resolve) => {
      configs[k].before?.();
      proxiedExchange(g, { expect: n, multicastTimeout: Math.ceil(deadlineMs / 1000), timeout: deadlineMs + 2000, oscore: { endToEnd: { context: configs[k].context } }, endToEnd: true }, resolve);
    });

  const rows = await runInterleaved(configs.map((c) => c.name), { rounds, warmups: 3, expect: n }, once);
  await g.close();
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs();
  const sizes = listArg(args, 'sizes', ['10', '100']).map(Number);
  const rounds = numArg(args, 'rounds', args.quick === 'true' ? 5 : 30);
  console.log(`\n${machineLine()}`);
  const rows: InterleavedRow[] = [];
  for (const n of sizes) rows.push(...(await runSize(n, rounds, 3000)));
  console.log(`\nProtected group exchange through the caching proxy, ${rounds} rounds per size (configurations interleaved), leisure 0, one process:\n`);
  console.log(table(
    ['servers', 'configuration', 'median ms (all verified)', 'p95 ms', 'CPU ms / exchange', 'failed'],
    rows.map((r) => [r.n, r.name, fmt(r.median, 1), fmt(r.p95, 1), fmt(r.cpuUs / 1000, 2), `${r.failed} / ${r.rounds}`]),
  ));
  console.log(`\nload average at the end ${loadAverage()}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
