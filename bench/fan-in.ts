// Fan-in benchmark (groupcomm-bis §3.1 / RFC 10020; RFC 7252 §8.2 Leisure): one NON group request to N servers
// on loopback multicast (N = 10, 100, 1000), with the servers' Leisure and with all of them answering at once.
// Measures the time to collect every response (beside a raw node:dgram client on the same servers, interleaved), the responses lost (sent by servers minus received, with the
// kernel's UDP receive-buffer drop counter as the reason) and the client memory per group exchange.
// Run: npm run build && node --expose-gc dist/bench/fan-in.js [--sizes=10,100,1000] [--leisure=5000] [--buffer=4194304]
//      [--leisure-rounds=3] [--instant-rounds=5] [--quick]

import { fork, ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { GroupClient, GroupExchange, GroupResponse } from '../src/group/group-client';
import { GroupServer } from '../src/group/group-server';
import { encode } from '../src/coap/codec';
import { CODES } from '../src/coap/codes';
import { OPT } from '../src/coap/options';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { UdpTransport, literalLookup } from '../src/transport/udp-transport';
import { fmt, loadAverage, forceGc, kib, liveBytes, machineLine, median, numArg, listArg, parseArgs, sleep, table, udpRcvbufErrors, waitFor } from './common';
import { ChildMessage, PoolOptions, PoolStats, closePool, freeGroupPort, openPool, poolStats } from './fan-in-servers';

const GROUP = '224.0.1.187'; // "All CoAP Nodes"; joined and sent on 127.0.0.1 only, TTL 1
/** default --buffer: net.core.rmem_max on the reference machine (Linux doubles it to 8 MiB) */
let bigBuffer = 4 * 1024 * 1024;

interface Pool {
  stats(): Promise<PoolStats>;
  close(): Promise<void>;
}

/** Servers in a forked process: the client's event loop is free to read while they answer. */
async function forkPool(o: PoolOptions): Promise<Pool & { setupMs: number }> {
  const child: ChildProcess = fork(path.join(__dirname, 'fan-in-servers.js'), [JSON.stringify({ ...o, maxMs: 10 * 60_000 })], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = (type: ChildMessage['type']) =>
    new Promise<ChildMessage>((resolve, reject) => {
      const onMsg = (m: ChildMessage) => {
        if (m.type !== type && m.type !== 'error') return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        if (m.type === 'error') reject(new Error(`server pool: ${m.message}`));
        else resolve(m);
      };
      const onExit = (code: number | null) => {
        child.off('message', onMsg);
        reject(new Error(`server pool exited (${code})`));
      };
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  const ready = (await next('ready')) as Extract<ChildMessage, { type: 'ready' }>;
  return {
    setupMs: ready.ms,
    async stats() {
      const p = next('stats');
      child.send({ cmd: 'stats' });
      return ((await p) as Extract<ChildMessage, { type: 'stats' }>).stats;
    },
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ cmd: 'close' });
      const t = setTimeout(() => child.kill(), 30_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Servers in the client's own process: a true burst, since the client reads only after all have answered. */
async function localPool(o: PoolOptions): Promise<Pool & { setupMs: number }> {
  const t0 = Date.now();
  const servers: GroupServer[] = await openPool(o);
  return { setupMs: Date.now() - t0, stats: async () => poolStats(servers), close: () => closePool(servers) };
}

async function openClient(recvBufferSize?: number): Promise<{ ep: CoapEndpoint; gc: GroupClient }> {
  const transport = await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize });
  transport.on('error', () => undefined);
  const ep = new CoapEndpoint(transport);
  return { ep, gc: new GroupClient(ep) };
}

/**
 * The physical limit for the client side: a bare node:dgram socket with the same address (127.0.0.1), multicast
 * interface, TTL and receive buffer as our client, sending the same NON GET to the same servers and counting
 * datagrams from distinct sources, with nothing parsed.
 */
async function openRawClient(recvBufferSize?: number): Promise<dgram.Socket> {
  // sends without waiting a tick for the lookup of an address literal, as our transport does (udp-transport.ts)
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize, lookup: literalLookup });
  s.on('error', () => undefined);
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  s.setMulticastInterface('127.0.0.1');
  s.setMulticastTTL(1);
  return s;
}

let rawMid = 1;
async function rawRound(s: dgram.Socket, pool: Pool, groupPort: number, n: number, deadline: number): Promise<RoundResult> {
  const before = await pool.stats();
  const drops0 = udpRcvbufErrors();
  const request = encode({ type: 'NON', code: CODES.GET, messageId: rawMid++ & 0xffff, token: crypto.randomBytes(4), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
  const sources = new Set<string>();
  let allMs: number | undefined;
  let onMsg: (m: Buffer, r: dgram.RemoteInfo) => void = () => undefined;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, deadline);
    onMsg = (_m, r) => {
      sources.add(`${r.address}:${r.port}`);
      if (allMs === undefined && sources.size === n) {
        allMs = performance.now() - t0;
        clearTimeout(timer);
        resolve();
      }
    };
    s.on('message', onMsg);
    s.send(request, groupPort, GROUP);
  });
  s.off('message', onMsg);
  await sleep(150);
  const after = await pool.stats();
  const drops1 = udpRcvbufErrors();
  return {
    allMs,
    received: sources.size,
    sent: after.responses - before.responses,
    kernelDrops: drops0 === undefined || drops1 === undefined ? undefined : drops1 - drops0,
  };
}

