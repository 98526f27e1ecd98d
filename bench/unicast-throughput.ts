// Unicast request/response throughput (RFC 7252 §4-5) of our message layer (CoapEndpoint.request against a
// CoapEndpoint request handler) side by side with the `coap` package (coap.request with an Agent against
// coap.createServer) and with a bare node:dgram echo, client and servers in two processes on 127.0.0.1.
// Same request (GET /bench, 8-byte token), same 32-byte 2.05 payload, same closed-loop window, CON and NON,
// a warm-up pass, several interleaved runs, medians and ratios.
// Run: npm run build && node --expose-gc dist/bench/unicast-throughput.js [--runs=9] [--count=10000] [--window=32]
//      [--warmup=2000] [--sustained=10] [--sustained-count=20000] [--max-others=0.1] [--retries=10] [--cross]
//      [--configs=dgram,ours-CON,...] [--server-cpu-prof=DIR] [--server-trace-gc] [--quick]

import { fork } from 'node:child_process';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as coap from 'coap';
import { encode } from '../src/coap/codec';
import { CODES } from '../src/coap/codes';
import { OPT } from '../src/coap/options';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { UdpTransport, literalLookup } from '../src/transport/udp-transport';
import { assertLoopback, bindLoopback, fmt, loadAverage, machineBusyMicros, listArg, machineLine, median, numArg, parseArgs, percentile, sleep, table } from './common';
import { PAYLOAD, SERVER_ADDRESS, ServerChildMessage, ServerPorts, ServerStats } from './unicast-servers';

type Stack = 'dgram' | 'ours' | 'coap';
type MsgType = 'CON' | 'NON' | '-';

interface Config {
  key: string;
  client: Stack;
  server: Stack;
  type: MsgType;
}

const ALL_CONFIGS: Config[] = [
  { key: 'dgram', client: 'dgram', server: 'dgram', type: '-' },
  { key: 'ours-CON', client: 'ours', server: 'ours', type: 'CON' },
  { key: 'coap-CON', client: 'coap', server: 'coap', type: 'CON' },
  { key: 'ours-NON', client: 'ours', server: 'ours', type: 'NON' },
  { key: 'coap-NON', client: 'coap', server: 'coap', type: 'NON' },
  // Cross runs tell whether a gap sits in the client or in the server.
  { key: 'ours>coap-CON', client: 'ours', server: 'coap', type: 'CON' }, // with --cross
  { key: 'coap>ours-CON', client: 'coap', server: 'ours', type: 'CON' },
];

const STACK_NAME: Record<Stack, string> = { dgram: 'node:dgram echo', ours: 'ours', coap: 'coap 1.5' };

interface LoopOptions {
  count: number;
  window: number;
  maxMs: number;
}

interface RunResult {
  ok: number;
  errors: number;
  /** requests per second */
  rate: number;
  p50: number;
  p99: number;
  p999: number;
  clientCpuPerReq: number;
  serverCpuPerReq: number;
}

/** One request's lifecycle: send it, call back once with whether a response came. */
type Starter = (cb: (ok: boolean) => void) => void;

/** Keep `window` requests in flight until `count` are done or `maxMs` has passed; then drain (3 s at most). */
function closedLoop(o: LoopOptions, start: Starter): Promise<{ ok: number; errors: number; ms: number; cpu: number; lat: number[] }> {
  return new Promise((resolve) => {
    let started = 0;
    let finished = 0;
    let ok = 0;
    let errors = 0;
    let stopped = false;
    const lat: number[] = [];
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let tLast = t0;
    const tEnd = t0 + o.maxMs;
    const finish = () => {
      if (stopped) return;
      stopped = true;
      clearTimeout(guard);
      const u = process.cpuUsage(cpu0);
      resolve({ ok, errors: errors + (started - finished), ms: tLast - t0, cpu: u.user + u.system, lat });
    };
    const guard = setTimeout(finish, o.maxMs + 3000);
    const issue = (): void => {
      if (stopped) return;
      if (started >= o.count || performance.now() > tEnd) {
        if (finished === started) finish();
        return;
      }
      started++;
      const ts = performance.now();
      let done = false;
      start((good) => {
        if (done || stopped) return;
        done = true;
        finished++;
        tLast = performance.now();
        if (good) {
          ok++;
          lat.push(tLast - ts);
        } else errors++;
        issue();
      });
    };
    for (let i = 0; i < o.window; i++) issue();
  });
}

