// An independent check of our OSCORE (RFC 8613) with Wireshark's OSCORE dissector: requests and responses that our
// core protects, with contexts that are not RFC 8613 Appendix C's (fresh random secrets every run), travel over
// UDP between two loopback sockets of this test; tshark captures them on `lo` (a capture filter on the test's
// ports) and decrypts them with the same contexts given on its command line, in the dissector's "oscore_contexts"
// UAT. The dissector implements AES-CCM-16-64-128 and HKDF SHA-256 only, so those are the algorithms checked here.
// Needs tshark; without it the suite fails, or is skipped when COAP_INTEROP=skip. Without the right to capture on
// lo, the test writes the same datagrams to a pcap file itself, and tshark reads that instead.

import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, CoapOption } from '../../src/coap/message';
import { OPT, encodeUint } from '../../src/coap/options';
import { ClientBinding, SecurityContext, protectRequest, protectResponse, unprotectRequest, unprotectResponse } from '../../src/oscore';

const LOOPBACK = '127.0.0.1';

interface ContextSpec {
  clientId: string;
  serverId: string;
  masterSecret: string;
  masterSalt: string;
  idContext: string;
}

const newSpec = (clientId: string, serverId: string, idContext = ''): ContextSpec => ({
  clientId,
  serverId,
  masterSecret: crypto.randomBytes(16).toString('hex'),
  masterSalt: crypto.randomBytes(8).toString('hex'),
  idContext,
});

function pair(spec: ContextSpec): { client: SecurityContext; server: SecurityContext } {
  const h = (x: string) => Buffer.from(x, 'hex');
  const common = { masterSecret: h(spec.masterSecret), masterSalt: h(spec.masterSalt), ...(spec.idContext ? { idContext: h(spec.idContext) } : {}), alg: 10, hkdf: 'SHA-256' as const };
  return {
    client: SecurityContext.derive({ ...common, senderId: h(spec.clientId), recipientId: h(spec.serverId) }),
    server: SecurityContext.derive({ ...common, senderId: h(spec.serverId), recipientId: h(spec.clientId) }),
  };
}

/**
 * One record of Wireshark's "oscore_contexts" UAT (epan/dissectors/packet-oscore.c, field list
 * oscore_context_uat_flds): Sender ID, Recipient ID, Master Secret, Master Salt, ID Context, Algorithm, each a
 * quoted string. Wireshark's "Sender ID" is the client's: it derives the request key from it and matches it against
 * the kid of a request; responses find the context through the request with the same token.
 */
function uatRecord(s: ContextSpec, masterSecret = s.masterSecret): string {
  const fields = [s.clientId, s.serverId, masterSecret, s.masterSalt, s.idContext, 'AES-CCM-16-64-128 (CCM*)'];
  return `uat:oscore_contexts:${fields.map((f) => `"${f}"`).join(',')}`;
}

function tsharkMissing(): string | undefined {
  const r = spawnSync('tshark', ['--version'], { encoding: 'utf8' });
  if (r.error) return `tshark not found (${(r.error as NodeJS.ErrnoException).code}); Debian package: tshark`;
  if (r.status !== 0) return `tshark --version exited with ${r.status}`;
  return undefined;
}

function bind(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined); // a late ICMP error must not crash the run
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, LOOPBACK, () => {
      s.off('error', reject);
      s.setMulticastInterface(LOOPBACK);
      s.setMulticastTTL(1);
      resolve(s);
    });
  });
}

function receive(s: dgram.Socket, ms = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      s.off('message', on);
      reject(new Error(`nothing received within ${ms} ms`));
    }, ms);
    const on = (data: Buffer) => {
      clearTimeout(t);
      resolve(data);
    };
    s.once('message', on);
  });
}

function sendTo(s: dgram.Socket, data: Buffer, port: number): Promise<void> {
  return new Promise((resolve, reject) => s.send(data, port, LOOPBACK, (err) => (err ? reject(err) : resolve())));
}

/** `p`, or 'timeout' after `ms`; the timer never outlives the race (the leak check counts timers). */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    t = setTimeout(() => r('timeout'), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** A live capture on lo: resolves once dumpcap has opened the interface, or undefined when it cannot capture. */
async function startCapture(file: string, ports: number[], count: number): Promise<{ proc: ChildProcess; exited: Promise<number | null>; stderr: () => string } | undefined> {
  const filter = `udp and host ${LOOPBACK} and (${ports.map((p) => `port ${p}`).join(' or ')})`;
  // -c: stop after the expected number of packets, so none is left in the kernel buffer; -a: a safety net.
  const proc = spawn('tshark', ['-i', 'lo', '-f', filter, '-c', String(count), '-a', 'duration:60', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const started = await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), 15000);
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      // "Capturing on" comes before dumpcap has opened the interface; "Capture started." after.
      if (/Capture started/.test(stderr)) {
        clearTimeout(t);
        resolve(true);
      }
    });
    void exited.then(() => {
      clearTimeout(t);
      resolve(false);
    });
  });
  if (started) return { proc, exited, stderr: () => stderr };
  proc.kill('SIGTERM');
  await exited;
  const lines = stderr.trim().split('\n');
  const why = lines.find((l) => /error|permission|denied|no such|not (?:found|exist)/i.test(l)) ?? lines.pop();
  console.warn(`    (no live capture on lo, so the test writes the pcap itself: ${why?.trim()})`);
  return undefined;
}

