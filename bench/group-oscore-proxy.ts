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
import { ContextRegistry, GroupContext, MemorySequenceStore, SecurityContext, generateGroupKeyPair } from '../src/oscore';
import { oscoreServerTransform } from '../src/oscore/nested';
import { ProxiedOscoreOptions } from '../src/proxy/proxy-client';
import { assertLoopback, fmt, forceGc, listArg, loadAverage, machineLine, median, numArg, openProxiedGroup, parseArgs, percentile, proxiedExchange, sleep, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const serverAddress = (i: number) => assertLoopback(`127.0.${1 + Math.floor(i / 200)}.${10 + (i % 200)}`);

interface Row {
  n: number;
  name: string;
  median: number;
  p95: number;
  cpuUs: number;
  failed: number;
  rounds: number;
}

async function runSize(n: number, rounds: number, deadlineMs: number): Promise<Row[]> {
  const port = await freeGroupPort(GROUP);
  // The group: the client 0x25 and servers 0x0100 + i (two-byte Sender IDs, so 100 servers fit), every member
  // knowing every credential it needs (the servers the client's, the client every server's).
  const master = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), idContext: crypto.randomBytes(3) };
  const clientKeys = generateGroupKeyPair();
  const ids = Array.from({ length: n }, (_, i) => Buffer.from((0x0100 + i).toString(16).padStart(4, '0'), 'hex'));
  const serverKeys = ids.map(() => generateGroupKeyPair());
  const mem = () => ({ sequenceStore: new MemorySequenceStore() });
  const clientGroup = new GroupContext(
    { ...master, senderId: h('25'), privateKey: clientKeys.privateKey, credential: clientKeys.credential, members: ids.map((id, i) => ({ senderId: id, credential: serverKeys[i].credential })) },
    mem(),
  );
  const cp = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
  const clientToProxy = SecurityContext.derive({ ...cp, senderId: h('a0'), recipientId: h('01') }, mem());
  const proxySide = SecurityContext.derive({ ...cp, senderId: h('01'), recipientId: h('a0') }, mem());
  const g = await openProxiedGroup({
    servers: n,
    address: serverAddress,
    group: GROUP,
    port,
    transform: (i) => {
      const ctx = new GroupContext({ ...master, senderId: ids[i], privateKey: serverKeys[i].privateKey, credential: serverKeys[i].credential, members: [{ senderId: h('25'), credential: clientKeys.credential }] }, mem());
      return oscoreServerTransform({ contexts: ctx, maxLayers: 1, required: false });
    },
    proxyOscore: { contexts: new ContextRegistry().add(proxySide), required: false },
  });
  const configs: { name: string; oscore?: ProxiedOscoreOptions }[] = [
    { name: 'no OSCORE' },
    { name: 'Group OSCORE end to end + client-proxy layer', oscore: { proxy: clientToProxy, endToEnd: { context: clientGroup.groupRequests() } } },
  ];

  /** One exchange: resolves with the ms until all n responses (verified where protected) arrived, or undefined. */
  const once = (c: (typeof configs)[number]) =>
    new Promise<number | undefined>((resolve) =>
      proxiedExchange(g, { expect: n, multicastTimeout: Math.ceil(deadlineMs / 1000), timeout: deadlineMs + 2000, ...(c.oscore ? { oscore: c.oscore, endToEnd: true } : {}) }, resolve),
    );

  for (const c of configs) {
    for (let i = 0; i < 5; i++) if ((await once(c)) === undefined) throw new Error(`${c.name}, ${n} servers: warm-up exchange did not get ${n} good responses`);
  }
  const lat: number[][] = configs.map(() => []);
  const failed = configs.map(() => 0);
  const cpu = configs.map(() => 0);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < configs.length; k++) {
      await sleep(20); // let the previous exchange's stragglers and early stop settle
      const c0 = process.cpuUsage();
      const ms = await once(configs[k]);
      const c1 = process.cpuUsage(c0);
      cpu[k] += c1.user + c1.system;
      if (ms === undefined) failed[k]++;
      else lat[k].push(ms);
    }
    if (r % 10 === 9) forceGc();
  }
  await g.close();
  return configs.map((c, k) => {
    const l = lat[k].sort((a, b) => a - b);
    return { n, name: c.name, median: median(l), p95: percentile(l, 95), cpuUs: cpu[k] / rounds, failed: failed[k], rounds };
  });
}

async function main(): Promise<void> {
  const args = parseArgs();
  const quick = args.quick === 'true';
  const sizes = listArg(args, 'sizes', ['10', '100']).map(Number);
  const rounds = numArg(args, 'rounds', quick ? 5 : 30);
  console.log(`\n${machineLine()}`);
  const rows: Row[] = [];
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
