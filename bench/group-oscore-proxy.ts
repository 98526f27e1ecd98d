// A Group OSCORE (RFC 10021) group exchange through the group proxy for 10 and 100 servers: client -> GroupProxy ->
// N GroupServers (127.0.1.x / 127.0.2.x, leisure 0), each with its own GroupContext and Ed25519 key pair. Two
// configurations on the same proxy and servers: no OSCORE, and Group OSCORE end to end (group mode, one countersigned
// request, N countersigned responses each verified with its server's credential) inside the client-proxy RFC 8613
// layer (oscore-capable-proxies-07 §2.3). Measures the time until all N relayed responses were verified, and the CPU
// time of the process per exchange (client, proxy and every server run in this one process, so that is everybody's
// work: N+1 signatures and 2N verifications per exchange with Group OSCORE). Loopback only, multicast pinned to
// 127.0.0.1 with TTL 1 (UdpTransport default); bounded in rounds and time; everything is closed at the end.
// Run: npm run build && node --expose-gc dist/bench/group-oscore-proxy.js [--sizes=10,100] [--rounds=30]

import crypto from 'node:crypto';
import { ContextRegistry, MemorySequenceStore, SecurityContext } from '../src/oscore';
import { ProxiedOscoreOptions } from '../src/proxy/proxy-client';
import { InterleavedRow, assertLoopback, benchGroup, fmt, listArg, loadAverage, machineLine, numArg, openProxiedGroup, parseArgs, proxiedExchange, runInterleaved, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const serverAddress = (i: number) => assertLoopback(`127.0.${1 + Math.floor(i / 200)}.${10 + (i % 200)}`);

async function runSize(n: number, rounds: number, deadlineMs: number): Promise<InterleavedRow[]> {
  const port = await freeGroupPort(GROUP);
  const members = benchGroup(n);
  const cp = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
  const mem = () => ({ sequenceStore: new MemorySequenceStore() });
  const clientToProxy = SecurityContext.derive({ ...cp, senderId: h('a0'), recipientId: h('01') }, mem());
  const proxySide = SecurityContext.derive({ ...cp, senderId: h('01'), recipientId: h('a0') }, mem());
  const g = await openProxiedGroup({
    servers: n,
    address: serverAddress,
    group: GROUP,
    port,
    transform: members.serverTransform,
    proxyOscore: { contexts: new ContextRegistry().add(proxySide), required: false },
  });
  const configs: { name: string; oscore?: ProxiedOscoreOptions }[] = [
    { name: 'no OSCORE' },
    { name: 'Group OSCORE end to end + client-proxy layer', oscore: { proxy: clientToProxy, endToEnd: { context: members.client.groupRequests() } } },
  ];

  /** One exchange: resolves with the ms until all n responses (verified where protected) arrived, or undefined. */
  const once = (k: number) =>
    new Promise<number | undefined>((resolve) => {
      const c = configs[k];
      proxiedExchange(g, { expect: n, multicastTimeout: Math.ceil(deadlineMs / 1000), timeout: deadlineMs + 2000, ...(c.oscore ? { oscore: c.oscore, endToEnd: true } : {}) }, resolve);
    });

  const rows = await runInterleaved(configs.map((c) => c.name), { rounds, warmups: 5, expect: n }, once);
  await g.close();
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs();
  const quick = args.quick === 'true';
  const sizes = listArg(args, 'sizes', ['10', '100']).map(Number);
  const rounds = numArg(args, 'rounds', quick ? 5 : 30);
  console.log(`\n${machineLine()}`);
  const rows: InterleavedRow[] = [];
  for (const n of sizes) rows.push(...(await runSize(n, rounds, 3000)));
  console.log(`\nGroup exchange through the proxy, ${rounds} rounds per size (configurations interleaved), leisure 0, client, proxy and servers in one process:\n`);
  console.log(table(
    ['servers', 'configuration', 'median ms (all verified)', 'p95 ms', 'CPU ms / exchange', 'CPU µs / response', 'failed'],
    rows.map((r) => [r.n, r.name, fmt(r.median, 1), fmt(r.p95, 1), fmt(r.cpuUs / 1000, 2), fmt(r.cpuUs / r.n, 0), `${r.failed} / ${r.rounds}`]),
  ));
  console.log('');
  const ratios = sizes.map((n) => {
    const [plain, prot] = rows.filter((r) => r.n === n);
    return [n, `${fmt(prot.median / plain.median, 2)}x`, `${fmt(prot.cpuUs / plain.cpuUs, 2)}x`];
  });
  console.log(table(['servers', 'latency Group OSCORE / none', 'CPU Group OSCORE / none'], ratios));
  console.log(`\nload average at the end ${loadAverage()}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
