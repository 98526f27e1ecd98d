// The group proxy against the attacks of issue 8, measured from the attacker's and the victim's side: bytes the
// proxy sends back per byte received (reflection, RFC 9000 §8.1's 3x as the bar), memory after a full GC per
// 10,000 requests, what one host gets through 40 source ports, T' = 0 floods, unicast forwards to a silent host,
// and a spoofed allow-listed address. It uses only the API that main's proxy has too, so the same file runs against
// a build of main ("before") and of this branch ("after"). Loopback only, multicast pinned to 127.0.0.1, TTL 1;
// every loop is bounded in count and time.
// Run: npm run build && node --expose-gc dist/bench/proxy-abuse.js [--n=10000]

import dgram from 'node:dgram';
import { encode, decode } from '../src/coap/codec';
import { CODES } from '../src/coap/codes';
import { CoapMessage, createMessage, getOption } from '../src/coap/message';
import { OPT, encodeUint, optionNumber } from '../src/coap/options';
import { GroupServer } from '../src/group/group-server';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { GroupProxy } from '../src/proxy/group-proxy';
import { requestViaProxy } from '../src/proxy/proxy-client';
import { UdpTransport } from '../src/transport/udp-transport';
import { fmt, forceGc, numArg, parseArgs, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';
const MT = optionNumber('Multicast-Timeout');
const ECHO = 252;

interface Attacker {
  sock: dgram.Socket;
  port: number;
  sent: number;
  received: number;
  answers: number;
  echo?: Buffer;
  close(): Promise<void>;
}

async function attackerOn(address: string, port = 0): Promise<Attacker> {
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  await new Promise<void>((r) => sock.bind(port, address, () => r()));
  const a: Attacker = { sock, port: sock.address().port, sent: 0, received: 0, answers: 0, close: () => new Promise<void>((r) => sock.close(() => r())) };
  sock.on('message', (m) => {
    a.received += m.length;
    a.answers++;
    try {
      const msg = decode(m);
      const e = getOption(msg, ECHO);
      if (msg.code === CODES.UNAUTHORIZED && e) a.echo = e; // a client that answers Echo (after: RFC 9175 §2.4)
    } catch {
      // not CoAP
    }
  });
  return a;
}

function send(a: Attacker, m: CoapMessage, dest: { address: string; port: number }): void {
  const data = encode(m);
  a.sock.send(data, dest.port, dest.address);
  a.sent += data.length;
}

const until = (cond: () => boolean, ms: number) =>
  new Promise<boolean>((resolve) => {
    const deadline = Date.now() + ms;
    const check = () => (cond() ? resolve(true) : Date.now() > deadline ? resolve(false) : setTimeout(check, 5));
    check();
  });

function memory(): number {
  forceGc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

async function proxyWith(allow: { address: string }[], reverse?: { pathPrefix: string[]; group: string; standIn: 'group' }[]): Promise<{ proxy: GroupProxy; listen: CoapEndpoint; upstream: CoapEndpoint; close(): Promise<void> }> {
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 8 << 20 }));
  const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 8 << 20 }));
  const proxy = new GroupProxy({ listen, upstream, allow, ...(reverse ? { reverse } : {}) });
  for (const e of [listen, upstream, proxy]) e.on('handler-error', () => undefined);
  return { proxy, listen, upstream, close: async () => { await proxy.close(); await listen.close(); await upstream.close(); } };
}