interface RoundResult {
  /** ms from sending the request to the last of the N responses; undefined if some never came */
  allMs?: number;
  received: number;
  sent: number;
  kernelDrops?: number;
}

async function round(gc: GroupClient, pool: Pool, uri: string, n: number, deadline: number): Promise<RoundResult> {
  const before = await pool.stats();
  const drops0 = udpRcvbufErrors();
  let allMs: number | undefined;
  const t0 = performance.now();
  const ex = gc.request({ uri, timeout: deadline });
  ex.on('response', () => {
    if (allMs === undefined && ex.responses.length === n) {
      allMs = performance.now() - t0;
      ex.cancel(); // everything is in: no need to sit out the deadline
    }
  });
  const summary = await ex.summary;
  await sleep(150); // let stragglers land so the servers' counters are final
  const after = await pool.stats();
  const drops1 = udpRcvbufErrors();
  return {
    allMs,
    received: summary.responders.length,
    sent: after.responses - before.responses,
    kernelDrops: drops0 === undefined || drops1 === undefined ? undefined : drops1 - drops0,
  };
}

interface Scenario {
  name: string;
  answers: 'leisure' | 'instant';
  where: 'child' | 'same';
  buffer?: number;
}

interface Row {
  n: number;
  scenario: Scenario;
  results: RoundResult[];
  /** the raw node:dgram client's rounds, interleaved with ours (instant answers only) */
  raw?: RoundResult[];
}

function bufferName(b?: number): string {
  if (!b) return 'default';
  return b >= 2 ** 20 ? `${fmt(b / 2 ** 20, b % 2 ** 20 ? 2 : 0)} MiB` : `${fmt(b / 1024)} KiB`;
}

function summarize(rows: Row[], leisure: number): string {
  return table(
    ['servers', 'answers', 'servers run in', 'client rcvbuf', 'rounds', 'collect all: median ms', 'min–max ms', 'raw dgram: median ms', 'raw min–max ms', 'ours / raw', 'sent', 'received', 'lost', 'raw lost', 'kernel rcvbuf drops'],
    rows.map((r) => {
      const times = r.results.filter((x) => x.allMs !== undefined).map((x) => x.allMs!);
      const sent = r.results.reduce((a, x) => a + x.sent, 0);
      const received = r.results.reduce((a, x) => a + x.received, 0);
      const drops = r.results.every((x) => x.kernelDrops !== undefined) ? fmt(r.results.reduce((a, x) => a + x.kernelDrops!, 0)) : 'n/a';
      const incomplete = r.results.length - times.length;
      const raw = (r.raw ?? []).filter((x) => x.allMs !== undefined).map((x) => x.allMs!);
      const rawLost = r.raw ? fmt(r.raw.reduce((a, x) => a + x.sent - x.received, 0)) : '-';
      return [
        fmt(r.n),
        r.scenario.answers === 'leisure' ? `Leisure ${leisure} ms` : 'at once',
        r.scenario.where === 'child' ? 'child process' : 'client process',
        bufferName(r.scenario.buffer),
        r.results.length,
        times.length ? fmt(median(times), 1) + (incomplete ? ` (${incomplete} incomplete)` : '') : '-',
        times.length ? `${fmt(Math.min(...times), 1)}–${fmt(Math.max(...times), 1)}` : '-',
        raw.length ? fmt(median(raw), 1) : '-',
        raw.length ? `${fmt(Math.min(...raw), 1)}–${fmt(Math.max(...raw), 1)}` : '-',
        raw.length && times.length ? `${fmt(median(times) / median(raw), 2)}x` : '-',
        fmt(sent),
        fmt(received),
        fmt(sent - received),
        rawLost,
        drops,
      ];
    }),
  );
}

