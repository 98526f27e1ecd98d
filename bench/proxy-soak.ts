// Soak run of the group proxy (groupcomm-proxy-07 §5): 20 group servers, 40 clients on their own loopback addresses
// each sending 5 proxied group requests per second (T' = 1 s, inside the default per-host limits), for 20 minutes.
// The proxy runs in its own process so that its memory is measured alone, the servers in two more and the clients
// in the parent (in one process, the 60 endpoints' duplicate caches made garbage-collector pauses of over a second,
// and servers that answer after T' lose their responses at the proxy as the draft says). Heap + external after a full GC, every
// 30 s, with the state that holds it (exchanges, retired upstream tokens, duplicate-cache entries, verified
// addresses). Lost = a request that did not get all 20 relayed responses. To say where a lost response went, the run
// reads each socket's kernel drop counter (the last column of /proc/net/udp: datagrams dropped because the socket's
// receive queue was full) for every socket of the soak, the proxy's own drop counters (late, rate, limits), the
// message layers' counters (late and unmatched responses, duplicates) and the longest event-loop stall of each
// process. Loopback only, multicast pinned to 127.0.0.1 with TTL 1; bounded in time (the child exits when the parent
// goes or at the deadline).
// Run: npm run build && node dist/bench/proxy-soak.js [--minutes=20] [--clients=40] [--servers=20] [--rate=5]
//      [--server-procs=2]

import { ChildProcess, fork } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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
  /** the proxy's drops and the message layers' counters, cumulative */
  drops: Record<string, number>;
  /** longest event-loop stall of the proxy process since the previous sample (ms) */
  maxLagMs: number;
}

