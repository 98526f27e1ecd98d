// CPU cost of our message layer alone (RFC 7252 §4-5 as CoapEndpoint implements it): a client and a server
// CoapEndpoint joined by an in-memory transport (no sockets, no kernel), closed loop of 32 requests in flight.
// 1) CPU µs per request, CON and NON, median of runs; with --coap-packet also with coap-packet's generate()
//    swapped into the compiled codec, to show what the one-pass encoder saves.
// 2) A long-lived server: CPU per request batch by batch while its duplicate-detection cache fills and stays full.
// Run: npm run build && node --expose-gc dist/bench/endpoint-cpu.js [--runs=5] [--coap-packet] [--batches=8]

import { EventEmitter } from 'node:events';
import * as codec from '../src/coap/codec';
import { CODES } from '../src/coap/codes';
import { CoapMessage } from '../src/coap/message';
import { OPT } from '../src/coap/options';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { RemoteAddress, Transport, TransportCounters } from '../src/transport/udp-transport';
import { fmt, loadAverage, machineLine, median, numArg, parseArgs, table } from './common';

/** Delivers every datagram on the next turn of the event loop, as a socket would. */
class MemoryTransport extends EventEmitter implements Transport {
  static readonly peers = new Map<number, MemoryTransport>();
  readonly family = 'udp4' as const;
  readonly counters = { received: 0, sent: 0, bytesReceived: 0, bytesSent: 0, sendErrors: 0, socketErrors: 0 } as TransportCounters;
  constructor(private readonly self: RemoteAddress) {
    super();
    MemoryTransport.peers.set(self.port, this);
  }
  send(data: Buffer, remote: RemoteAddress): void {
    const peer = MemoryTransport.peers.get(remote.port);
    this.counters.sent++;
    if (peer) setImmediate(() => peer.emit('datagram', { data, remote: this.self, multicast: false }));
  }
  address(): RemoteAddress {
    return this.self;
  }
  async close(): Promise<void> {
    MemoryTransport.peers.delete(this.self.port);
  }
}

let nextPort = 1000;
const SERVER_PORT = 1;
const PAYLOAD = Buffer.alloc(32, 'x');
const REQUEST = { code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('bench') }] };

function newServer(): CoapEndpoint {
  const server = new CoapEndpoint(new MemoryTransport({ address: '127.0.0.1', port: SERVER_PORT }));
  server.setRequestHandler((_req, ctx) => ctx.respond({ code: CODES.CONTENT, payload: PAYLOAD }));
  return server;
}