let clientIndex = 0;
/** A fresh loopback source address per run, so no server mistakes a new run's Message IDs for duplicates. */
function nextClientAddress(): string {
  const k = clientIndex++;
  return assertLoopback(`127.0.${20 + Math.floor(k / 250)}.${1 + (k % 250)}`);
}

async function withClient(stack: Stack, port: number, type: MsgType, o: LoopOptions): Promise<{ ok: number; errors: number; ms: number; cpu: number; lat: number[] }> {
  const bindAddress = nextClientAddress();
  if (stack === 'ours') {
    const transport = await UdpTransport.open({ bindAddress });
    transport.on('error', () => undefined);
    const ep = new CoapEndpoint(transport);
    const target = { address: SERVER_ADDRESS, port };
    const req = { code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('bench') }] };
    const confirmable = type === 'CON';
    try {
      return await closedLoop(o, (cb) => {
        ep.request(req, target, { confirmable, timeout: 5000 }).then(
          (res) => cb(res.message.payload.length === PAYLOAD.length),
          () => cb(false),
        );
      });
    } finally {
      await ep.close();
    }
  }
  // the raw echo client (and node-coap's Agent) send without waiting a tick for the lookup of an address literal,
  // as our transport does (udp-transport.ts)
  const sock = dgram.createSocket({ type: 'udp4', lookup: literalLookup });
  sock.on('error', () => undefined);
  await bindLoopback(sock, bindAddress);
  try {
    if (stack === 'coap') {
      // An Agent on our own socket: it never closes the socket between requests, like our endpoint.
      const agent = new coap.Agent({ type: 'udp4', socket: sock });
      agent.on('error', () => undefined);
      const confirmable = type === 'CON';
      return await closedLoop(o, (cb) => {
        const r = coap.request({ hostname: SERVER_ADDRESS, port, pathname: '/bench', method: 'GET', confirmable, agent });
        r.on('response', (res: coap.IncomingMessage) => cb(res.payload.length === PAYLOAD.length));
        r.on('error', () => cb(false));
        r.on('timeout', () => cb(false));
        r.end();
      });
    }
    // Bare echo: the same request bytes out, the datagram back; loopback keeps order, so callbacks are FIFO.
    const bytes = encode({ type: 'CON', code: CODES.GET, messageId: 1, token: Buffer.alloc(8, 7), options: [{ number: OPT.URI_PATH, value: Buffer.from('bench') }], payload: Buffer.alloc(0) });
    const waiting: ((ok: boolean) => void)[] = [];
    let head = 0;
    sock.on('message', () => {
      const cb = waiting[head];
      waiting[head++] = undefined as never;
      cb?.(true);
    });
    return await closedLoop(o, (cb) => {
      waiting.push(cb);
      sock.send(bytes, port, SERVER_ADDRESS);
    });
  } finally {
    await new Promise<void>((r) => sock.close(() => r()));
  }
}

interface ServerChild {
  ports: ServerPorts;
  stats(): Promise<ServerStats>;
  close(): Promise<void>;
}

