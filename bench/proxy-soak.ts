// Soak run of the group proxy (groupcomm-proxy-07 §5): 20 group servers, 40 clients on their own loopback addresses
// each sending 5 proxied group requests per second (T' = 1 s, inside the default per-host limits), for 20 minutes.
// The proxy runs in its own process so that its memory is measured alone: heap + external after a full GC, every
// 30 s, with the state that holds it (exchanges, retired upstream tokens, duplicate-cache entries, verified
// addresses). Lost = a request that did not get all 20 relayed responses. Loopback only, multicast pinned to
// 127.0.0.1 with TTL 1; bounded in time (the child exits when the parent goes or at the deadline).
// Run: npm run build && node dist/bench/proxy-soak.js [--minutes=20] [--clients=40] [--servers=20] [--rate=5]

import { fork } from 'node:child_process';
import fs from 'node:fs';
import { CODES } from '../src/coap/codes';
import { GroupServer } from '../src/group/group-server';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { minTokenReuseTime, DEFAULT_PARAMS } from '../src/messaging/parameters';
import { GroupProxy } from '../src/proxy/group-proxy';
import { requestViaProxy } from '../src/proxy/proxy-client';
import { UdpTransport } from '../src/transport/udp-transport';
import { fmt, forceGc, numArg, parseArgs, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';

interface Sample {
  t: number;
  heapMB: number;
  externalMB: number;
  rssMB: number;
  exchanges: number;
  retiredTokens: number;
  dedupEntries: number;
  upstreamDedup: number;
  relayed: number;
  rejected: number;
}

async function child(): Promise<void> {
  const args = parseArgs();
  const deadline = Date.now() + numArg(args, 'minutes', 20) * 60_000 + 120_000;
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
  const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '*' }] });
  const t0 = Date.now();
  const sample = (): Sample => {
    forceGc();
    const m = process.memoryUsage();
    return {
      t: Math.round((Date.now() - t0) / 1000),
      heapMB: m.heapUsed / 1e6,
      externalMB: m.external / 1e6,
      rssMB: m.rss / 1e6,
      exchanges: proxy.activeExchanges,
      retiredTokens: upstream.retiredTokens,
      dedupEntries: listen.dedupEntries,
      upstreamDedup: upstream.dedupEntries,
      relayed: proxy.counters.relayed,
      rejected: proxy.counters.rejected,
    };
  };
  process.send!({ kind: 'ready', address: listen.transport.address(), sample: sample() });
  const timer = setInterval(() => process.send!({ kind: 'sample', sample: sample() }), 30_000);
  const stop = async () => {
    clearInterval(timer);
    await proxy.close();
    await listen.close();
    await upstream.close();
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  process.on('message', (m: { kind: string }) => {
    if (m.kind === 'stop') void stop();
    else if (m.kind === 'ping') process.send!({ kind: 'sample', sample: sample() });
  });
  setTimeout(() => void stop(), deadline - Date.now()).unref();
}

async function main(): Promise<void> {
  const args = parseArgs();
  if (args.child) return child();
  const minutes = numArg(args, 'minutes', 20);
  const nClients = numArg(args, 'clients', 40);
  const nServers = numArg(args, 'servers', 20);
  const rate = numArg(args, 'rate', 5);
  const port = await freeGroupPort(GROUP);
  const servers: GroupServer[] = [];
  for (let i = 0; i < nServers; i++) {
    const s = await GroupServer.open({ address: `127.0.0.${2 + i}`, port: 0, groups: [{ address: GROUP, port }], leisure: 0 });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(16) }));
    servers.push(s);
  }
  const proc = fork(__filename, ['--child', `--minutes=${minutes}`], { execArgv: ['--expose-gc'] });
  const samples: Sample[] = [];
  const ready = new Promise<{ address: string; port: number }>((resolve) =>
    proc.on('message', (m: { kind: string; address?: { address: string; port: number }; sample: Sample }) => {
      samples.push(m.sample);
      if (m.kind === 'ready') resolve(m.address!);
      else console.log(`t=${m.sample.t}s heap+external ${fmt(m.sample.heapMB + m.sample.externalMB, 1)} MB exchanges ${m.sample.exchanges} retired ${m.sample.retiredTokens} dedup ${m.sample.dedupEntries}/${m.sample.upstreamDedup} relayed ${m.sample.relayed}`);
    }),
  );
  const proxyAddr = await ready;
  const clients: CoapEndpoint[] = [];
  for (let i = 0; i < nClients; i++) clients.push(new CoapEndpoint(await UdpTransport.open({ bindAddress: `127.0.1.${1 + i}`, recvBufferSize: 1 << 20 })));
  let sent = 0;
  let complete = 0;
  let lost = 0;
  let responses = 0;
  const uri = `coap://${GROUP}:${port}/r`;
  const end = Date.now() + minutes * 60_000;
  const timers = clients.map((c, i) =>
    setTimeout(function tick() {
      if (Date.now() >= end) return;
      sent++;
      const ex = requestViaProxy(c, { proxy: proxyAddr, uri, multicastTimeout: 1, timeout: 2000 });
      ex.summary.then((s) => {
        responses += s.responses;
        if (s.responses >= nServers) complete++;
        else lost++;
      });
      timers[i] = setTimeout(tick, 1000 / rate);
    }, (i * 1000) / rate / nClients),
  );
  await new Promise((r) => setTimeout(r, minutes * 60_000 + 3000));
  for (const t of timers) clearTimeout(t);
  await new Promise((r) => setTimeout(r, 2500));
  const last = await new Promise<Sample>((resolve) => {
    proc.once('message', (m: { sample: Sample }) => resolve(m.sample));
    proc.send({ kind: 'ping' });
    setTimeout(() => resolve(samples[samples.length - 1]), 31_000);
  });
  if (last !== samples[samples.length - 1]) samples.push(last);
  proc.send({ kind: 'stop' });
  for (const c of clients) await c.close();
  for (const s of servers) await s.close();

  const reuse = minTokenReuseTime(DEFAULT_PARAMS) / 1000;
  console.log(`\n${nClients} clients x ${rate} proxied group requests/s, ${nServers} servers, ${minutes} min; MIN_TOKEN_REUSE_TIME ${reuse} s\n`);
  console.log(table(['t (s)', 'heap (MB)', 'external (MB)', 'heap+external (MB)', 'rss (MB)', 'exchanges', 'retired upstream tokens', 'dedup entries (client side)', 'dedup entries (upstream)'], samples.map((s) => [s.t, fmt(s.heapMB, 1), fmt(s.externalMB, 1), fmt(s.heapMB + s.externalMB, 1), fmt(s.rssMB, 0), s.exchanges, s.retiredTokens, s.dedupEntries, s.upstreamDedup])));
  const after = samples.filter((s) => s.t >= reuse + 30 && s.t <= minutes * 60);
  const vals = after.map((s) => s.heapMB + s.externalMB);
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  console.log(`\nrequests ${sent}, all ${nServers} responses ${complete}, fewer (lost) ${lost}, responses ${responses}`);
  console.log(`after MIN_TOKEN_REUSE_TIME: heap+external ${fmt(lo, 1)}-${fmt(hi, 1)} MB, spread ${fmt(((hi - lo) / lo) * 100, 1)}% of the low (${after.length} samples)`);
  fs.writeFileSync(args.out ?? 'proxy-soak-result.json', JSON.stringify({ sent, complete, lost, responses, samples }, null, 1));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
