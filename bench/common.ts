// Helpers shared by the benchmarks: --key=value arguments, statistics, Markdown tables, a forced GC that works
// with or without --expose-gc, the machine line recorded in docs/BENCHMARKS.md, and the kernel's UDP drop counter.
// Benchmarks are run by hand (never from `npm test`); every loop they run is bounded in count and in time.

import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { CoapEndpoint } from '../src/messaging/endpoint';
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

/** A client or proxy endpoint on 127.0.0.1 with a 4 MiB receive buffer (bursts of responses must not be dropped). */
export async function loopbackEndpoint(): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
}