/** pcap (LINKTYPE_RAW) of IPv4/UDP datagrams on loopback, for when capturing is not permitted. */
function writePcap(file: string, datagrams: { from: number; to: number; data: Buffer }[]): void {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(101, 20); // LINKTYPE_RAW: the packet starts with the IP header
  const records = datagrams.map((d, i) => {
    const ip = Buffer.alloc(28);
    ip.writeUInt8(0x45, 0);
    ip.writeUInt16BE(28 + d.data.length, 2);
    ip.writeUInt16BE(i + 1, 4);
    ip.writeUInt8(64, 8);
    ip.writeUInt8(17, 9);
    ip.set([127, 0, 0, 1], 12);
    ip.set([127, 0, 0, 1], 16);
    let sum = 0;
    for (let j = 0; j < 20; j += 2) sum += ip.readUInt16BE(j);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    ip.writeUInt16BE(~sum & 0xffff, 10);
    ip.writeUInt16BE(d.from, 20);
    ip.writeUInt16BE(d.to, 22);
    ip.writeUInt16BE(8 + d.data.length, 24); // UDP checksum 0: none (allowed over IPv4, RFC 768)
    const pkt = Buffer.concat([ip, d.data]);
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(1_700_000_000 + i, 0);
    rec.writeUInt32LE(pkt.length, 8);
    rec.writeUInt32LE(pkt.length, 12);
    return Buffer.concat([rec, pkt]);
  });
  fs.writeFileSync(file, Buffer.concat([header, ...records]));
}

interface Frame {
  number: number;
  srcPort: number;
  code: number;
  token: string;
  kid: string;
  kidContext: string;
  piv: string;
  /** set only when the dissector found a context, decrypted, and the tag verified */
  tag: string;
  innerCode: number | undefined;
  uriPath: string[];
  uriQuery: string[];
  /** Uri-Path options of the outer (unencrypted) message */
  outerUriPath: string[];
  /** the decrypted body as tshark shows it (text/plain bodies) */
  text: string[];
}

const FIELDS = ['frame.number', 'udp.srcport', 'coap.code', 'coap.token', 'coap.opt.object_security_kid', 'coap.opt.object_security_kid_context', 'coap.opt.object_security_piv', 'oscore.tag', 'oscore.code', 'oscore.opt.uri_path', 'oscore.opt.uri_query', 'coap.opt.uri_path'];

/** tshark's view of the capture: fields, plus the text lines it shows for each decrypted body. */
function dissect(file: string, serverPort: number, uat: string[]): { frames: Frame[]; verbose: string } {
  const common = ['-r', file, '-Y', `udp.port == ${serverPort}`, '-d', `udp.port==${serverPort},coap`, ...uat.flatMap((u) => ['-o', u])];
  const run = (args: string[]) => {
    const r = spawnSync('tshark', [...common, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`tshark -r failed (exit ${r.status}): ${r.stderr}`);
    return r.stdout;
  };
  const rows = run(['-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=a', '-E', 'aggregator=;', ...FIELDS.flatMap((f) => ['-e', f])]);
  const verbose = run(['-V']);
  // -V: one block per frame, each starting with "Frame <n>:"; a decrypted text body is shown under
  // "Line-based text data" (the CoAP payload dissector, called by the OSCORE dissector on the plaintext).
  const textOf = new Map<number, string[]>();
  for (const block of verbose.split(/^(?=Frame \d+:)/m)) {
    const n = Number(/^Frame (\d+):/.exec(block)?.[1]);
    const oscore = block.split(/^Object Security for Constrained RESTful Environments$/m)[1] ?? '';
    const text = /^Line-based text data: .*\n((?: {4}.*\n?)*)/m.exec(oscore)?.[1] ?? '';
    textOf.set(n, text.split('\n').map((l) => l.trim()).filter(Boolean));
  }
  const frames = rows
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split('|');
      const list = (s: string) => (s ? s.split(';') : []);
      const hex = (s: string) => s.replace(/:/g, '').toLowerCase();
      const number = Number(f[0]);
      return {
        number,
        srcPort: Number(f[1]),
        code: Number(f[2]),
        token: hex(f[3]),
        kid: hex(f[4]),
        kidContext: hex(f[5]),
        piv: hex(f[6]),
        tag: hex(f[7]),
        innerCode: f[8] ? Number(f[8]) : undefined,
        uriPath: list(f[9]),
        uriQuery: list(f[10]),
        outerUriPath: list(f[11]),
        text: textOf.get(number) ?? [],
      };
    });
  return { frames, verbose };
}