/** `count` requests from a fresh client (so Message IDs never wrap towards one server), CPU µs per request. */
async function batch(count: number, confirmable: boolean): Promise<number> {
  const client = new CoapEndpoint(new MemoryTransport({ address: '127.0.0.1', port: nextPort++ }));
  const target = { address: '127.0.0.1', port: SERVER_PORT };
  const cpu0 = process.cpuUsage();
  let started = 0;
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`stalled after ${done} of ${count}`)), 60_000);
    const issue = (): void => {
      if (started >= count) {
        if (done === count) {
          clearTimeout(deadline);
          resolve();
        }
        return;
      }
      started++;
      client.request(REQUEST, target, { confirmable, timeout: 5000 }).then(
        () => {
          done++;
          issue();
        },
        (err) => {
          clearTimeout(deadline);
          reject(err);
        },
      );
    };
    for (let i = 0; i < 32; i++) issue();
  });
  const u = process.cpuUsage(cpu0);
  await client.close();
  return (u.user + u.system) / count;
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const args = parseArgs(argv);
  const quick = args.quick === 'true';
  const runs = numArg(args, 'runs', quick ? 2 : 5);
  const count = numArg(args, 'count', quick ? 10_000 : 50_000);
  const batches = numArg(args, 'batches', quick ? 0 : 8);
  if (count > 60_000) throw new Error('--count must stay below 60000 (Message IDs are 16 bits, RFC 7252 §4.4)');
  const t0 = Date.now();
  console.log(`# endpoint CPU: client and server CoapEndpoint over an in-memory transport, window 32, ${count} requests per run`);
  console.log(`machine: ${machineLine()}`);

  const original = codec.encode;
  const variants: [string, typeof codec.encode][] = [['codec.encode, one pass (current)', original]];
  if (args['coap-packet'] === 'true') {
    // For comparison: the same messages through coap-packet's generate(), which codec.encode replaced.
    variants.push(['coap-packet generate()', codec.encodeWithCoapPacket]);
    const response: CoapMessage = { type: 'ACK', code: 0x45, messageId: 7, token: Buffer.alloc(8, 1), options: [], payload: PAYLOAD };
    const timeEncode = (enc: typeof codec.encode) => {
      const n = 300_000;
      for (let i = 0; i < 50_000; i++) enc(response);
      const t = process.hrtime.bigint();
      for (let i = 0; i < n; i++) enc(response);
      return Number(process.hrtime.bigint() - t) / n;
    };
    console.log(`encoding the 2.05 response once: one pass ${fmt(timeEncode(original))} ns, coap-packet generate() ${fmt(timeEncode(codec.encodeWithCoapPacket))} ns`);
  }
  const samples = new Map<string, number[]>();
  const setEncoder = (enc: typeof codec.encode) => {
    // The compiled CommonJS endpoint calls codec.encode through the module object, so this swaps it everywhere.
    (codec as { encode: typeof codec.encode }).encode = enc;
  };
  try {
    // r = -1 is the warm-up. Variants and types alternate within each run, so drift hits them alike; a fresh server
    // per measurement keeps its duplicate cache (see part 2) below its cap.
    for (let r = -1; r < runs; r++) {
      for (const [name, enc] of variants) {
        setEncoder(enc);
        for (const type of ['CON', 'NON'] as const) {
          const server = newServer();
          try {
            const us = await batch(r < 0 ? 5000 : count, type === 'CON');
            if (r >= 0) samples.set(`${name}|${type}`, [...(samples.get(`${name}|${type}`) ?? []), us]);
          } finally {
            await server.close();
          }
        }
      }
    }
  } finally {
    setEncoder(original);
  }
  const rows: (string | number)[][] = [];
  const medians = new Map<string, number>();
  for (const [name] of variants) {
    for (const type of ['CON', 'NON']) {
      const xs = samples.get(`${name}|${type}`)!;
      medians.set(`${name}|${type}`, median(xs));
      rows.push([name, type, fmt(median(xs), 1), `${fmt(Math.min(...xs), 1)}–${fmt(Math.max(...xs), 1)}`]);
    }
  }
  console.log('\n## CPU per request, client + server, no sockets (median of runs)\n');
  console.log(table(['encoder', 'type', 'CPU µs/request', 'min–max'], rows));
  if (variants.length > 1) {
    for (const type of ['CON', 'NON']) {
      const a = medians.get(`${variants[0][0]}|${type}`)!;
      const b = medians.get(`${variants[1][0]}|${type}`)!;
      console.log(`${type}: coap-packet's generate() costs ${fmt(b - a, 1)} µs more per request (${fmt((100 * (b - a)) / a, 0)} %)`);
    }
  }

  if (batches > 0) {
    const server = newServer();
    const size = 40_000;
    const out: (string | number)[][] = [];
    // What the duplicate cache holds per entry: heap and array buffers after a full GC, against the state after the
    // warm-up (the cache is all that grows between batches; needs --expose-gc)
    const held = (): number => {
      global.gc?.();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    try {
      await batch(5000, true);
      const mem0 = held();
      const entries0 = server.dedupEntries;
      for (let b = 0; b < batches; b++) {
        const before = server.dedupEntries;
        const us = await batch(size, true);
        const perEntry = (held() - mem0) / (server.dedupEntries - entries0);
        out.push([`${fmt(b * size + 5000)}–${fmt((b + 1) * size + 5000)}`, fmt(before), fmt(us, 1), fmt(server.dedupEntries), global.gc ? fmt(perEntry, 0) : '-']);
        process.stderr.write(`  batch ${b + 1}: ${us.toFixed(1)} µs/request\n`);
      }
    } finally {
      await server.close();
    }
    console.log(`\n## One long-lived server, batches of ${fmt(size)} CON requests (duplicate cache cap: 100,000 entries)\n`);
    console.log(table(['requests served', 'dedup entries before', 'CPU µs/request', 'dedup entries after', 'heap + array buffers per entry (B)'], out));
  }
  console.log(`\nendpoint CPU done in ${((Date.now() - t0) / 1000).toFixed(1)} s; load average at the end ${loadAverage()}`);
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