/**
 * Client memory of K concurrent exchanges that each hold N responses (heap + Buffers, after a full GC); with `read`, a
 * 'response' listener reads every message (as the coap-group-request node does), so each held response keeps its
 * decoded message too.
 */
async function memoryWithResponses(n: number, groupPort: number, read = false): Promise<{ k: number; perExchange: number; perResponse: number }> {
  const pool = await forkPool({ n, group: GROUP, groupPort, leisure: 0 });
  const { ep, gc } = await openClient(bigBuffer);
  const k = Math.max(1, Math.round(1000 / n));
  try {
    const uri = `coap://${GROUP}:${groupPort}/light`;
    await round(gc, pool, uri, n, 2000); // warm-up
    forceGc();
    const before = liveBytes();
    const exs: GroupExchange[] = [];
    let bytesRead = 0;
    for (let i = 0; i < k; i++) {
      const ex = gc.request({ uri, timeout: 20_000 });
      if (read) ex.on('response', (r: GroupResponse) => (bytesRead += r.message.payload.length));
      exs.push(ex);
    }
    const complete = await waitFor(() => exs.every((e) => e.responses.length === n), 10_000);
    await sleep(50);
    forceGc();
    const delta = liveBytes() - before;
    const got = exs.reduce((a, e) => a + e.responses.length, 0);
    for (const e of exs) e.cancel();
    if (!complete) console.error(`memory: only ${got} of ${k * n} responses arrived`);
    if (read && bytesRead === 0) console.error('memory: the listener read nothing');
    return { k, perExchange: delta / k, perResponse: delta / Math.max(1, got) };
  } finally {
    await ep.close();
    await pool.close();
  }
}