const opt = (number: number, value: string | number): CoapOption => ({ number, value: typeof value === 'number' ? encodeUint(value) : Buffer.from(value, 'utf8') });

interface Case {
  name: string;
  spec: ContextSpec;
  request: CoapMessage;
  response: { code: number; options: CoapOption[]; payload: Buffer };
  /** response with its own Partial IV (true) or reusing the request nonce (false) */
  ownPiv: boolean;
  expect: { path: string[]; query: string[]; requestText: string[]; responseText: string[]; innerCode: number; responseCode: number };
}

describe('interop with Wireshark: tshark decrypts what our OSCORE protects', function () {
  this.timeout(60000);
  let tmp: string;
  let clientSock: dgram.Socket | undefined;
  let serverSock: dgram.Socket | undefined;
  let capture: Awaited<ReturnType<typeof startCapture>>;
  let cases: Case[];
  let file: string;
  let serverPort: number;
  const sent: { from: number; to: number; data: Buffer }[] = [];
  const received: { request: CoapMessage; response: CoapMessage }[] = [];

  before(async function () {
    const missing = tsharkMissing();
    if (missing) {
      if (process.env.COAP_INTEROP === 'skip') this.skip();
      throw new Error(`tshark interop test cannot run: ${missing}. Set COAP_INTEROP=skip to skip it.`);
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshark-oscore-'));
    file = path.join(tmp, 'oscore.pcapng');
    clientSock = await bind();
    serverSock = await bind();
    const clientPort = clientSock.address().port;
    serverPort = serverSock.address().port;

    const plain = newSpec('0a', '0b');
    const withIdContext = newSpec('c0ffee', '', 'a5a5a5a5d00d');
    const text = (s: string) => Buffer.from(s, 'utf8');
    let mid = 0x4a00;
    const req = (code: number, token: string, options: CoapOption[], payload = ''): CoapMessage => ({
      type: 'CON', code, messageId: mid++, token: Buffer.from(token, 'hex'), options: options.sort((a, b) => a.number - b.number), payload: text(payload),
    });
    cases = [
      {
        name: 'GET with Uri-Path and Uri-Query; 2.05 reusing the request nonce',
        spec: plain,
        request: req(CODES.GET, '71a1', [opt(OPT.URI_PATH, 'sensors'), opt(OPT.URI_PATH, 'temp'), opt(OPT.URI_QUERY, 'unit=C')]),
        response: { code: CODES.CONTENT, options: [opt(OPT.CONTENT_FORMAT, 0)], payload: text('21.5 C') },
        ownPiv: false,
        expect: { path: ['sensors', 'temp'], query: ['unit=C'], requestText: [], responseText: ['21.5 C'], innerCode: CODES.GET, responseCode: CODES.CONTENT },
      },
      {
        name: 'POST with a text body; 2.04 with its own Partial IV',
        spec: plain,
        request: req(CODES.POST, '71a2', [opt(OPT.URI_PATH, 'actuators'), opt(OPT.URI_PATH, 'lamp'), opt(OPT.CONTENT_FORMAT, 0)], 'switch on'),
        response: { code: CODES.CHANGED, options: [opt(OPT.CONTENT_FORMAT, 0)], payload: text('lamp is on') },
        ownPiv: true,
        expect: { path: ['actuators', 'lamp'], query: [], requestText: ['switch on'], responseText: ['lamp is on'], innerCode: CODES.POST, responseCode: CODES.CHANGED },
      },
      {
        name: 'PUT with kid context (ID Context) and an empty server ID; 2.05 with its own Partial IV',
        spec: withIdContext,
        request: req(CODES.PUT, '71a3', [opt(OPT.URI_PATH, 'config'), opt(OPT.CONTENT_FORMAT, 0)], 'mode=eco'),
        response: { code: CODES.CONTENT, options: [opt(OPT.CONTENT_FORMAT, 0)], payload: text('mode is eco') },
        ownPiv: true,
        expect: { path: ['config'], query: [], requestText: ['mode=eco'], responseText: ['mode is eco'], innerCode: CODES.PUT, responseCode: CODES.CONTENT },
      },
    ];
    // Skip a few sequence numbers so Partial IVs are not all 0.
    const contexts = cases.map((c) => c.spec).filter((s, i, all) => all.indexOf(s) === i).map((s) => ({ spec: s, ...pair(s) }));
    for (const c of contexts) for (let i = 0; i < 5; i++) c.client.sequence.next();

    capture = await startCapture(file, [clientPort, serverPort], cases.length * 2);

    // The exchanges, over real UDP: protect at the client, verify at the server, and back.
    for (const c of cases) {
      const { client, server } = contexts.find((x) => x.spec === c.spec)!;
      const p = protectRequest(client, c.request);
      const reqBytes = encode(p.message);
      const arrived = receive(serverSock);
      await sendTo(clientSock, reqBytes, serverPort);
      sent.push({ from: clientPort, to: serverPort, data: reqBytes });
      const v = unprotectRequest(server, decode(await arrived));
      const resParts = protectResponse(v.binding, c.response, { partialIv: c.ownPiv });
      const resBytes = encode({ type: 'ACK', messageId: c.request.messageId, token: c.request.token, ...resParts });
      const back = receive(clientSock);
      await sendTo(serverSock, resBytes, clientPort);
      sent.push({ from: serverPort, to: clientPort, data: resBytes });
      const r = unprotectResponse(p.binding as ClientBinding, decode(await back));
      received.push({ request: v.message, response: r.message });
    }

    if (capture) {
      const code = await within(capture.exited, 10000);
      if (code === 'timeout') {
        capture.proc.kill('SIGINT');
        await capture.exited;
        throw new Error(`tshark did not see all ${cases.length * 2} datagrams within 10 s:\n${capture.stderr()}`);
      }
    } else writePcap(file, sent);
  });

  after(async function () {
    if (capture && capture.proc.exitCode === null) {
      capture.proc.kill('SIGTERM');
      await capture.exited;
    }
    await Promise.all([clientSock, serverSock].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)));
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('our own endpoints agree first: every exchange verified in both directions', function () {
    assert.equal(received.length, cases.length);
    for (const [i, c] of cases.entries()) {
      assert.equal(received[i].request.code, c.request.code);
      assert.equal(received[i].response.payload.toString(), c.response.payload.toString());
    }
  });

  it('tshark decrypts every request and response and verifies its tag: inner code, Uri-Path, Uri-Query and body', function () {
    const uat = [...new Set(cases.map((c) => c.spec))].map((s) => uatRecord(s));
    const { frames, verbose } = dissect(file, serverPort, uat);
    const show = () => `tshark -V said:\n${verbose.slice(0, 12000)}`;
    assert.equal(frames.length, cases.length * 2, `tshark shows ${frames.length} CoAP frames\n${show()}`);
    for (const [i, c] of cases.entries()) {
      const req = frames[2 * i];
      const res = frames[2 * i + 1];
      const label = `${c.name} (frames ${req.number}, ${res.number})`;
      // The outer message: what an observer without the keys sees.
      assert.equal(req.code, CODES.POST, `${label}: outer code of the request`);
      assert.equal(req.token, c.request.token.toString('hex'), label);
      assert.equal(req.kid, c.spec.clientId, `${label}: kid`);
      assert.equal(req.kidContext, c.spec.idContext, `${label}: kid context`);
      assert.deepEqual(req.outerUriPath, [], `${label}: no Uri-Path outside`);
      // Decrypted with tshark's own implementation, tag checked (oscore.tag is only shown when it verifies).
      assert.match(req.tag, /^[0-9a-f]{16}$/, `${label}: request not decrypted / tag not verified\n${show()}`);
      assert.equal(req.innerCode, c.expect.innerCode, label);
      assert.deepEqual(req.uriPath, c.expect.path, label);
      assert.deepEqual(req.uriQuery, c.expect.query, label);
      assert.deepEqual(req.text, c.expect.requestText, `${label}: request body`);
      assert.equal(res.code, CODES.CHANGED, `${label}: outer code of the response`);
      assert.equal(res.piv !== '', c.ownPiv, `${label}: Partial IV in the response`);
      assert.match(res.tag, /^[0-9a-f]{16}$/, `${label}: response not decrypted / tag not verified\n${show()}`);
      assert.equal(res.innerCode, c.expect.responseCode, label);
      assert.deepEqual(res.text, c.expect.responseText, `${label}: response body`);
    }
  });

  it('with a wrong Master Secret tshark decrypts nothing (so the check above has teeth)', function () {
    const uat = [...new Set(cases.map((c) => c.spec))].map((s) => uatRecord(s, crypto.randomBytes(16).toString('hex')));
    const { frames, verbose } = dissect(file, serverPort, uat);
    assert.equal(frames.length, cases.length * 2);
    for (const f of frames) {
      assert.equal(f.tag, '', `frame ${f.number} verified with a wrong key`);
      assert.deepEqual(f.uriPath, []);
      assert.deepEqual(f.text, []);
    }
    assert.match(verbose, /Authentication tag check failed/);
  });
});