async function main(): Promise<void> {
  const args = parseArgs();
  const n = numArg(args, 'n', 10_000);
  const port = await freeGroupPort(GROUP);
  const servers: GroupServer[] = [];
  for (let i = 0; i < 5; i++) {
    const s = await GroupServer.open({ address: `127.0.0.${2 + i}`, port: 0, groups: [{ address: GROUP, port }], leisure: 0 });
    s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(64) }));
    servers.push(s);
  }
  const groupRequests = () => servers.reduce((a, s) => a + s.counters.groupRequests, 0);
  const rows: (string | number)[][] = [];
  const garbage = Buffer.alloc(255, 0xff);

  // 1-2. Reflection from a source that is not allow-listed, n CON requests each.
  for (const [name, options] of [
    ['reflection: reverse proxy, 4 Uri-Path segments of 255 x 0xFF', [{ number: OPT.URI_PATH, value: Buffer.from('g') }, ...[0, 1, 2, 3].map(() => ({ number: OPT.URI_PATH, value: garbage }))]],
    ['reflection: Proxy-Uri of 1,034 control bytes', [{ number: OPT.PROXY_URI, value: Buffer.alloc(1034, 0x01) }]],
  ] as const) {
    const p = await proxyWith([{ address: '127.0.0.9' }], [{ pathPrefix: ['g'], group: `coap://${GROUP}:${port}`, standIn: 'group' }]);
    const a = await attackerOn('127.0.0.1');
    const dest = p.listen.transport.address();
    const m0 = memory();
    let largest = 0;
    a.sock.on('message', (m) => (largest = Math.max(largest, m.length)));
    for (let sent = 0; sent < n; sent += 250) {
      for (let i = 0; i < 250; i++) send(a, createMessage({ type: 'CON', code: CODES.GET, messageId: (sent + i) & 0xffff, token: Buffer.from([i, sent & 0xff]), options: [...options] }), dest);
      await until(() => a.answers >= sent + 250, 5000);
    }
    const grew = memory() - m0;
    rows.push([name, fmt(a.sent), fmt(a.received), fmt(a.received / a.sent, 2), fmt(largest), fmt(grew / 1e6, 1), '-']);
    await a.close();
    await p.close();
  }

  // 3. One host, 40 source ports, each asking for 16 group exchanges that stay pending (T' = 30 s).
  {
    const p = await proxyWith([{ address: '127.0.0.1' }]);
    const eps: CoapEndpoint[] = [];
    for (let i = 0; i < 40; i++) eps.push(new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' })));
    const m0 = memory();
    const exs: ReturnType<typeof requestViaProxy>[] = [];
    for (const ep of eps) for (let i = 0; i < 16; i++) exs.push(requestViaProxy(ep, { proxy: p.listen.transport.address(), uri: `coap://${GROUP}:${port}/r`, multicastTimeout: 30, timeout: 40_000 }));
    await until(() => exs.every((e) => e.responses.length > 0 || e.proxyErrors.length > 0), 15_000);
    const accepted = p.proxy.activeExchanges;
    const grew = memory() - m0;
    rows.push(['one host, 40 ports x 16 pending group exchanges', '-', '-', '-', '-', fmt(grew / 1e6, 1), `${accepted} of 640 accepted`]);
    for (const e of exs) e.cancel();
    await Promise.all(exs.map((e) => e.summary));
    for (const ep of eps) await ep.close();
    await p.close();
  }

  // 4. T' = 0 flood from one allow-listed host: n CON requests, as fast as answered.
  {
    const p = await proxyWith([{ address: '127.0.0.1' }]);
    const a = await attackerOn('127.0.0.1');
    const dest = p.listen.transport.address();
    const g0 = groupRequests();
    const m0 = memory();
    const req = (mid: number) =>
      createMessage({ type: 'CON', code: CODES.GET, messageId: mid & 0xffff, token: Buffer.from([mid & 0xff, (mid >> 8) & 0xff, 7]), options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP}:${port}/r`) }, { number: MT, value: encodeUint(0) }, ...(a.echo ? [{ number: ECHO, value: a.echo }] : [])].sort((x, y) => x.number - y.number) });
    send(a, req(0), dest);
    await until(() => a.answers >= 1, 2000);
    for (let sent = 1; sent < n; sent += 250) {
      for (let i = 0; i < 250; i++) send(a, req(sent + i), dest);
      await until(() => a.answers >= sent + 250, 5000);
    }
    await until(() => false, 300);
    const forwarded = groupRequests() - g0;
    const grew = memory() - m0;
    rows.push([`T' = 0 flood, ${fmt(n)} requests in ${fmt(n / 250)} bursts`, fmt(a.sent), fmt(a.received), fmt(a.received / a.sent, 2), '-', fmt(grew / 1e6, 1), `${fmt(forwarded / servers.length)} forwarded to the group`]);
    await a.close();
    await p.close();
  }

  // 5. Unicast forwards to a silent host: 3,000 NON requests, from an address that answered Echo first (the limit
  // per host), then from one that never does (RFC 9175 §2.4: nothing is forwarded for it).
  for (const answersEcho of [true, false]) {
    const p = await proxyWith([{ address: '127.0.0.1' }]);
    const silent = await attackerOn('127.0.0.31');
    const a = await attackerOn('127.0.0.1');
    const dest = p.listen.transport.address();
    const req = (i: number) => createMessage({ type: 'NON', code: CODES.GET, messageId: i, token: Buffer.from([i & 0xff, i >> 8, 9]), options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://127.0.0.31:${silent.port}/x`) }, ...(a.echo ? [{ number: ECHO, value: a.echo }] : [])] });
    if (answersEcho) {
      send(a, req(0xffff), dest); // answered with 4.01 and Echo, which every request below carries
      await until(() => a.answers >= 1, 2000);
    }
    const m0 = memory();
    for (let i = 0; i < 3000; i++) send(a, req(i), dest);
    await until(() => false, 4000); // first transmissions and the first retransmissions of the proxy's CONs
    const grew = memory() - m0;
    const who = answersEcho ? 'Echo answered' : 'Echo never answered';
    rows.push([`unicast forwards to a silent host: 3,000 requests, ${who}`, fmt(a.sent), fmt(a.received), fmt(a.received / a.sent, 2), '-', fmt(grew / 1e6, 1), `${fmt(silent.answers)} datagrams to the silent host in 4 s`]);
    await a.close();
    await p.close();
    await silent.close();
  }

  // 6. A spoofed allow-listed address: the victim never answers Echo; what does one small request send it?
  {
    const p = await proxyWith([{ address: '127.0.0.5' }]);
    const victim = await attackerOn('127.0.0.5');
    const dest = p.listen.transport.address();
    const g0 = groupRequests();
    for (let i = 0; i < 100; i++) send(victim, createMessage({ type: 'NON', code: CODES.GET, messageId: i, token: Buffer.from([i, 5]), options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP}:${port}/r`) }, { number: MT, value: encodeUint(1) }] }), dest);
    await until(() => false, 2000);
    rows.push(['spoofed allow-listed address, 100 requests, Echo never answered', fmt(victim.sent), fmt(victim.received), fmt(victim.received / victim.sent, 2), '-', '-', `${fmt((groupRequests() - g0) / servers.length)} fan-outs`]);
    await victim.close();
    await p.close();
  }

  for (const s of servers) await s.close();
  console.log(`\n${fmt(n)} requests per reflection and T' = 0 row; 5 servers\n`);
  console.log(table(['attack', 'bytes in', 'bytes out', 'out / in', 'largest datagram', 'memory after GC (MB)', 'other'], rows));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
