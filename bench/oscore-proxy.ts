// OSCORE on a proxied group exchange (oscore-capable-proxies-07 §2; groupcomm-proxy-07 §5): client -> GroupProxy ->
// 5 group servers on 127.0.0.2-6 (leisure 0), in three configurations on the same proxy and servers: no OSCORE, a
// client-proxy layer only (1 layer), and that layer with an end-to-end layer inside it (2 layers; the end-to-end
// keys are the Group OSCORE stand-in of test/support/oscore-group.ts: one Sender ID per server). Measures (a) the time
// until all 5 relayed responses arrived, (b) proxied exchanges per second with a window of 16, (c) the CPU time of
// the process per exchange, and the ratios to "no OSCORE". Client, proxy and servers run in this one process, so the
// CPU is all three roles together. Sequence numbers in memory (no disk). Loopback only, multicast pinned to 127.0.0.1
// with TTL 1 (UdpTransport default); bounded in count and time; everything is closed at the end.
// Run: npm run build && node --expose-gc dist/bench/oscore-proxy.js [--rounds=200] [--seconds=5]

import crypto from 'node:crypto';
import { ContextRegistry, MemorySequenceStore, SecurityContext } from '../src/oscore';
import { oscoreServerTransform } from '../src/oscore/nested';
import { ProxiedOscoreOptions } from '../src/proxy/proxy-client';
import { fmt, forceGc, loadAverage, machineLine, median, numArg, openProxiedGroup, parseArgs, percentile, proxiedExchange, sleep, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const N = 5;
const WINDOW = 16;
const h = (hex: string): Buffer => Buffer.from(hex, 'hex');

interface Config {
  name: string;
  oscore?: ProxiedOscoreOptions;
}

interface Outcome {
  ms: number;
  ok: boolean;
}

async function main(): Promise<void> {
  const args = parseArgs();
  const quick = args.quick === 'true';
  const rounds = numArg(args, 'rounds', quick ? 20 : 200);
  const seconds = numArg(args, 'seconds', quick ? 1 : 5);
  console.log(`\n${machineLine()}`);
  const port = await freeGroupPort(GROUP);

  // Keys. Client <-> proxy: one pairwise association (client Sender ID 0xa0, proxy 0x01). End to end: a group
  // Master Secret / Salt, the client's Sender ID 0x5f, one Sender ID per server (0xa1..). All in-memory sequence stores.
  const cp = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
  const mem = () => ({ sequenceStore: new MemorySequenceStore() });
  const clientToProxy = SecurityContext.derive({ ...cp, senderId: h('a0'), recipientId: h('01') }, mem());
  const proxySide = SecurityContext.derive({ ...cp, senderId: h('01'), recipientId: h('a0') }, mem());
  const grp = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
  const serverIds = Array.from({ length: N }, (_, i) => (0xa1 + i).toString(16));
  const addresses = serverIds.map((_, i) => `127.0.0.${2 + i}`);
  const e2eRequest = SecurityContext.derive({ ...grp, senderId: h('5f'), recipientId: h(serverIds[0]) }, mem());
  const e2eByAddress = new Map(addresses.map((a, i) => [a, i === 0 ? e2eRequest : SecurityContext.derive({ ...grp, senderId: h('5f'), recipientId: h(serverIds[i]) }, mem())]));

  // Servers: answer plain requests as they are, and remove / apply the end-to-end layer when there is one. One proxy
  // for all three configurations: OSCORE towards the client when the client applies it, plain otherwise.
  const g = await openProxiedGroup({
    servers: N,
    address: (i) => addresses[i],
    group: GROUP,
    port,
    serverTransport: { recvBufferSize: 4 << 20 },
    transform: (i) => oscoreServerTransform({ contexts: new ContextRegistry().add(SecurityContext.derive({ ...grp, senderId: h(serverIds[i]), recipientId: h('5f') }, mem())), maxLayers: 1, required: false }),
    proxyOscore: { contexts: new ContextRegistry().add(proxySide), required: false },
    maxExchanges: 100000,
  });

  const configs: Config[] = [
    { name: 'no OSCORE' },
    { name: '1 layer (client-proxy)' },
    { name: '2 layers (client-proxy + end-to-end)' },
  ];
  configs[1].oscore = { proxy: clientToProxy };
  configs[2].oscore = { proxy: clientToProxy, endToEnd: { context: e2eRequest, responder: (o: { address: string }) => e2eByAddress.get(o.address) } };

  /** One proxied exchange: `done` once all N responses (2.05, decrypted where there are layers) arrived or it ended. */
  const exchange = (c: Config, multicastTimeout: number, timeout: number, done: (o: Outcome) => void): void =>
    proxiedExchange(g, { expect: N, multicastTimeout, timeout, ...(c.oscore ? { oscore: c.oscore } : {}) }, (ms) => done({ ms: ms ?? 0, ok: ms !== undefined }));
  const once = (c: Config) => new Promise<Outcome>((resolve) => exchange(c, 1, 2000, resolve));

  // Check all three work, and warm up (JIT, context caches).
  for (const c of configs) {
    for (let i = 0; i < 20; i++) {
      const o = await once(c);
      if (!o.ok) throw new Error(`${c.name}: warm-up exchange did not get ${N} good responses`);
    }
  }

  // (a) latency: the configurations interleaved round by round, so that drift in the machine's load hits all alike.
  const lat: number[][] = configs.map(() => []);
  const latFail = configs.map(() => 0);
  for (let i = 0; i < rounds; i++) {
    for (let k = 0; k < configs.length; k++) {
      const o = await once(configs[k]);
      if (o.ok) lat[k].push(o.ms);
      else latFail[k]++;
    }
  }
  for (const l of lat) l.sort((a, b) => a - b);
  const med = lat.map((l) => median(l));
  const p95 = lat.map((l) => percentile(l, 95));

  // (b), (c) throughput and CPU: a window of 16 exchanges in flight for `seconds`, each configuration in turn, the
  // process's CPU (user + system) over that time divided by the completed exchanges.
  const thr: { started: number; completed: number; failed: number; wall: number; cpuUs: number }[] = [];
  for (const c of configs) {
    await sleep(300);
    forceGc();
    let started = 0;
    let completed = 0;
    let failed = 0;
    const cpu0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    const until = Date.now() + seconds * 1000;
    await new Promise<void>((resolve) => {
      let inflight = 0;
      const launch = () => {
        while (inflight < WINDOW && Date.now() < until) {
          inflight++;
          started++;
          exchange(c, 2, 3000, (o) => {
            if (o.ok) completed++;
            else failed++;
            inflight--;
            if (Date.now() < until) setImmediate(launch);
            else if (inflight === 0) resolve();
          });
        }
      };
      launch();
    });
    const cpu = process.cpuUsage(cpu0);
    thr.push({ started, completed, failed, wall: Number(process.hrtime.bigint() - w0) / 1e9, cpuUs: cpu.user + cpu.system });
  }
  const rate = thr.map((t) => t.completed / t.wall);
  const cpuPer = thr.map((t) => t.cpuUs / Math.max(t.completed, 1));

  console.log(`\nProxied exchange to ${N} group servers (leisure 0), client, proxy and servers in one process; ` +
    `latency over ${rounds} rounds (configurations interleaved), throughput window ${WINDOW} for ${seconds} s each:\n`);
  const ratio = (a: number, b: number) => `${fmt(a / b, 2)}x`;
  console.log(table(
    ['configuration', `median ms (all ${N})`, 'p95 ms', 'exchanges / s', 'CPU µs / exchange', 'failed (lat / thr)'],
    configs.map((c, k) => [c.name, fmt(med[k], 2), fmt(p95[k], 2), fmt(rate[k], 0), fmt(cpuPer[k], 0), `${latFail[k]} / ${thr[k].failed}`]),
  ));
  console.log('');
  console.log(table(
    ['', 'median latency', 'p95 latency', 'exchanges / s', 'CPU / exchange'],
    [1, 2].map((k) => [`ratio ${configs[k].name.split(' (')[0]} / none`, ratio(med[k], med[0]), ratio(p95[k], p95[0]), ratio(rate[k], rate[0]), ratio(cpuPer[k], cpuPer[0])]),
  ));
  console.log(`\nthroughput detail: ${thr.map((t, k) => `${configs[k].name}: ${t.started} started, ${t.completed} completed in ${fmt(t.wall, 2)} s`).join('; ')}`);
  console.log(`proxy counters: ${JSON.stringify(g.proxy.counters)}; load average at the end ${loadAverage()}`);

  await g.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
