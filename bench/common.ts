// Helpers shared by the benchmarks: --key=value arguments, statistics, Markdown tables, a forced GC that works
// with or without --expose-gc, the machine line recorded in docs/BENCHMARKS.md, the kernel's UDP drop counter, the
// CPU-time cells of the OSCORE benchmarks and the proxied group of the OSCORE proxy benchmarks.
// Benchmarks are run by hand (never from `npm test`); every loop they run is bounded in count and in time.

import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import v8 from 'node:v8';
import { performance } from 'node:perf_hooks';
import vm from 'node:vm';
import { CODES } from '../src/coap/codes';
import { GroupServer, GroupServerOptions, RequestTransform } from '../src/group/group-server';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { GroupContext, MemorySequenceStore, generateGroupKeyPair } from '../src/oscore';
import { oscoreServerTransform } from '../src/oscore/nested';
import { GroupProxy, GroupProxyOptions, ProxyOscoreOptions } from '../src/proxy/group-proxy';
import { ProxiedOscoreOptions, requestViaProxy } from '../src/proxy/proxy-client';
import { UdpTransport } from '../src/transport/udp-transport';

/** `--key=value` and bare `--flag` (value "true") from argv. */
export function parseArgs(argv = process.argv.slice(2)): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (m) out[m[1]] = m[2] ?? 'true';
  }
  return out;
}

export function numArg(args: Record<string, string>, key: string, def: number): number {
  const v = args[key];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${key} must be a number`);
  return n;
}

export function listArg(args: Record<string, string>, key: string, def: string[]): string[] {
  const v = args[key];
  return v === undefined ? def : v.split(',').map((s) => s.trim()).filter(Boolean);
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function kib(bytes: number, digits = 1): string {
  return `${fmt(bytes / 1024, digits)} KiB`;
}

/** A Markdown table, so the output can be pasted into docs/BENCHMARKS.md as it is. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  // Numbers are right-aligned, words left-aligned.
  const right = headers.map((_, i) => cells.slice(1).every((r) => /^[-\d]/.test(r[i] ?? '-')));
  const line = (r: string[]) => `| ${r.map((c, i) => (right[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (right[i] ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|')}|`;
  return [line(cells[0]), sep, ...cells.slice(1).map(line)].join('\n');
}

let gcFn: (() => void) | undefined;

/** A full, synchronous GC: global.gc under --expose-gc, else the same function obtained through V8 flags. */
export function forceGc(): void {
  if (!gcFn) {
    const g = (globalThis as { gc?: () => void }).gc;
    if (g) gcFn = g;
    else {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    }
  }
  gcFn();
  gcFn();
}

/** Heap plus off-heap memory (Buffers of received datagrams live off the V8 heap). */
export function liveBytes(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

export function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

export function machineLine(): string {
  const cpus = os.cpus();
  return `${cpus.length} cores (${cpus[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
    `Node ${process.version}, ${os.type()} ${os.release()}, load average ${loadAverage()}`;
}

/** Linux /proc/net/snmp "Udp: RcvbufErrors": datagrams the kernel dropped because a socket buffer was full. */
export function udpRcvbufErrors(): number | undefined {
  try {
    const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
    const names = lines[0].split(/\s+/);
    const values = lines[1].split(/\s+/);
    const i = names.indexOf('RcvbufErrors');
    return i < 0 ? undefined : Number(values[i]);
  } catch {
    return undefined;
  }
}

/** CPU time the whole machine spent busy (all cores, all processes), µs, from /proc/stat; undefined elsewhere. */
export function machineBusyMicros(): number | undefined {
  try {
    // cpu user nice system idle iowait irq softirq steal (guest time is already inside user); USER_HZ is 100
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const busy = f.reduce((a, x) => a + x, 0) - f[3] - (f[4] ?? 0);
    return busy * 10_000;
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond()` holds (checked every `step` ms) or `ms` have passed; returns whether it held. */
export async function waitFor(cond: () => boolean, ms: number, step = 5): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= end) return false;
    await sleep(step);
  }
  return true;
}

/** Loopback only: refuse any address outside 127/8 (the benchmarks must never send anywhere else). */
export function assertLoopback(address: string): string {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address)) throw new Error(`benchmarks use loopback only, not ${address}`);
  return address;
}

/**
 * Bind a raw dgram socket to a loopback address (port 0) and pin its multicast interface to 127.0.0.1 with TTL 1,
 * as every socket of ours is, even though the benchmarks' raw sockets only send unicast. Resolves with the port.
 */
export function bindLoopback(s: dgram.Socket, address: string): Promise<number> {
  assertLoopback(address);
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, address, () => {
      s.off('error', reject);
      s.setMulticastInterface('127.0.0.1');
      s.setMulticastTTL(1);
      resolve(s.address().port);
    });
  });
}

