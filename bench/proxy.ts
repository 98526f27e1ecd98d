// Group proxy benchmarks (groupcomm-proxy-07): the latency a proxy adds over a direct group request (ratio),
// proxied group exchanges per second with 10 servers, memory per pending exchange, and 10,000 concurrent pending
// exchanges held and answered without loss; beside each, a raw node:dgram relay (bench/raw-relay.ts: the client's
// datagram to the group, every answer back, nothing parsed) in the same run, the limit a proxy is measured against.
// The proxy is driven twice: by our client (requestViaProxy: what a user of this package sees end to end) and by the
// same raw client that drives the raw relay (the proxy alone against the relay, with one client that costs nearly
// nothing). Loopback only, multicast pinned to 127.0.0.1, TTL 1; bounded in count and time.
// Run: npm run build && node --expose-gc dist/bench/proxy.js [--rounds=200] [--seconds=5] [--pending=10000]

import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { encode, decode } from '../src/coap/codec';
import { CODES, codeToString } from '../src/coap/codes';
import { OPT, encodeUint, optionNumber } from '../src/coap/options';
import { GroupClient } from '../src/group/group-client';
import { GroupServer } from '../src/group/group-server';
import { GroupProxy } from '../src/proxy/group-proxy';
import { requestViaProxy } from '../src/proxy/proxy-client';
import { answeringServers, fmt, forceGc, kib, median, numArg, parseArgs, percentile, table, loopbackEndpoint } from './common';
import { freeGroupPort } from '../test/support/lamps';
import { openRawClient, openRawRelay } from './raw-relay';

const GROUP = '224.0.1.187';
const EMPTY_GROUP = '239.255.0.201';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cpuSeconds = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;



/** Time from sending until `n` responses arrived. */
function timeTo(n: number, start: (onResponse: () => void) => { cancel(): void }): Promise<number> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let got = 0;
    let handle: { cancel(): void } | undefined = undefined;
    let done = false;
    handle = start(() => {
      if (++got === n && !done) {
        done = true;
        resolve(Number(process.hrtime.bigint() - t0) / 1e6);
        setImmediate(() => handle!.cancel());
      }
    });
  });
}