async function startServers(execArgv: string[]): Promise<ServerChild> {
  const child = fork(path.join(__dirname, 'unicast-servers.js'), [JSON.stringify({ maxMs: 15 * 60_000 })], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv,
  });
  const next = <T extends ServerChildMessage['type']>(type: T) =>
    new Promise<Extract<ServerChildMessage, { type: T }>>((resolve, reject) => {
      const onMsg = (m: ServerChildMessage) => {
        if (m.type !== type && m.type !== 'error') return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        if (m.type === 'error') reject(new Error(`servers: ${m.message}`));
        else resolve(m as Extract<ServerChildMessage, { type: T }>);
      };
      const onExit = (code: number | null) => {
        child.off('message', onMsg);
        reject(new Error(`servers exited (${code})`));
      };
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  const ready = await next('ready');
  return {
    ports: ready.ports,
    async stats() {
      const p = next('stats');
      child.send({ cmd: 'stats' });
      return (await p).stats;
    },
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ cmd: 'close' });
      const t = setTimeout(() => child.kill(), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function runOne(cfg: Config, servers: ServerChild, o: LoopOptions): Promise<RunResult> {
  const port = servers.ports[cfg.server === 'dgram' ? 'echo' : cfg.server];
  const s0 = await servers.stats();
  const r = await withClient(cfg.client, port, cfg.type, o);
  const s1 = await servers.stats();
  const lat = r.lat.sort((a, b) => a - b);
  return {
    ok: r.ok,
    errors: r.errors,
    rate: r.ms > 0 ? r.ok / (r.ms / 1000) : 0,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    p999: percentile(lat, 99.9),
    clientCpuPerReq: r.cpu / Math.max(1, r.ok),
    serverCpuPerReq: (s1.cpuMicros - s0.cpuMicros) / Math.max(1, r.ok),
  };
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const args = parseArgs(argv);
  const quick = args.quick === 'true';
  const runs = numArg(args, 'runs', quick ? 2 : 9);
  const o: LoopOptions = {
    count: numArg(args, 'count', quick ? 5000 : 10_000),
    window: numArg(args, 'window', 32),
    maxMs: numArg(args, 'max-ms', 5000),
  };
  // A server sees every run's requests from one client address; 16-bit Message IDs must not wrap within a run.
  if (o.count > 60_000) throw new Error('--count must stay below 60000 (Message IDs are 16 bits, RFC 7252 §4.4)');
  const defaults = ALL_CONFIGS.filter((c) => args.cross === 'true' || c.client === c.server).map((c) => c.key);
  const keys = listArg(args, 'configs', defaults);
  const configs = keys.map((k) => {
    const c = ALL_CONFIGS.find((x) => x.key === k);
    if (!c) throw new Error(`unknown config ${k}; known: ${ALL_CONFIGS.map((x) => x.key).join(', ')}`);
    return c;
  });
  const warmup = numArg(args, 'warmup', quick ? 1000 : 2000);
  const maxOthers = numArg(args, 'max-others', 0.1);
  const retries = numArg(args, 'retries', quick ? 0 : 10);
  const sustainedBatches = numArg(args, 'sustained', quick ? 0 : 10);
  const sustainedCount = numArg(args, 'sustained-count', 20_000);
  if (sustainedCount > 60_000) throw new Error('--sustained-count must stay below 60000');
  const execArgv = [...(args['server-cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${args['server-cpu-prof']}`] : []), ...(args['server-trace-gc'] === 'true' ? ['--trace-gc'] : [])];

  const t0 = Date.now();
  console.log(`# unicast throughput: closed loop, window ${o.window}, ${o.count} requests or ${o.maxMs} ms per run, ${runs} runs (each on a fresh server process after a ${warmup}-request warm-up per configuration), client and servers in two processes on 127.0.0.1`);
  console.log(`machine: ${machineLine()}`);
  const results = new Map<string, RunResult[]>(configs.map((c) => [c.key, []]));
  const busy0 = machineBusyMicros();
  const own0 = process.cpuUsage();
  const wall0 = Date.now();
  let serverCpu = 0;
  /** A fresh server process: every run starts from the same server state (see the sustained-load table). */
  const withServers = async (fn: (s: ServerChild) => Promise<void>) => {
    const servers = await startServers(execArgv);
    const s0 = await servers.stats();
    try {
      await fn(servers);
    } finally {
      serverCpu += (await servers.stats()).cpuMicros - s0.cpuMicros;
      await servers.close();
    }
  };
  const snapshot = () => ({ busy: machineBusyMicros(), own: process.cpuUsage(), server: serverCpu, wall: Date.now() });
  /** Share of the machine's CPU that other processes used since the snapshot (NaN where /proc/stat is missing). */
  const othersSince = (snap: ReturnType<typeof snapshot>) => {
    const busy = machineBusyMicros();
    if (busy === undefined || snap.busy === undefined) return NaN;
    const own = process.cpuUsage(snap.own);
    const mine = own.user + own.system + serverCpu - snap.server;
    return Math.max(0, busy - snap.busy - mine) / ((Date.now() - snap.wall) * 1000 * os.cpus().length);
  };
  const kept: number[] = [];
  let discarded = 0;
  for (let r = 0; r < runs; ) {
    const snap = snapshot();
    const got = new Map<string, RunResult>();
    // Odd runs go in reverse order (A B C, C B A, ...), so slow drift in background load cancels out.
    const order = r % 2 ? [...configs].reverse() : configs;
    await withServers(async (servers) => {
      // Warm-up (JIT, sockets), not counted; then one run of every configuration.
      for (const cfg of order) await runOne(cfg, servers, { ...o, count: warmup });
      for (const cfg of order) {
        const res = await runOne(cfg, servers, o);
        got.set(cfg.key, res);
        process.stderr.write(`  run ${r + 1} ${cfg.key}: ${fmt(res.rate)} req/s${res.errors ? `, ${res.errors} errors` : ''}\n`);
        await sleep(50);
      }
    });
    const share = othersSince(snap);
    if (share > maxOthers && discarded < retries) {
      // Two cores shared with other people's test runs: a run they disturbed is repeated (a bounded number of times).
      discarded++;
      process.stderr.write(`  run ${r + 1} discarded: other processes used ${(share * 100).toFixed(0)}% of the machine\n`);
      await sleep(5000);
      continue;
    }
    for (const [k, v] of got) results.get(k)!.push(v);
    kept.push(share);
    r++;
  }

  // Sustained load: one server process for all batches, so its state grows as it would in a long-lived server.
  const sustained: { before: number; ours?: RunResult; coap?: RunResult }[] = [];
  if (sustainedBatches > 0) {
    await withServers(async (servers) => {
      for (const stack of ['ours', 'coap'] as const) await runOne({ key: 'warm-up', client: stack, server: stack, type: 'CON' }, servers, { ...o, count: warmup });
      for (let b = 0; b < sustainedBatches; b++) {
        const row: (typeof sustained)[number] = { before: (await servers.stats()).handled.ours };
        for (const stack of ['ours', 'coap'] as const) {
          row[stack] = await runOne({ key: `${stack}-CON`, client: stack, server: stack, type: 'CON' }, servers, { ...o, count: sustainedCount });
        }
        process.stderr.write(`  sustained batch ${b + 1}: ours ${fmt(row.ours!.rate)} req/s, coap ${fmt(row.coap!.rate)} req/s\n`);
        sustained.push(row);
      }
    });
  }
  const busy1 = machineBusyMicros();
  const own = process.cpuUsage(own0);
  const othersShare =
    busy0 !== undefined && busy1 !== undefined
      ? Math.max(0, busy1 - busy0 - (own.user + own.system + serverCpu)) / ((Date.now() - wall0) * 1000 * os.cpus().length)
      : NaN;

  const med = (key: string, f: (r: RunResult) => number) => median((results.get(key) ?? []).map(f));
  console.log('\n## Requests per second (median of runs)\n');
  console.log(
    table(
      ['client', 'server', 'type', 'req/s median', 'min–max', 'p50 latency ms', 'p99 latency ms', 'p999 latency ms', 'client CPU µs/req', 'server CPU µs/req', 'errors'],
      configs.map((c) => {
        const rs = results.get(c.key)!;
        const rates = rs.map((r) => r.rate);
        return [
          STACK_NAME[c.client],
          STACK_NAME[c.server],
          c.type,
          fmt(median(rates)),
          `${fmt(Math.min(...rates))}–${fmt(Math.max(...rates))}`,
          fmt(med(c.key, (r) => r.p50), 3),
          fmt(med(c.key, (r) => r.p99), 3),
          fmt(med(c.key, (r) => r.p999), 3),
          fmt(med(c.key, (r) => r.clientCpuPerReq), 1),
          fmt(med(c.key, (r) => r.serverCpuPerReq), 1),
          rs.reduce((a, r) => a + r.errors, 0),
        ];
      }),
    ),
  );

  const rate = (k: string) => med(k, (r) => r.rate);
  const ratioRows: (string | number)[][] = [];
  const addRatio = (label: string, a: string, b: string) => {
    if (results.has(a) && results.has(b)) ratioRows.push([label, `${(rate(a) / rate(b)).toFixed(2)}×`]);
  };
  addRatio('ours / coap, CON', 'ours-CON', 'coap-CON');
  addRatio('ours / coap, NON', 'ours-NON', 'coap-NON');
  addRatio('ours / dgram echo, CON', 'ours-CON', 'dgram');
  addRatio('ours / dgram echo, NON', 'ours-NON', 'dgram');
  for (const t of ['CON', 'NON']) {
    if (results.has(`ours-${t}`) && results.has('dgram')) {
      ratioRows.push([`ours p99 / dgram echo p99, ${t}`, `${(med(`ours-${t}`, (r) => r.p99) / med('dgram', (r) => r.p99)).toFixed(2)}×`]);
      ratioRows.push([`ours p999 / dgram echo p999, ${t}`, `${(med(`ours-${t}`, (r) => r.p999) / med('dgram', (r) => r.p999)).toFixed(2)}×`]);
    }
  }
  addRatio('coap / dgram echo, CON', 'coap-CON', 'dgram');
  addRatio('coap / dgram echo, NON', 'coap-NON', 'dgram');
  addRatio('ours client vs coap client (both against coap server), CON', 'ours>coap-CON', 'coap-CON');
  addRatio('ours server vs coap server (both with coap client), CON', 'coap>ours-CON', 'coap-CON');
  // Per-run ratios: the two stacks of one run ran back to back, under the same background load.
  for (const t of ['CON', 'NON']) {
    const a = results.get(`ours-${t}`);
    const b = results.get(`coap-${t}`);
    if (a && b) ratioRows.push([`ours / coap, ${t}, median of per-run ratios`, `${median(a.map((x, i) => x.rate / b[i].rate)).toFixed(2)}×`]);
  }
  // CPU per request is far less sensitive than req/s to other processes sharing the two cores.
  const cpu = (k: string) => med(k, (r) => r.clientCpuPerReq + r.serverCpuPerReq);
  for (const t of ['CON', 'NON']) {
    if (results.has(`ours-${t}`) && results.has(`coap-${t}`)) {
      ratioRows.push([`CPU per request (client + server): coap / ours, ${t}`, `${(cpu(`coap-${t}`) / cpu(`ours-${t}`)).toFixed(2)}×`]);
    }
  }
  console.log('\n## Ratios (of the medians)\n');
  console.log(table(['ratio', 'value'], ratioRows));
  if (results.has('ours-CON') && results.has('coap-CON')) {
    const con = rate('ours-CON') / rate('coap-CON');
    const non = results.has('ours-NON') && results.has('coap-NON') ? rate('ours-NON') / rate('coap-NON') : NaN;
    const met = con >= 2 && (Number.isNaN(non) || non >= 2);
    console.log(`\nGoal "our unicast throughput at least twice the coap package's": ${met ? 'MET' : 'NOT MET'} (CON ${con.toFixed(2)}×${Number.isNaN(non) ? '' : `, NON ${non.toFixed(2)}×`})`);
  }
  if (sustained.length) {
    console.log(`\n## Sustained load: one server process, ${sustained.length} consecutive batches of ${sustainedCount} CON requests per stack\n`);
    console.log(
      table(
        ['batch', 'requests each server had served', 'ours req/s', 'ours server CPU µs/req', 'coap req/s', 'coap server CPU µs/req'],
        sustained.map((r, i) => [i + 1, fmt(r.before), fmt(r.ours!.rate), fmt(r.ours!.serverCpuPerReq, 1), fmt(r.coap!.rate), fmt(r.coap!.serverCpuPerReq, 1)]),
      ),
    );
  }
  if (kept.length && !Number.isNaN(kept[0])) {
    console.log(`\nOther processes' share of the machine's CPU during each kept run: ${kept.map((x) => `${(x * 100).toFixed(0)}%`).join(', ')}; runs discarded for more than ${(maxOthers * 100).toFixed(0)}%: ${discarded}.`);
  }
  if (!Number.isNaN(othersShare)) console.log(`\nOther processes kept ${(othersShare * 100).toFixed(1)}% of the machine's CPU busy during the runs (/proc/stat minus this benchmark's two processes).`);
  console.log(`\nunicast throughput done in ${((Date.now() - t0) / 1000).toFixed(1)} s; load average at the end ${loadAverage()}`);
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