/**
 * `n` GroupServers on 127.0.0.2, 127.0.0.3, ... in `group`:`port`, Leisure 0, each answering GET /r at once with 16
 * bytes: the group of the proxy benchmarks (bench/proxy.ts, bench/proxy-ab.ts).
 */
export async function answeringServers(group: string, port: number, n = 10): Promise<GroupServer[]> {
  const servers: GroupServer[] = [];
  for (let i = 0; i < n; i++) {
    const s = await GroupServer.open({ address: `127.0.0.${2 + i}`, port: 0, groups: [{ address: group, port }], leisure: 0, transport: { recvBufferSize: 4 << 20 } });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(16) }));
    servers.push(s);
  }
  return servers;
}

/** A client or proxy endpoint on 127.0.0.1 with a 4 MiB receive buffer (bursts of responses must not be dropped). */
export async function loopbackEndpoint(): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
}

// ---------------------------------------------------------------------------------------------------------------
// CPU-time cells (bench/oscore.ts, bench/group-oscore.ts): operations per CPU second of this process, cells of
// (configuration, payload size) measured interleaved run by run, medians.

/**
 * Operations per CPU second of this process (user + system, all its threads) for `op`, run in doubling batches for
 * about `ms` of wall time after `warmupOps` untimed calls. CPU rather than wall time because the machine is
 * shared: time spent descheduled while others run is not ours.
 */
export function cpuRate(op: () => void, ms: number, o: { warmupOps: number; firstBatch: number; maxOps: number }): number {
  for (let i = 0; i < o.warmupOps; i++) op();
  let n = 0;
  let batch = o.firstBatch;
  const start = performance.now();
  const cpu = process.cpuUsage();
  let elapsed = 0;
  while (elapsed < ms && n < o.maxOps) {
    for (let i = 0; i < batch; i++) op();
    n += batch;
    elapsed = performance.now() - start;
    if (elapsed < ms / 20) batch *= 2;
  }
  const used = process.cpuUsage(cpu);
  return n / ((used.user + used.system) / 1e6);
}

export interface CpuCell {
  key: string;
  /** builds (and checks once) the operation for one payload size */
  make(size: number): () => void;
}

export interface CpuCellRun {
  runs: number;
  ms: number;
  sizes: number[];
  /** wall ms of the one untimed pass over every cell before the runs (JIT tiers and inline caches settle) */
  warmupMs: number;
  warmupOps: number;
  firstBatch: number;
  /** hard bound on the operations of one measurement, whatever the speed */
  maxOps: number;
}

export interface CpuCellResults {
  median(key: string, size: number): number;
  /** the widest interquartile range of any cell, relative to its median (run-to-run noise) */
  widestIqr: number;
}

/** Every cell for every size, `runs` times round-robin (a drift in the machine's load hits all cells alike). */
export function runCpuCells(cells: CpuCell[], o: CpuCellRun): CpuCellResults {
  const results = new Map<string, number[]>();
  const ops = new Map<string, () => void>();
  for (const size of o.sizes) for (const c of cells) ops.set(`${c.key}/${size}`, c.make(size));
  // Without the untimed pass, whichever payload size comes first looks slower.
  for (const op of ops.values()) cpuRate(op, o.warmupMs, o);
  for (let r = 0; r < o.runs; r++) {
    for (const size of o.sizes) {
      for (const c of cells) {
        const k = `${c.key}/${size}`;
        forceGc();
        const v = cpuRate(ops.get(k)!, o.ms, o);
        results.set(k, [...(results.get(k) ?? []), v]);
      }
    }
  }
  let widest = 0;
  for (const xs of results.values()) {
    const sorted = [...xs].sort((a, b) => a - b);
    const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1) + 0.5))];
    widest = Math.max(widest, (q(0.75) - q(0.25)) / median(xs));
  }
  return { median: (key, size) => median(results.get(`${key}/${size}`)!), widestIqr: widest };
}

/**
 * Records the machine's load from now on; `end()` gives the closing line of a benchmark: load average before and
 * after, and how much of the machine other processes took meanwhile (all busy CPU time minus ours).
 */