async function main(): Promise<void> {
  const args = parseArgs();
  const rounds = numArg(args, 'rounds', 200);
  const seconds = numArg(args, 'seconds', 5);
  const pendingN = numArg(args, 'pending', 10000);
  const port = await freeGroupPort(GROUP);
  const servers = await answeringServers(GROUP, port);
  const listen = await loopbackEndpoint();
  const upstream = await loopbackEndpoint();
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], maxPendingPerClient: 50000, maxResponsesPerSecond: 1e9, maxExchanges: 100000 });
  const client = await loopbackEndpoint();
  const proxyAddr = listen.transport.address();
  const uri = `coap://${GROUP}:${port}/r`;

  // 1. latency
  const direct: number[] = [];
  const proxied: number[] = [];
  const rawRelayed: number[] = [];
  const gc = new GroupClient(client);
  const relay = await openRawRelay(GROUP, port);
  const rawClient = await openRawClient(relay, { path: 'r' });
  // T' = 2 s: the proxy keeps each exchange that long (the raw client sends no Early Stop Request), and ends it itself
  const rawViaProxy = await openRawClient(proxyAddr, { proxyUri: uri, tPrime: 2 });
  await rawViaProxy.verifyEcho();
  const rawProxied: number[] = [];
  let rawLost = 0;
  let rawProxiedLost = 0;
  for (let i = 0; i < rounds; i++) {
    direct.push(await timeTo(10, (on) => { const ex = gc.request({ uri, timeout: 2000 }); ex.on('response', on); return ex; }));
    const stops = proxy.counters.earlyStops;
    proxied.push(await timeTo(10, (on) => { const ex = requestViaProxy(client, { proxy: proxyAddr, uri, multicastTimeout: 1, timeout: 2000 }); ex.on('response', on); return ex; }));
    // The client's Early Stop Request (sent when the round is timed) is handled by the proxy before the next round
    // starts, so that its cost lands in no other path's round.
    for (let t = 0; t < 1000 && proxy.counters.earlyStops === stops; t++) await new Promise((r) => setImmediate(r));
    const r = await rawClient.timeTo(10, 2000);
    if (r === undefined) rawLost++;
    else rawRelayed.push(r);
    const rp = await rawViaProxy.timeTo(10, 2000);
    if (rp === undefined) rawProxiedLost++;
    else rawProxied.push(rp);
  }
  direct.sort((a, b) => a - b);
  proxied.sort((a, b) => a - b);
  rawRelayed.sort((a, b) => a - b);
  rawProxied.sort((a, b) => a - b);
  const ratio = (a: number[], b: number[]) => [`${fmt(median(a) / median(b), 2)}x`, `${fmt(percentile(a, 95) / percentile(b, 95), 2)}x`];
  console.log(`\nTime until all 10 responses arrived (${rounds} rounds each, interleaved, servers answer at once):\n`);
  console.log(table(['path', 'median ms', 'p95 ms'], [
    ['direct group request (our group client)', fmt(median(direct), 2), fmt(percentile(direct, 95), 2)],
    ['through the proxy, our client', fmt(median(proxied), 2), fmt(percentile(proxied, 95), 2)],
    [`through the proxy, raw client${rawProxiedLost ? ` (${rawProxiedLost} rounds incomplete)` : ''}`, fmt(median(rawProxied), 2), fmt(percentile(rawProxied, 95), 2)],
    [`raw node:dgram relay, raw client${rawLost ? ` (${rawLost} rounds incomplete)` : ''}`, fmt(median(rawRelayed), 2), fmt(percentile(rawRelayed, 95), 2)],
    ['ratio proxy / raw relay, same raw client', ...ratio(rawProxied, rawRelayed)],
    ['ratio proxy with our client / raw relay with raw client', ...ratio(proxied, rawRelayed)],
    ['ratio proxy with our client / direct', ...ratio(proxied, direct)],
  ]));

  // 2. throughput: proxied exchanges per second, a window of 32 in flight, each done when all 10 answered. Client,
  // proxy and servers share this process's one event loop, so the rate is its CPU: the process time of each part is
  // printed beside it (per CPU second is the figure to read on a shared machine). Completions come in steps of the
  // window (32): the rounds move in lockstep, and libuv reads at most 32 datagrams per socket per loop turn.
  let completed = 0;
  let started = 0;
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const until = Date.now() + seconds * 1000;
  await new Promise<void>((resolve) => {
    let inflight = 0;
    const launch = () => {
      while (inflight < 32 && Date.now() < until) {
        inflight++;
        started++;
        let got = 0;
        const ex = requestViaProxy(client, { proxy: proxyAddr, uri, multicastTimeout: 2, timeout: 3000 });
        ex.on('response', () => {
          if (++got === 10) {
            completed++;
            ex.cancel();
          }
        });
        ex.on('end', () => {
          inflight--;
          if (Date.now() < until) launch();
          else if (inflight === 0) resolve();
        });
      }
    };
    launch();
  });
  const proxyCpu = cpuSeconds(process.cpuUsage(cpu0));
  const proxyElu = performance.eventLoopUtilization(elu0).utilization;
  // The raw client through the proxy and through the raw relay, in four halves (proxy, relay, relay, proxy) so that
  // a change of the machine's load during the run weighs on both alike.
  const half = seconds / 2;
  const part = async (c: typeof rawClient) => {
    const c0 = process.cpuUsage();
    const e0 = performance.eventLoopUtilization();
    const r = await c.throughput(10, half, 32);
    return { completed: r.completed, relayed: r.completed * 10, elapsed: r.elapsed, cpu: cpuSeconds(process.cpuUsage(c0)), busy: performance.eventLoopUtilization(e0).active };
  };
  const sum = (a: Awaited<ReturnType<typeof part>>, b: Awaited<ReturnType<typeof part>>) => ({ completed: a.completed + b.completed, relayed: a.relayed + b.relayed, elapsed: a.elapsed + b.elapsed, cpu: a.cpu + b.cpu, busy: a.busy + b.busy });
  const p1 = await part(rawViaProxy);
  const r1 = await part(rawClient);
  const r2 = await part(rawClient);
  const p2 = await part(rawViaProxy);
  const rawProxyRun = sum(p1, p2);
  const rawRun = sum(r1, r2);
  await rawClient.close();
  await rawViaProxy.close();
  await relay.close();
  console.log(`\nProxied group exchanges with 10 servers (window 32, ${seconds} s each), then the raw client through the proxy and through the raw node:dgram relay (${half} s each, in the order proxy, relay, relay, proxy):\n`);
  const perCpu = (r: { relayed: number; cpu: number }) => r.relayed / r.cpu;
  const rate = (r: { relayed: number; elapsed: number }) => r.relayed / r.elapsed;
  const row = (name: string, r: ReturnType<typeof sum>) => [name, '-', r.completed, fmt(rate(r) / 10, 0), fmt(rate(r), 0), fmt(r.cpu, 2), `${fmt((r.busy / (r.elapsed * 1000)) * 100, 0)}%`, fmt(perCpu(r), 0)];
  const ours = { completed, relayed: completed * 10, elapsed: seconds, cpu: proxyCpu };
  console.log(table(['path', 'exchanges started', 'completed (10/10 responses)', 'exchanges / s', 'relayed responses / s', 'process CPU s', 'event loop busy', 'relayed responses / CPU s'], [
    ['proxy, our client', started, completed, fmt(completed / seconds, 0), fmt(rate(ours), 0), fmt(proxyCpu, 2), `${fmt(proxyElu * 100, 0)}%`, fmt(perCpu(ours), 0)],
    row('proxy, raw client', rawProxyRun),
    row('raw node:dgram relay, raw client', rawRun),
    ['ratio proxy / raw relay, same raw client', '', '', '', `${fmt(rate(rawProxyRun) / rate(rawRun), 2)}x`, '', '', `${fmt(perCpu(rawProxyRun) / perCpu(rawRun), 2)}x`],
    ['ratio proxy with our client / raw relay', '', '', '', `${fmt(rate(ours) / rate(rawRun), 2)}x`, '', '', `${fmt(perCpu(ours) / perCpu(rawRun), 2)}x`],
  ]));
  // Anything that paces or refuses would show here: the proxy's limits, the message layer's token cap, rounds cut short.
  const tokensRefused = listen.counters.tokensRefused + upstream.counters.tokensRefused + client.counters.tokensRefused;
  console.log(`refused by the proxy's limits: ${JSON.stringify(proxy.limits.refused)}; rate-dropped: ${proxy.counters.rateDropped}; tokens refused: ${tokensRefused}; started but not completed: ${started - completed}`);
  // the raw client's exchanges end at their T' (2 s): part 3 starts from a proxy that holds none
  for (let i = 0; i < 100 && proxy.activeExchanges > 0; i++) await sleep(50);

  // 3. memory per pending exchange, and 10,000 pending exchanges answered without loss.
  const raw = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  await new Promise<void>((r) => raw.bind(0, '127.0.0.1', () => r()));
  const relayed = new Set<string>();
  let echo: Buffer | undefined;
  /** what the proxy answered the raw client other than relayed 2.05s (refusals would show here) */
  const answers = new Map<string, number>();
  raw.on('message', (m) => {
    try {
      const d = decode(m);
      if (d.code !== CODES.CONTENT) answers.set(codeToString(d.code), (answers.get(codeToString(d.code)) ?? 0) + 1);
      if (d.code === CODES.UNAUTHORIZED) echo ??= d.options.find((o) => o.number === OPT.ECHO)?.value;
      if (d.code === CODES.CONTENT) relayed.add(d.token.toString('hex'));
    } catch {
      /* ignore */
    }
  });
  const mt = optionNumber('Multicast-Timeout');
  const emptyPort = await freeGroupPort(EMPTY_GROUP);
  const send = async (target: string, tPrime: number, n: number, tag: number) => {
    for (let i = 0; i < n; i++) {
      const token = Buffer.alloc(8);
      token.writeUInt32BE(tag, 0);
      token.writeUInt32BE(i, 4);
      const msg = encode({ type: 'NON', code: CODES.GET, messageId: (tag * 20000 + i) & 0xffff, token, payload: Buffer.alloc(0), options: [{ number: OPT.PROXY_URI, value: Buffer.from(target) }, { number: mt, value: encodeUint(tPrime) }] });
      raw.send(msg, proxyAddr.port, proxyAddr.address);
      if (i % 500 === 499) await sleep(25);
    }
  };
  // RFC 9175 §2.4: this socket's address answers the proxy's Echo once (T' = 0, nothing relayed), then it is verified.
  let verifyMid = 0;
  const verify = (withEcho?: Buffer) =>
    raw.send(encode({ type: 'NON', code: CODES.GET, messageId: 0xff00 + verifyMid++, token: Buffer.from(withEcho ? 'echo' : 'ask'), payload: Buffer.alloc(0), options: [{ number: OPT.PROXY_URI, value: Buffer.from(uri) }, { number: mt, value: encodeUint(0) }, ...(withEcho ? [{ number: OPT.ECHO, value: withEcho }] : [])].sort((a, b) => a.number - b.number) }), proxyAddr.port, proxyAddr.address);
  // Waits for the events themselves (the 4.01, then the proxy forwarding the repeat), not for fixed times: under load
  // a fixed wait could miss the Echo, and then every request below would be challenged instead of held.
  const verified = async (p: GroupProxy) => {
    echo = undefined;
    verify();
    for (let i = 0; i < 1000 && !echo; i++) await sleep(10);
    if (!echo) throw new Error('the proxy sent no Echo challenge within 10 s');
    const forwarded = p.counters.groupRequests;
    verify(echo);
    for (let i = 0; i < 1000 && p.counters.groupRequests === forwarded; i++) await sleep(10);
    if (p.counters.groupRequests === forwarded) throw new Error('the request with Echo was not forwarded within 10 s');
  };
  await verified(proxy);
  forceGc();
  const heap0 = process.memoryUsage().heapUsed;
  await send(`coap://${EMPTY_GROUP}:${emptyPort}/r`, 60, pendingN, 1);
  const t0 = Date.now();
  while (proxy.activeExchanges < pendingN && Date.now() - t0 < 20000) await sleep(50);
  const held = proxy.activeExchanges;
  if (held < pendingN) console.log(`held ${held} of ${pendingN}; the proxy answered: ${JSON.stringify([...answers])}; limits refused ${JSON.stringify(proxy.limits.refused)}; listen ${JSON.stringify(listen.counters)}`);
  forceGc();
  const heap1 = process.memoryUsage().heapUsed;
  await proxy.close(); // ends the pending exchanges
  const proxy2 = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], maxPendingPerClient: 50000, maxResponsesPerSecond: 1e9, maxExchanges: 100000 });
  // every one of them answered by one slow server (leisure 3 s), relayed back
  const slow = await GroupServer.open({ address: '127.0.0.30', port: 0, groups: [{ address: EMPTY_GROUP, port: emptyPort }], leisure: 3000, transport: { recvBufferSize: 8 << 20 } });
  slow.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'ok' }));
  await verified(proxy2);
  await send(`coap://${EMPTY_GROUP}:${emptyPort}/r`, 20, pendingN, 2);
  const t1 = Date.now();
  let peak = 0;
  while (relayed.size < pendingN && Date.now() - t1 < 25000) {
    peak = Math.max(peak, proxy2.activeExchanges);
    await sleep(50);
  }
  console.log(`\nPending exchanges at the proxy (${fmt(pendingN)} requests from one client):\n`);
  console.log(table(['held at once', 'heap per pending exchange', 'peak pending (answered run)', 'answered and relayed', 'lost'], [
    [fmt(held), kib((heap1 - heap0) / Math.max(held, 1), 2), fmt(peak), fmt(relayed.size), fmt(pendingN - relayed.size)],
  ]));
  await proxy2.close();
  await slow.close();
  await new Promise<void>((r) => raw.close(() => r()));
  await client.close();
  await listen.close();
  await upstream.close();
  await Promise.all(servers.map((s) => s.close()));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