/** Client memory of a group exchange still waiting for its first response, and of the retired token left after it. */
async function memoryPending(k: number): Promise<{ pending: number; retired: number }> {
  const port = await freeGroupPort(GROUP); // nobody listens there: the requests stay pending
  const { ep, gc } = await openClient();
  try {
    const uri = `coap://${GROUP}:${port}/light`;
    gc.request({ uri, timeout: 10 }); // warm-up of the code paths
    await sleep(50);
    forceGc();
    const before = liveBytes();
    const sentBefore = ep.transport.counters.sent;
    const exs: GroupExchange[] = [];
    for (let i = 0; i < k; i++) exs.push(gc.request({ uri, timeout: 120_000 }));
    await waitFor(() => ep.transport.counters.sent - sentBefore >= k, 10_000);
    forceGc();
    const pending = (liveBytes() - before) / k;
    for (const e of exs) e.cancel();
    exs.length = 0;
    await sleep(20);
    forceGc();
    const retired = (liveBytes() - before) / k;
    return { pending, retired };
  } finally {
    await ep.close();
  }
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const args = parseArgs(argv);
  const quick = args.quick === 'true';
  const sizes = listArg(args, 'sizes', quick ? ['10', '100'] : ['10', '100', '1000']).map(Number);
  const leisure = numArg(args, 'leisure', quick ? 1000 : 5000);
  const leisureRounds = numArg(args, 'leisure-rounds', quick ? 1 : 3);
  const instantRounds = numArg(args, 'instant-rounds', quick ? 2 : 5);
  bigBuffer = numArg(args, 'buffer', bigBuffer);
  const scenarios: Scenario[] = [
    { name: 'leisure', answers: 'leisure', where: 'child' },
    { name: 'instant-child', answers: 'instant', where: 'child' },
    { name: 'instant-child-big', answers: 'instant', where: 'child', buffer: bigBuffer },
    { name: 'instant-same', answers: 'instant', where: 'same' },
    { name: 'instant-same-big', answers: 'instant', where: 'same', buffer: bigBuffer },
  ];
  const t0 = Date.now();
  console.log(`# fan-in: one group request, N servers on 127.0.x.y, group ${GROUP} on 127.0.0.1 (TTL 1)`);
  console.log(`machine: ${machineLine()}`);
  let rmemDefault = '';
  try {
    rmemDefault = fs.readFileSync('/proc/sys/net/core/rmem_default', 'utf8').trim();
  } catch {
    /* not Linux */
  }
  console.log(`client receive buffer: default = net.core.rmem_default (${rmemDefault || '?'} B); big = recvBufferSize ${bigBuffer} (kernel doubles it)`);

  const rows: Row[] = [];
  for (const n of sizes) {
    const groupPort = await freeGroupPort(GROUP);
    const uri = `coap://${GROUP}:${groupPort}/light`;
    // Scenarios that share a server pool run back to back on it.
    const byPool: Scenario[][] = [
      scenarios.filter((s) => s.answers === 'leisure'),
      scenarios.filter((s) => s.answers === 'instant' && s.where === 'child'),
      scenarios.filter((s) => s.answers === 'instant' && s.where === 'same'),
    ];
    for (const all of byPool) {
      const group = all.filter((sc) => (sc.answers === 'leisure' ? leisureRounds : instantRounds) > 0);
      if (group.length === 0) continue;
      const first = group[0];
      const poolOpts: PoolOptions = { n, group: GROUP, groupPort, leisure: first.answers === 'leisure' ? leisure : 0 };
      const pool = first.where === 'child' ? await forkPool(poolOpts) : await localPool(poolOpts);
      process.stderr.write(`  N=${n}: ${n} servers up in ${pool.setupMs} ms\n`);
      try {
        for (const sc of group) {
          const { ep, gc } = await openClient(sc.buffer);
          // The raw baseline only where all answer at once: with Leisure both just wait out the servers' timers.
          const rawSock = sc.answers === 'instant' ? await openRawClient(sc.buffer) : undefined;
          try {
            const deadline = sc.answers === 'leisure' ? leisure + 2000 : 2000;
            await round(gc, pool, uri, n, deadline); // warm-up, not counted
            if (rawSock) await rawRound(rawSock, pool, groupPort, n, deadline);
            const results: RoundResult[] = [];
            const raw: RoundResult[] = [];
            const rounds = sc.answers === 'leisure' ? leisureRounds : instantRounds;
            for (let r = 0; r < rounds; r++) {
              // alternate which goes first, so neither always meets the servers fresh from the other's round
              if (rawSock && r % 2 === 1) raw.push(await rawRound(rawSock, pool, groupPort, n, deadline));
              results.push(await round(gc, pool, uri, n, deadline));
              if (rawSock && r % 2 === 0) raw.push(await rawRound(rawSock, pool, groupPort, n, deadline));
            }
            rows.push({ n, scenario: sc, results, ...(rawSock ? { raw } : {}) });
            const show = (xs: RoundResult[]) => xs.map((x) => `${x.received}/${x.sent}${x.allMs ? ` in ${x.allMs.toFixed(1)} ms` : ''}`).join(', ');
            process.stderr.write(`  N=${n} ${sc.name}: ${show(results)}${rawSock ? `; raw dgram: ${show(raw)}` : ''}\n`);
          } finally {
            await ep.close();
            if (rawSock) await new Promise<void>((resolve) => rawSock.close(() => resolve()));
          }
        }
      } finally {
        await pool.close();
      }
    }
  }
  console.log('\n## Time to collect all responses, and responses lost\n');
  console.log(summarize(rows, leisure));
  console.log('\n"-" in "collect all": some response never arrived in any round (see "lost").');
  console.log('"sent" counts responses the servers handed to the kernel; "lost" = sent - received (distinct responders).');
  console.log('"raw dgram": a bare node:dgram socket on the same address, buffer and servers, same request, nothing parsed, rounds interleaved with ours.');
  console.log('"kernel rcvbuf drops" is the machine-wide /proc/net/snmp Udp RcvbufErrors delta during the rounds.');

  console.log('\n## Client memory per group exchange (heap + external, after a full GC)\n');
  const memRows: (string | number)[][] = [];
  const pendingK = quick ? 2000 : 10_000;
  const pend = await memoryPending(pendingK);
  memRows.push(['0 (still waiting)', fmt(pendingK), kib(pend.pending, 2), '-']);
  for (const n of sizes) {
    const m = await memoryWithResponses(n, await freeGroupPort(GROUP));
    memRows.push([fmt(n), fmt(m.k), kib(m.perExchange, 1), `${fmt(m.perResponse)} B`]);
  }
  const largest = Math.max(...sizes);
  const read = await memoryWithResponses(largest, await freeGroupPort(GROUP), true);
  memRows.push([`${fmt(largest)}, each message read in the 'response' event`, fmt(read.k), kib(read.perExchange, 1), `${fmt(read.perResponse)} B`]);
  console.log(table(['responses held', 'concurrent exchanges', 'memory per exchange', 'per response'], memRows));
  console.log(`\nAfter an exchange ends its token stays retired for MIN_TOKEN_REUSE_TIME (groupcomm-bis §3.1.5): ${fmt(pend.retired)} B per retired token.`);
  console.log(`\nfan-in done in ${((Date.now() - t0) / 1000).toFixed(1)} s; load average at the end ${loadAverage()}`);
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