/** Kernel receive-queue drops per local socket, from /proc/net/udp ("address:port" -> drops, summed per key). */
function socketDrops(): Map<string, number> {
  const out = new Map<string, number>();
  let text = '';
  try {
    text = fs.readFileSync('/proc/net/udp', 'utf8');
  } catch {
    return out; // not Linux: the soak then reports no kernel drops
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13) continue;
    const [hexAddr, hexPort] = f[1].split(':');
    // the address is the in-memory (little-endian on x86) form of the IPv4 address
    const n = parseInt(hexAddr, 16);
    const addr = os.endianness() === 'LE' ? `${n & 0xff}.${(n >>> 8) & 0xff}.${(n >>> 16) & 0xff}.${n >>> 24}` : `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
    const key = `${addr}:${parseInt(hexPort, 16)}`;
    out.set(key, (out.get(key) ?? 0) + Number(f[f.length - 1]));
  }
  return out;
}

async function child(): Promise<void> {
  const args = parseArgs();
  const deadline = Date.now() + numArg(args, 'minutes', 20) * 60_000 + 120_000;
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
  const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '*' }] });
  const t0 = Date.now();
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const sample = (): Sample => {
    const maxLagMs = lag.max / 1e6;
    forceGc();
    lag.reset(); // after the forced GC, so that the next window's stall is not the harness's own gc()
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
      drops: {
        lateDropped: proxy.counters.lateDropped, rateDropped: proxy.counters.rateDropped, limited: proxy.counters.limited,
        amplificationDrops: proxy.counters.amplificationDrops, echoChallenges: proxy.counters.echoChallenges,
        upstreamLate: upstream.counters.lateGroupResponses, upstreamUnmatched: upstream.counters.unmatchedResponses,
        upstreamDuplicates: upstream.counters.duplicates, listenDuplicates: listen.counters.duplicates,
        listenRetransmissions: listen.counters.retransmissions, listenTimeouts: listen.counters.transmitTimeouts,
        sendErrors: listen.transport.counters.sendErrors + upstream.transport.counters.sendErrors,
      },
      maxLagMs,
    };
  };
  process.send!({ kind: 'ready', address: listen.transport.address(), upstream: upstream.transport.address(), sample: sample() });
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
    else if (m.kind === 'ping') process.send!({ kind: 'final', sample: sample() });
  });
  setTimeout(() => void stop(), deadline - Date.now()).unref();
}

/** A process of group servers: first..first+count-1 on 127.0.0.(2+i), joined to the group on `port`. */
async function serversChild(): Promise<void> {
  const args = parseArgs();
  const deadline = Date.now() + numArg(args, 'minutes', 20) * 60_000 + 120_000;
  const first = numArg(args, 'first', 0);
  const count = numArg(args, 'count', 10);
  const port = numArg(args, 'port', 5683);
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const servers: GroupServer[] = [];
  for (let i = first; i < first + count; i++) {
    // 200 group requests per second reach every server (far more than a lamp sees): a 1 MiB receive queue, as the
    // proxy's and the clients' sockets have, instead of the system default (212 KiB here), which dropped datagrams
    // during the garbage collector's pauses
    const s = await GroupServer.open({ address: `127.0.0.${2 + i}`, port: 0, groups: [{ address: GROUP, port }], leisure: 0, transport: { recvBufferSize: 1 << 20 } });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(16) }));
    servers.push(s);
  }
  const report = (id: number) => {
    const r = { kind: 'servers', id, received: 0, sent: 0, sendErrors: 0, handlerErrors: 0, maxLagMs: lag.max / 1e6 };
    lag.reset();
    for (const s of servers) {
      r.received += s.endpoint.counters.received;
      r.sent += s.endpoint.counters.sent;
      r.sendErrors += s.endpoint.transport.counters.sendErrors;
      r.handlerErrors += s.endpoint.counters.handlerErrors;
    }
    return r;
  };
  process.send!({ kind: 'ready', addresses: servers.map((s) => s.address()) });
  const stop = async () => {
    for (const s of servers) await s.close();
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  process.on('message', (m: { kind: string; id: number }) => {
    if (m.kind === 'stop') void stop();
    else if (m.kind === 'ping') process.send!(report(m.id));
  });
  setTimeout(() => void stop(), deadline - Date.now()).unref();
}

interface ServersReport {
  id: number;
  received: number;
  sent: number;
  sendErrors: number;
  handlerErrors: number;
  maxLagMs: number;
}

async function main(): Promise<void> {
  const args = parseArgs();
  if (args.child) return child();
  if (args['servers-child']) return serversChild();
  const minutes = numArg(args, 'minutes', 20);
  const nClients = numArg(args, 'clients', 40);
  const nServers = numArg(args, 'servers', 20);
  const rate = numArg(args, 'rate', 5);
  const nProcs = Math.max(1, Math.min(nServers, numArg(args, 'server-procs', 2)));
  const port = await freeGroupPort(GROUP);
  const serverProcs: ChildProcess[] = [];
  const serverAddresses: { address: string; port: number }[] = [];
  for (let k = 0, first = 0; k < nProcs; k++) {
    const count = Math.floor(nServers / nProcs) + (k < nServers % nProcs ? 1 : 0);
    const sp = fork(__filename, ['--servers-child', `--first=${first}`, `--count=${count}`, `--port=${port}`, `--minutes=${minutes}`], { execArgv: [] });
    first += count;
    serverProcs.push(sp);
    serverAddresses.push(...(await new Promise<{ address: string; port: number }[]>((resolve) => sp.once('message', (m: { addresses: { address: string; port: number }[] }) => resolve(m.addresses)))));
  }
  // one reply per ping, matched by id; a server process that does not answer within 30 s stops the run
  let pingId = 0;
  const pingServers = (): Promise<ServersReport[]> => {
    const id = ++pingId;
    return Promise.all(serverProcs.map((sp) => new Promise<ServersReport>((resolve, reject) => {
      const timer = setTimeout(() => {
        sp.off('message', onReply);
        reject(new Error('a server process did not answer within 30 s'));
      }, 30_000);
      const onReply = (m: ServersReport) => {
        if (m.id !== id) return;
        clearTimeout(timer);
        sp.off('message', onReply);
        resolve(m);
      };
      sp.on('message', onReply);
      sp.send({ kind: 'ping', id });
    })));
  };
  const serverLags: number[] = [];
  const proc = fork(__filename, ['--child', `--minutes=${minutes}`], { execArgv: ['--expose-gc'] });
  const samples: Sample[] = [];
  const parentLag = monitorEventLoopDelay({ resolution: 10 });
  parentLag.enable();
  const parentLags: number[] = [];
  let upstreamAddr = { address: '', port: 0 };
  const ready = new Promise<{ address: string; port: number }>((resolve) =>
    proc.on('message', (m: { kind: string; address?: { address: string; port: number }; upstream?: { address: string; port: number }; sample: Sample }) => {
      samples.push(m.sample);
      if (m.kind === 'ready') {
        upstreamAddr = m.upstream!;
        resolve(m.address!);
      } else if (m.kind === 'sample') {
        parentLags.push(parentLag.max / 1e6);
        parentLag.reset();
        pingServers().then((rs) => {
          serverLags.push(Math.max(...rs.map((r) => r.maxLagMs)));
          console.log(`t=${m.sample.t}s heap+external ${fmt(m.sample.heapMB + m.sample.externalMB, 1)} MB exchanges ${m.sample.exchanges} retired ${m.sample.retiredTokens} dedup ${m.sample.dedupEntries}/${m.sample.upstreamDedup} relayed ${m.sample.relayed} late ${m.sample.drops.upstreamLate} max stall proxy ${fmt(m.sample.maxLagMs, 0)} / servers ${fmt(serverLags[serverLags.length - 1], 0)} / clients ${fmt(parentLags[parentLags.length - 1], 0)} ms; load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
        }).catch((err: Error) => {
          console.error(err.message);
          process.exit(1);
        });
      }
    }),
  );
  const proxyAddr = await ready;
  const clients: CoapEndpoint[] = [];
  for (let i = 0; i < nClients; i++) clients.push(new CoapEndpoint(await UdpTransport.open({ bindAddress: `127.0.1.${1 + i}`, recvBufferSize: 1 << 20 })));
  let sent = 0;
  let complete = 0;
  let lost = 0;
  let responses = 0;
  const missing = new Map<number, number>(); // responses received -> requests that ended with that many
  const clientErrors = new Map<string, number>();
  // every socket of the soak, by role, for the kernel drop counters
  const roles = new Map<string, string>();
  roles.set(`${proxyAddr.address}:${proxyAddr.port}`, 'proxy, client side');
  roles.set(`${upstreamAddr.address}:${upstreamAddr.port}`, 'proxy, upstream');
  roles.set(`${GROUP}:${port}`, `servers, group sockets (all ${nServers})`);
  for (const a of serverAddresses) roles.set(`${a.address}:${a.port}`, 'servers, unicast sockets');
  for (const c of clients) roles.set(`${c.transport.address().address}:${c.transport.address().port}`, 'clients');
  const dropsByRole = (): Map<string, number> => {
    const out = new Map<string, number>();
    for (const [k, n] of socketDrops()) {
      const role = roles.get(k);
      if (role) out.set(role, (out.get(role) ?? 0) + n);
    }
    return out;
  };
  const dropsAtStart = dropsByRole();
  const uri = `coap://${GROUP}:${port}/r`;
  const end = Date.now() + minutes * 60_000;
  const timers = clients.map((c, i) =>
    setTimeout(function tick() {
      if (Date.now() >= end) return;
      sent++;
      const ex = requestViaProxy(c, { proxy: proxyAddr, uri, multicastTimeout: 1, timeout: 2000 });
      ex.summary.then((s) => {
        for (const e of [...s.errors.map((x) => x.error), ...ex.proxyErrors.map((x) => `${x.code} ${x.message}`)]) clientErrors.set(e, (clientErrors.get(e) ?? 0) + 1);
        responses += s.responses;
        if (s.responses >= nServers) complete++;
        else {
          lost++;
          missing.set(s.responses, (missing.get(s.responses) ?? 0) + 1);
        }
      });
      timers[i] = setTimeout(tick, 1000 / rate);
    }, (i * 1000) / rate / nClients),
  );
  await new Promise((r) => setTimeout(r, minutes * 60_000 + 3000));
  for (const t of timers) clearTimeout(t);
  await new Promise((r) => setTimeout(r, 2500));
  const last = await new Promise<Sample>((resolve) => {
    const onFinal = (m: { kind: string; sample: Sample }) => {
      if (m.kind !== 'final') return;
      proc.off('message', onFinal);
      resolve(m.sample);
    };
    proc.on('message', onFinal);
    proc.send({ kind: 'ping' });
    setTimeout(() => resolve(samples[samples.length - 1]), 31_000);
  });
  if (last !== samples[samples.length - 1]) samples.push(last);
  const dropsAtEnd = dropsByRole();
  const clientCounters = { unmatched: 0, late: 0, duplicates: 0, malformed: 0, sendErrors: 0 };
  for (const c of clients) {
    clientCounters.sendErrors += c.transport.counters.sendErrors;
    clientCounters.unmatched += c.counters.unmatchedResponses;
    clientCounters.late += c.counters.lateGroupResponses;
    clientCounters.duplicates += c.counters.duplicates;
    clientCounters.malformed += Object.values(c.counters.malformed).reduce((a, b) => a + b, 0);
  }
  const serverCounters = { received: 0, sent: 0, sendErrors: 0, handlerErrors: 0 };
  for (const r of await pingServers()) {
    serverCounters.received += r.received;
    serverCounters.sent += r.sent;
    serverCounters.sendErrors += r.sendErrors;
    serverCounters.handlerErrors += r.handlerErrors;
  }
  proc.send({ kind: 'stop' });
  for (const sp of serverProcs) sp.send({ kind: 'stop' });
  for (const c of clients) await c.close();

  const reuse = minTokenReuseTime(DEFAULT_PARAMS) / 1000;
  console.log(`\n${nClients} clients x ${rate} proxied group requests/s, ${nServers} servers, ${minutes} min; MIN_TOKEN_REUSE_TIME ${reuse} s\n`);
  console.log(table(['t (s)', 'heap (MB)', 'external (MB)', 'heap+external (MB)', 'rss (MB)', 'exchanges', 'retired upstream tokens', 'dedup entries (client side)', 'dedup entries (upstream)'], samples.map((s) => [s.t, fmt(s.heapMB, 1), fmt(s.externalMB, 1), fmt(s.heapMB + s.externalMB, 1), fmt(s.rssMB, 0), s.exchanges, s.retiredTokens, s.dedupEntries, s.upstreamDedup])));
  const after = samples.filter((s) => s.t >= reuse + 30 && s.t <= minutes * 60);
  const vals = after.map((s) => s.heapMB + s.externalMB);
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  console.log(`\nrequests ${sent}, all ${nServers} responses ${complete}, fewer (lost) ${lost}, responses ${responses}, missing ${sent * nServers - responses}`);
  console.log(`requests with fewer, by responses received: ${[...missing].sort((a, b) => a[0] - b[0]).map(([n, c]) => `${n}: ${c}`).join(', ') || 'none'}`);
  console.log(`client errors: ${[...clientErrors].map(([m, c]) => `${m}: ${c}`).join('; ') || 'none'}`);
  const kernel = [...new Set(roles.values())].map((r) => [r, (dropsAtEnd.get(r) ?? 0) - (dropsAtStart.get(r) ?? 0)] as const);
  console.log(`kernel receive-queue drops (/proc/net/udp) during the run: ${kernel.map(([r, n]) => `${r} ${n}`).join('; ')}`);
  console.log(`proxy and its message layers: ${Object.entries(last.drops).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  // Every way a response can go missing that the run can see: late at the proxy (after T' by its clock: a server
  // that answered late, or a proxy whose own stall kept the response queued past T'), late at the client (after T),
  // dropped by the proxy (rate, limits), dropped by a kernel receive queue, or a failed send.
  const d = last.drops;
  const seen = d.upstreamLate + d.lateDropped + d.rateDropped + clientCounters.late + kernel.reduce((a, [, n]) => a + n, 0) + d.sendErrors + serverCounters.sendErrors + clientCounters.sendErrors;
  console.log(`missing responses ${sent * nServers - responses}; seen going missing ${seen}; not accounted for ${sent * nServers - responses - seen}`);
  console.log(`clients' message layers: ${Object.entries(clientCounters).map(([k, v]) => `${k} ${v}`).join(', ')}; servers: ${Object.entries(serverCounters).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(`longest event-loop stall: proxy ${fmt(Math.max(...samples.map((s) => s.maxLagMs ?? 0)), 0)} ms, servers ${fmt(Math.max(0, ...serverLags), 0)} ms, clients ${fmt(Math.max(0, ...parentLags), 0)} ms`);
  console.log(`after MIN_TOKEN_REUSE_TIME: heap+external ${fmt(lo, 1)}-${fmt(hi, 1)} MB, spread ${fmt(((hi - lo) / lo) * 100, 1)}% of the low (${after.length} samples)`);
  fs.writeFileSync(args.out ?? path.join(os.tmpdir(), 'proxy-soak-result.json'), JSON.stringify({ sent, complete, lost, responses, missing: Object.fromEntries(missing), clientErrors: Object.fromEntries(clientErrors), kernelDrops: Object.fromEntries(kernel), clientCounters, serverCounters, clientLags: parentLags, serverLags, samples }, null, 1));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
