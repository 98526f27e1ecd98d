// Cacheable protected group exchanges (groupcomm-proxy-07 §7.4) with Deterministic Requests (draft-ietf-core-
// cacheable-oscore-02): client -> GroupProxy (cache on, members known) -> N GroupServers (127.0.3.x, leisure 0), each
// with its own GroupContext naming the Deterministic Client. Three configurations on the same proxy and servers:
// a group-mode request (never cacheable), a Deterministic Request that misses the cache (cleared before each
// exchange: fan-out, N group-mode responses), and one that hits it (the proxy answers from its cache alone). Measures
// the time until all N responses were verified and the CPU time of the process per exchange (client, proxy and
// servers share it). Loopback only, multicast pinned to 127.0.0.1 with TTL 1; bounded in rounds; all closed at the end.
// Run: npm run build && node --expose-gc dist/bench/group-oscore-deterministic.js [--sizes=10,100] [--rounds=30]

import crypto from 'node:crypto';
import { CODES } from '../src/coap/codes';
import { GroupServer } from '../src/group/group-server';
import { GroupContext, MemorySequenceStore, RequestContext, generateGroupKeyPair } from '../src/oscore';
import { oscoreServerTransform } from '../src/oscore/nested';
import { GroupProxy } from '../src/proxy/group-proxy';
import { requestViaProxy } from '../src/proxy/proxy-client';
import { assertLoopback, fmt, forceGc, listArg, loadAverage, loopbackEndpoint, machineLine, median, numArg, parseArgs, percentile, sleep, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const serverAddress = (i: number) => assertLoopback(`127.0.${3 + Math.floor(i / 200)}.${10 + (i % 200)}`);

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
  const master = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), idContext: crypto.randomBytes(3), deterministicClient: { senderId: h('dc') } };
  const clientKeys = generateGroupKeyPair();
  const ids = Array.from({ length: n }, (_, i) => Buffer.from((0x0100 + i).toString(16).padStart(4, '0'), 'hex'));
  const serverKeys = ids.map(() => generateGroupKeyPair());
  const mem = () => ({ sequenceStore: new MemorySequenceStore() });
  const clientGroup = new GroupContext({ ...master, senderId: h('25'), privateKey: clientKeys.privateKey, credential: clientKeys.credential, members: ids.map((id, i) => ({ senderId: id, credential: serverKeys[i].credential })) }, mem());
  const servers: GroupServer[] = [];
  for (let i = 0; i < n; i++) {
    const ctx = new GroupContext({ ...master, senderId: ids[i], privateKey: serverKeys[i].privateKey, credential: serverKeys[i].credential, members: [{ senderId: h('25'), credential: clientKeys.credential }] }, mem());
    const s = await GroupServer.open({ address: serverAddress(i), port: 0, groups: [{ address: GROUP, port }], leisure: 0, requestTransform: oscoreServerTransform({ contexts: ctx, maxLayers: 1, required: false }) });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(16) }));
    servers.push(s);
  }
  const listen = await loopbackEndpoint();
  const upstream = await loopbackEndpoint();
  const proxy = new GroupProxy({
    listen,
    upstream,
    allow: [{ address: '127.0.0.1' }],
    maxPendingPerClient: 50000,
    maxResponsesPerSecond: 1e9,
    cache: { maxEntries: 100_000 },
    members: { [`${GROUP}:${port}`]: servers.map((s) => `${s.address().address}:${s.address().port}`) },
  });
  const client = await loopbackEndpoint();
  const uri = `coap://${GROUP}:${port}/r`;
  const configs: { name: string; context: RequestContext; before?: () => void }[] = [
    { name: 'group mode (not cacheable)', context: clientGroup.groupRequests() },
    { name: 'Deterministic Request, cache miss', context: clientGroup.deterministicRequests(), before: () => proxy.cache!.clear() },
    { name: 'Deterministic Request, cache hit', context: clientGroup.deterministicRequests() },
  ];

  const once = (c: (typeof configs)[number]) =>
    new Promise<number | undefined>((resolve) => {
      c.before?.();
      const t0 = process.hrtime.bigint();
      let got = 0;
      let bad = 0;
      let settled = false;
      const settle = (v: number | undefined) => {
        if (settled) return;
        settled = true;
        resolve(v);
      };
      const ex = requestViaProxy(client, { proxy: listen.transport.address(), uri, multicastTimeout: Math.ceil(deadlineMs / 1000), timeout: deadlineMs + 2000, oscore: { endToEnd: { context: c.context } } });
      ex.on('error', () => bad++);
      ex.on('response', (r: { message: { code: number; payload: Buffer }; origin: { oscore?: unknown } }) => {
        if (r.message.code !== CODES.CONTENT || r.message.payload.length !== 16 || r.origin.oscore === undefined) bad++;
        else if (++got === n) {
          settle(bad === 0 ? Number(process.hrtime.bigint() - t0) / 1e6 : undefined);
          setImmediate(() => ex.cancel());
        }
      });
      ex.on('end', () => settle(undefined));
    });

  for (const c of configs) {
    for (let i = 0; i < 3; i++) if ((await once(c)) === undefined) throw new Error(`${c.name}, ${n} servers: warm-up exchange did not get ${n} good responses`);
  }
  const lat: number[][] = configs.map(() => []);
  const failed = configs.map(() => 0);
  const cpu = configs.map(() => 0);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < configs.length; k++) {
      await sleep(20); // let the previous exchange's stragglers settle
      const c0 = process.cpuUsage();
      const ms = await once(configs[k]);
      const c1 = process.cpuUsage(c0);
      cpu[k] += c1.user + c1.system;
      if (ms === undefined) failed[k]++;
      else lat[k].push(ms);
    }
    if (r % 10 === 9) forceGc();
  }
  await proxy.close();
  await client.close();
  await listen.close();
  await upstream.close();
  await Promise.all(servers.map((s) => s.close()));
  return configs.map((c, k) => {
    const l = lat[k].sort((a, b) => a - b);
    return { n, name: c.name, median: median(l), p95: percentile(l, 95), cpuUs: cpu[k] / rounds, failed: failed[k], rounds };
  });
}

async function main(): Promise<void> {
  const args = parseArgs();
  const sizes = listArg(args, 'sizes', ['10', '100']).map(Number);
  const rounds = numArg(args, 'rounds', args.quick === 'true' ? 5 : 30);
  console.log(`\n${machineLine()}`);
  const rows: Row[] = [];
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