export function machineShare(): { end(): string } {
  const loadBefore = loadAverage();
  const busyBefore = machineBusyMicros();
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  return {
    end() {
      const busyAfter = machineBusyMicros();
      const cpu = process.cpuUsage(cpuBefore);
      const wallMicros = (performance.now() - wallBefore) * 1000;
      const others = busyBefore !== undefined && busyAfter !== undefined ? (busyAfter - busyBefore - cpu.user - cpu.system) / wallMicros : undefined;
      const othersText = others === undefined ? 'unknown' : `${fmt(Math.max(0, others), 2)} of ${os.cpus().length} cores`;
      return `load average before ${loadBefore}, after ${loadAverage()}; other processes used ${othersText} during the run`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// A proxied group (bench/oscore-proxy.ts, bench/group-oscore-proxy.ts): N GroupServers (leisure 0, a 16-byte 2.05
// on /r) behind a GroupProxy that lets the client at 127.0.0.1 in, all on loopback, and one client endpoint.

export interface ProxiedGroupOptions {
  servers: number;
  /** the i-th server's unicast address (loopback) */
  address(i: number): string;
  /** the group and port the servers join (multicast pinned to 127.0.0.1, TTL 1: the UdpTransport default) */
  group: string;
  port: number;
  /** the i-th server's request transform (e.g. oscoreServerTransform for its OSCORE layers) */
  transform?(i: number): RequestTransform;
  serverTransport?: GroupServerOptions['transport'];
  /** the proxy's OSCORE layer towards the client */
  proxyOscore?: ProxyOscoreOptions;
  maxExchanges?: number;
  /** the proxy's response cache (groupcomm-proxy-07 §7) */
  cache?: GroupProxyOptions['cache'];
  /** list the servers as the group's members, so the proxy can answer from its cache alone (groupcomm-proxy-07 §7.1) */
  knownMembers?: boolean;
}

export interface ProxiedGroup {
  servers: GroupServer[];
  proxy: GroupProxy;
  client: CoapEndpoint;
  /** the proxy's client-facing endpoint */
  listen: CoapEndpoint;
  uri: string;
  close(): Promise<void>;
}

/** A 16-byte 2.05 from every server. */
export const PROXIED_PAYLOAD_LENGTH = 16;

export async function openProxiedGroup(o: ProxiedGroupOptions): Promise<ProxiedGroup> {
  const servers: GroupServer[] = [];
  for (let i = 0; i < o.servers; i++) {
    const s = await GroupServer.open({
      address: assertLoopback(o.address(i)),
      port: 0,
      groups: [{ address: o.group, port: o.port }],
      leisure: 0,
      ...(o.serverTransport ? { transport: o.serverTransport } : {}),
      ...(o.transform ? { requestTransform: o.transform(i) } : {}),
    });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(PROXIED_PAYLOAD_LENGTH) }));
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
    ...(o.maxExchanges !== undefined ? { maxExchanges: o.maxExchanges } : {}),
    ...(o.proxyOscore ? { oscore: o.proxyOscore } : {}),
    ...(o.cache !== undefined ? { cache: o.cache } : {}),
    ...(o.knownMembers ? { members: { [`${o.group}:${o.port}`]: servers.map((s) => `${s.address().address}:${s.address().port}`) } } : {}),
  });
  const client = await loopbackEndpoint();
  return {
    servers,
    proxy,
    client,
    listen,
    uri: `coap://${o.group}:${o.port}/r`,
    async close() {
      await proxy.close();
      await client.close();
      await listen.close();
      await upstream.close();
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}

/**
 * One proxied group exchange; `done(ms)` once all `expect` responses were good (a 16-byte 2.05, and with OSCORE
 * verified end to end when `endToEnd`), `done(undefined)` if one was bad or the exchange ended first. Cancelled
 * (Early Stop Request, in the client's layer when there is one) as soon as it is complete.
 */
export function proxiedExchange(
  g: ProxiedGroup,
  o: { expect: number; multicastTimeout: number; timeout: number; oscore?: ProxiedOscoreOptions; endToEnd?: boolean },
  done: (ms: number | undefined) => void,
): void {
  const t0 = process.hrtime.bigint();
  let got = 0;
  let bad = 0;
  let finished = false;
  const finish = (ms: number | undefined) => {
    if (finished) return;
    finished = true;
    done(ms);
  };
  const ex = requestViaProxy(g.client, { proxy: g.listen.transport.address(), uri: g.uri, multicastTimeout: o.multicastTimeout, timeout: o.timeout, ...(o.oscore ? { oscore: o.oscore } : {}) });
  ex.on('error', () => bad++);
  ex.on('response', (r: { message: { code: number; payload: Buffer }; origin: { oscore?: unknown } }) => {
    const ok = r.message.code === CODES.CONTENT && r.message.payload.length === PROXIED_PAYLOAD_LENGTH && (!o.endToEnd || r.origin.oscore !== undefined);
    if (!ok) bad++;
    else if (++got === o.expect) {
      finish(bad === 0 ? Number(process.hrtime.bigint() - t0) / 1e6 : undefined);
      setImmediate(() => ex.cancel());
    }
  });
  ex.on('end', () => finish(undefined));
}

/** One configuration's row of an interleaved exchange benchmark. */
export interface InterleavedRow {
  /** servers */
  n: number;
  name: string;
  /** ms of the good exchanges */
  median: number;
  p95: number;
  /** CPU µs of this process per exchange */
  cpuUs: number;
  failed: number;
  rounds: number;
}

/**
 * `warmups` untimed exchanges per configuration (any failure throws), then `rounds` rounds in which every
 * configuration runs one exchange in turn (a drift in the machine's load hits all alike), each after 20 ms for the
 * previous exchange's stragglers and Early Stop to settle, with the process's CPU time (user + system) around it.
 * `once(k)` resolves with the ms of a good exchange of configuration k, or undefined; `expect` is the number of
 * servers (a good exchange has a response from each).
 */
export async function runInterleaved(
  names: string[],
  o: { rounds: number; warmups: number; expect: number },
  once: (k: number) => Promise<number | undefined>,
): Promise<InterleavedRow[]> {
  for (let k = 0; k < names.length; k++) {
    for (let i = 0; i < o.warmups; i++) if ((await once(k)) === undefined) throw new Error(`${names[k]}, ${o.expect} servers: warm-up exchange did not get ${o.expect} good responses`);
  }
  const latencies: number[][] = names.map(() => []);
  const failed = names.map(() => 0);
  const cpuUs = names.map(() => 0);
  for (let r = 0; r < o.rounds; r++) {
    for (let k = 0; k < names.length; k++) {
      await sleep(20);
      const c0 = process.cpuUsage();
      const ms = await once(k);
      const c1 = process.cpuUsage(c0);
      cpuUs[k] += c1.user + c1.system;
      if (ms === undefined) failed[k]++;
      else latencies[k].push(ms);
    }
    if (r % 10 === 9) forceGc();
  }
  return names.map((name, k) => {
    const l = latencies[k].sort((a, b) => a - b);
    return { n: o.expect, name, median: median(l), p95: percentile(l, 95), cpuUs: cpuUs[k] / o.rounds, failed: failed[k], rounds: o.rounds };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// A Group OSCORE group for the proxied benchmarks (RFC 10021): the client 0x25 and servers 0x0100 + i (two-byte
// Sender IDs, so 100 servers fit), each with its own Ed25519 key pair, every member knowing every credential it
// needs (the servers the client's, the client every server's); sequence numbers in memory.

export interface BenchGroup {
  /** the client's GroupContext */
  client: GroupContext;
  /** the i-th server's OSCORE layer (its own GroupContext), one end-to-end layer at most, unprotected allowed */
  serverTransform(i: number): RequestTransform;
}

export function benchGroup(n: number, o: { deterministicClient?: { senderId: Buffer } } = {}): BenchGroup {
  const master = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), idContext: crypto.randomBytes(3), ...(o.deterministicClient ? { deterministicClient: o.deterministicClient } : {}) };
  const clientId = Buffer.from('25', 'hex');
  const clientKeys = generateGroupKeyPair();
  const ids = Array.from({ length: n }, (_, i) => Buffer.from((0x0100 + i).toString(16).padStart(4, '0'), 'hex'));
  const serverKeys = ids.map(() => generateGroupKeyPair());
  const mem = () => ({ sequenceStore: new MemorySequenceStore() });
  return {
    client: new GroupContext({ ...master, senderId: clientId, privateKey: clientKeys.privateKey, credential: clientKeys.credential, members: ids.map((id, i) => ({ senderId: id, credential: serverKeys[i].credential })) }, mem()),
    serverTransform(i) {
      const ctx = new GroupContext({ ...master, senderId: ids[i], privateKey: serverKeys[i].privateKey, credential: serverKeys[i].credential, members: [{ senderId: clientId, credential: clientKeys.credential }] }, mem());
      return oscoreServerTransform({ contexts: ctx, maxLayers: 1, required: false });
    },
  };
}
