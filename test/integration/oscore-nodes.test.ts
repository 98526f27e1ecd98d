// coap-oscore-context and coap-oscore-layer in a real Node-RED runtime (node-red-node-test-helper): a client and a
// server context, protect / verify round trips through layer nodes (RFC 8613 §8), the errors a flow author sees
// (§8.2 "Decryption failed", §7.4 "Replay detected"), sequence numbers that survive a restart without reuse
// (App. B.1.1), Echo recovery after a crash (App. B.1.2), and no secret in any msg, status or log.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, CoapOption, getOption, getOptions } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint } from '../../src/coap/options';
import { SecurityContext, decodeOscoreOption, decodePartialIv, deriveKeys, protectRequest } from '../../src/oscore';
import { nodeRedRuntime } from '../support/node-red-runtime';
import { DoneCounter } from '../support/flow';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const contextNode = require('../../nodes/coap-oscore-context');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const layerNode = require('../../nodes/coap-oscore-layer');

helper.init(nodeRedRuntime());

type Msg = Record<string, any>;

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const opt = (number: number, value: string | number | Buffer): CoapOption => ({
  number,
  value: Buffer.isBuffer(value) ? value : typeof value === 'number' ? encodeUint(value) : Buffer.from(value, 'utf8'),
});

// Fresh secrets for every run: none is written in this file, and none may show up anywhere below.
const SECRET = crypto.randomBytes(16).toString('hex');
const SALT = crypto.randomBytes(8).toString('hex');
const WRONG = crypto.randomBytes(16).toString('hex');
const CLIENT_ID = 'c1';
const SERVER_ID = '5e';
const KEYS = deriveKeys({ masterSecret: h(SECRET), masterSalt: h(SALT), senderId: h(CLIENT_ID), recipientId: h(SERVER_ID) });
const FORBIDDEN = [SECRET, SALT, WRONG, KEYS.senderKey.toString('hex'), KEYS.recipientKey.toString('hex')];

const credentials = {
  ctxC: { masterSecret: SECRET, masterSalt: SALT },
  ctxS: { masterSecret: SECRET, masterSalt: SALT },
  ctxW: { masterSecret: WRONG, masterSalt: SALT },
};

function contexts(store: 'file' | 'memory' = 'file') {
  return [
    { id: 'ctxC', type: 'coap-oscore-context', name: 'client', senderId: CLIENT_ID, recipientId: SERVER_ID, alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: store },
    { id: 'ctxS', type: 'coap-oscore-context', name: 'server', senderId: SERVER_ID, recipientId: CLIENT_ID, alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: store },
    { id: 'ctxW', type: 'coap-oscore-context', name: 'wrong key', senderId: SERVER_ID, recipientId: CLIENT_ID, alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: store },
  ];
}

/**
 * client: pReq (protect request) -> wire tap + uReq (server verifies) -> srvOut
 * server: pRes (protect response) -> wire tap + uRes (client verifies) -> cliOut
 * uReqW verifies with a context of the wrong key; its failures go to a Catch node.
 */
const LAYERS = ['pReq', 'uReq', 'pRes', 'uRes', 'uReqW'];

/**
 * How many layer nodes each message went through: a test's own input into a layer, and what pReq / pRes pass on
 * to uReq / uRes (the wire taps see exactly that). Each of them must finish it (done() or done(err)) once: the
 * Complete and Catch nodes report every finish, checked when the flow unloads.
 */
let given = new Map<string, number>();
let dones: DoneCounter;
let msgCounter = 0;
const give = (id: string) => given.set(id, (given.get(id) ?? 0) + 1);
function watchDones(): void {
  given = new Map();
  dones = new DoneCounter(helper.getNode('cmp-out'));
  helper.getNode('reqWire').on('input', (m: Msg) => give(m._msgid));
  helper.getNode('resWire').on('input', (m: Msg) => give(m._msgid));
}
async function assertDonesOnce(): Promise<void> {
  let total = 0;
  for (const n of given.values()) total += n;
  await dones.waitFor(total);
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(Object.fromEntries(dones.counts), Object.fromEntries(given), 'done() once per message and layer node');
}
function input(into: string, msg: Msg): void {
  msg._msgid = `in-${++msgCounter}`;
  if (LAYERS.includes(into)) give(msg._msgid);
  helper.getNode(into).receive(msg);
}

function flow(store: 'file' | 'memory' = 'file', format: 'datagram' | 'message' = 'datagram') {
  const layer = (id: string, context: string, role: string, wires: string[][], errors = 'throw') => ({ id, z: 'f1', type: 'coap-oscore-layer', context, role, format, errors, outputs: errors === 'output' ? 2 : 1, wires });
  return [
    { id: 'f1', type: 'tab', label: 'oscore' },
    ...contexts(store),
    layer('pReq', 'ctxC', 'protect-request', [['reqWire', 'uReq']]),
    layer('uReq', 'ctxS', 'unprotect-request', [['srvOut'], ['srvErr']], 'output'),
    layer('pRes', 'ctxS', 'protect-response', [['resWire', 'uRes']]),
    layer('uRes', 'ctxC', 'unprotect-response', [['cliOut']]),
    layer('uReqW', 'ctxW', 'unprotect-request', [['wOut']]),
    { id: 'catcher', z: 'f1', type: 'catch', scope: ['uReqW', 'uRes'], uncaught: false, wires: [['caught', 'cmp-out']] },
    // done() exactly once per message and layer node: a Complete node on every layer, with the Catch node above
    // (the test helper loads one node of each core type: pReq, uReq and pRes do not fail in these tests)
    { id: 'cmp', z: 'f1', type: 'complete', scope: LAYERS, uncaught: false, wires: [['cmp-out']] },
    { id: 'cmp-out', z: 'f1', type: 'helper' },
    ...['reqWire', 'srvOut', 'srvErr', 'resWire', 'cliOut', 'wOut', 'caught'].map((id) => ({ id, z: 'f1', type: 'helper' })),
  ];
}

/** Every msg any helper node sees, every status and every log call, to look for secrets at the end. */
const seen: { msgs: unknown[]; statuses: unknown[]; logs: unknown[] } = { msgs: [], statuses: [], logs: [] };

function watch(): void {
  for (const id of ['reqWire', 'srvOut', 'srvErr', 'resWire', 'cliOut', 'wOut', 'caught']) helper.getNode(id).on('input', (m: Msg) => seen.msgs.push(m));
  for (const id of ['pReq', 'uReq', 'pRes', 'uRes', 'uReqW', 'ctxC', 'ctxS', 'ctxW']) {
    const n = helper.getNode(id);
    for (const method of ['log', 'warn', 'error', 'status'] as const) {
      const orig = n[method].bind(n);
      n[method] = (...args: unknown[]) => {
        (method === 'status' ? seen.statuses : seen.logs).push(args);
        return orig(...args);
      };
    }
  }
}

/** Collect what RED.log recorded (including what config nodes logged while they were created). */
function harvestLog(): void {
  const spy = helper.log();
  if (spy) for (const call of spy.getCalls()) seen.logs.push(call.args);
}

function nextMsg(id: string, ms = 2000): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no message at ${id} within ${ms} ms`)), ms);
    helper.getNode(id).once('input', (m: Msg) => {
      clearTimeout(t);
      resolve(m);
    });
  });
}

async function through(into: string, msg: Msg, outId: string): Promise<Msg> {
  const out = nextMsg(outId);
  input(into, msg);
  return out;
}

function statusesOf(id: string): { fill?: string; text?: string }[] {
  const out: { fill?: string; text?: string }[] = [];
  const n = helper.getNode(id);
  const orig = n.status.bind(n);
  n.status = (s: { fill?: string; text?: string }) => {
    out.push(s);
    seen.statuses.push([s]);
    return orig(s);
  };
  return out;
}

let tokenCounter = 0;
function getRequest(extra: CoapOption[] = []): CoapMessage {
  tokenCounter++;
  return {
    type: 'CON',
    code: CODES.GET,
    messageId: 0x2000 + tokenCounter,
    token: Buffer.from([0xa0, tokenCounter >> 8, tokenCounter & 0xff]),
    options: [opt(OPT.URI_PATH, 'sensors'), opt(OPT.URI_PATH, 'temp'), ...extra].sort((a, b) => a.number - b.number),
    payload: Buffer.alloc(0),
  };
}

function responseTo(req: CoapMessage, text: string): CoapMessage {
  return { type: 'ACK', code: CODES.CONTENT, messageId: req.messageId, token: req.token, options: [opt(OPT.CONTENT_FORMAT, 0)], payload: Buffer.from(text) };
}

const pivOf = (datagram: Buffer): number | undefined => {
  const v = getOption(decode(datagram), OPT.OSCORE);
  const piv = v ? decodeOscoreOption(v).piv : undefined;
  return piv ? decodePartialIv(piv) : undefined;
};

/** One full exchange through the four layer nodes; returns the protected request and response datagrams. */
async function exchange(text: string, responseOptions?: Msg, extra: CoapOption[] = []): Promise<{ req: CoapMessage; protectedReq: Buffer; protectedRes: Buffer; atServer: Msg; atClient: Msg }> {
  const req = getRequest(extra);
  const wire = nextMsg('reqWire');
  const atServer = await through('pReq', { payload: encode(req) }, 'srvOut');
  const protectedReq = (await wire).payload as Buffer;
  const resWire = nextMsg('resWire');
  const atClient = await through('pRes', { payload: encode(responseTo(req, text)), ...(responseOptions ? { oscoreOptions: responseOptions } : {}) }, 'cliOut');
  const protectedRes = (await resWire).payload as Buffer;
  return { req, protectedReq, protectedRes, atServer, atClient };
}

describe('nodes: coap-oscore-context and coap-oscore-layer in a Node-RED runtime', function () {
  let root: string;
  let userDir: string;
  let loaded = false;

  /** helper.load with both node types; every test starts in its own user directory (beforeEach). */
  async function load(store: 'file' | 'memory' = 'file', format: 'datagram' | 'message' = 'datagram', creds: object = credentials): Promise<void> {
    await helper.load([contextNode, layerNode], flow(store, format), creds);
    loaded = true;
    watchDones();
    watch();
  }

  async function unload(): Promise<void> {
    try {
      await assertDonesOnce();
    } finally {
      harvestLog();
      loaded = false;
      await helper.unload();
    }
  }

  before(function () {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'oscore-nodes-'));
  });
  beforeEach(function () {
    userDir = fs.mkdtempSync(path.join(root, 'userdir-'));
    helper.settings({ userDir });
  });
  after(function () {
    helper.settings({ userDir: undefined });
    fs.rmSync(root, { recursive: true, force: true });
  });
  afterEach(async function () {
    if (loaded) await unload();
  });

  it('protect then unprotect a request and its response through two contexts (client and server roles)', async function () {
    await load();
    const { req, protectedReq, protectedRes, atServer, atClient } = await exchange('21.5 C');
    // On the wire: outer POST with only the OSCORE option; Uri-Path and payload are inside (RFC 8613 §4).
    const wireReq = decode(protectedReq);
    assert.equal(wireReq.code, CODES.POST);
    assert.deepEqual(wireReq.options.map((o) => o.number), [OPT.OSCORE]);
    assert.ok(!protectedReq.includes(Buffer.from('sensors')));
    assert.deepEqual(wireReq.token, req.token);
    assert.equal(wireReq.messageId, req.messageId);
    // At the server: the original request, with what identifies it.
    const plain = decode(atServer.payload);
    assert.equal(plain.code, CODES.GET);
    assert.deepEqual(getOptions(plain, OPT.URI_PATH).map(String), ['sensors', 'temp']);
    assert.equal(atServer.coap.options['Uri-Path'].join('/'), 'sensors/temp');
    assert.equal(atServer.oscore.role, 'unprotect-request');
    assert.equal(atServer.oscore.kid, CLIENT_ID);
    assert.equal(typeof atServer.oscore.piv, 'number');
    // The response: outer 2.04, first response reuses the request nonce (no Partial IV, §8.3).
    const wireRes = decode(protectedRes);
    assert.equal(wireRes.code, CODES.CHANGED);
    assert.equal(getOption(wireRes, OPT.OSCORE)!.length, 0);
    assert.ok(!protectedRes.includes(Buffer.from('21.5 C')));
    const back = decode(atClient.payload);
    assert.equal(back.code, CODES.CONTENT);
    assert.equal(back.payload.toString(), '21.5 C');
    assert.equal(decodeUint(getOption(back, OPT.CONTENT_FORMAT)!), 0);
    assert.equal(atClient.oscore.role, 'unprotect-response');
    assert.equal(atClient.coap.code, '2.05');
  });

  it('works on msg.coap + msg.payload (the message representation) as well', async function () {
    await load('file', 'message');
    const wire = nextMsg('reqWire');
    const atServer = await through('pReq', { coap: { code: 'PUT', type: 'NON', token: 'beef', messageId: 7, options: { 'Uri-Path': ['lamp'], 'Content-Format': 50 }, origin: { note: 'kept' } }, payload: { on: true } }, 'srvOut');
    const onWire = await wire;
    assert.equal(onWire.coap.code, '0.02');
    assert.deepEqual(Object.keys(onWire.coap.options), ['OSCORE']);
    assert.ok(Buffer.isBuffer(onWire.payload) && !onWire.payload.includes(Buffer.from('"on"')));
    assert.equal(atServer.coap.code, '0.03');
    assert.deepEqual(atServer.coap.options['Uri-Path'], ['lamp']);
    assert.equal(atServer.coap.token, 'beef');
    assert.equal(atServer.coap.origin.note, 'kept');
    assert.equal(atServer.payload.toString(), '{"on":true}');
    const atClient = await through('pRes', { coap: { code: '2.04', type: 'NON', token: 'beef', messageId: 8 }, payload: 'ok' }, 'cliOut');
    assert.equal(atClient.coap.code, '2.04');
    assert.equal(atClient.payload.toString(), 'ok');
  });

  it('a wrong key: ERR_OSCORE_DECRYPT with 4.00 "Decryption failed" on msg.error, status red, done(err) to a Catch node', async function () {
    await load();
    const statuses = statusesOf('uReqW');
    const wire = nextMsg('reqWire');
    input('pReq', { payload: encode(getRequest()) });
    const protectedReq = (await wire).payload as Buffer;
    const caught = await through('uReqW', { payload: protectedReq }, 'caught');
    // Node-RED's Catch convention: its own msg.error (with our code), and the node's object in msg._error.
    assert.equal(caught.error.code, 'ERR_OSCORE_DECRYPT');
    assert.equal(caught.error.source.id, 'uReqW');
    assert.equal(caught.error.message, 'OscoreError: Decryption failed');
    assert.deepEqual({ code: caught._error.code, message: caught._error.message, responseCode: caught._error.responseCode }, { code: 'ERR_OSCORE_DECRYPT', message: 'Decryption failed', responseCode: '4.00' });
    // The unprotected 4.00 a server may send back: Max-Age 0 and the diagnostic (§8.2 step 6).
    const res = decode(caught._error.response);
    assert.equal(res.code, CODES.BAD_REQUEST);
    assert.equal(res.type, 'ACK');
    assert.equal(getOption(res, OPT.OSCORE), undefined);
    assert.equal(decodeUint(getOption(res, OPT.MAX_AGE)!), 0);
    assert.equal(res.payload.toString(), 'Decryption failed');
    assert.equal(statuses.at(-1)?.fill, 'red');
    assert.match(String(statuses.at(-1)?.text), /4\.00 Decryption failed/);
  });

  it('a replayed request: ERR_OSCORE_REPLAY with 4.01 "Replay detected", status red (second output)', async function () {
    await load();
    const statuses = statusesOf('uReq');
    const first = await exchange('once');
    const failed = await through('uReq', { payload: first.protectedReq, ip: '127.0.0.1', port: 5683 }, 'srvErr');
    assert.deepEqual({ code: failed.error.code, message: failed.error.message, responseCode: failed.error.responseCode }, { code: 'ERR_OSCORE_REPLAY', message: 'Replay detected', responseCode: '4.01' });
    // Second output: the error response is already the payload, msg.ip / msg.port untouched for a udp out node.
    const res = decode(failed.payload);
    assert.equal(res.code, CODES.UNAUTHORIZED);
    assert.equal(res.payload.toString(), 'Replay detected');
    assert.deepEqual(res.token, first.req.token);
    assert.equal(failed.ip, '127.0.0.1');
    assert.equal(statuses.at(-1)?.fill, 'red');
    assert.equal(statuses.at(-1)?.text, '4.01 Replay detected');
    // A response is verified once; a replayed response is dropped on the client side without a response code.
    const caught = await through('uRes', { payload: first.protectedRes }, 'caught');
    assert.equal(caught._error.code, 'ERR_OSCORE_NO_EXCHANGE');
    assert.equal(caught._error.responseCode, null);
  });

  it('a restart with the file store: no sequence number reused, the saved replay window still rejects old requests', async function () {
    await load('file');
    const before = [];
    for (let i = 0; i < 3; i++) before.push(await exchange(`before ${i}`, { partialIv: true }));
    const reqPivs = before.map((e) => pivOf(e.protectedReq)!);
    const resPivs = before.map((e) => pivOf(e.protectedRes)!);
    assert.deepEqual(reqPivs, [0, 1, 2]);
    assert.deepEqual(resPivs, [0, 1, 2]);
    assert.ok(fs.existsSync(path.join(userDir, 'oscore-ctxC.ssn.json')));
    await unload(); // closes the contexts: the server's replay window is saved
    assert.ok(fs.existsSync(path.join(userDir, 'oscore-ctxS.replay.json')));

    await load('file');
    assert.ok(!fs.existsSync(path.join(userDir, 'oscore-ctxS.replay.json')), 'the saved window is consumed at start');
    const after = [];
    for (let i = 0; i < 3; i++) after.push(await exchange(`after ${i}`, { partialIv: true }));
    const reqAfter = after.map((e) => pivOf(e.protectedReq)!);
    const resAfter = after.map((e) => pivOf(e.protectedRes)!);
    assert.ok(Math.min(...reqAfter) > Math.max(...reqPivs), `request PIVs ${reqPivs} then ${reqAfter}`);
    assert.ok(Math.min(...resAfter) > Math.max(...resPivs), `response PIVs ${resPivs} then ${resAfter}`);
    assert.deepEqual(reqAfter, [reqAfter[0], reqAfter[0] + 1, reqAfter[0] + 2], 'increasing by one after the skip');
    assert.equal(after[2].atClient.payload.subarray(-7).toString(), 'after 2');
    // A request captured before the restart is still a replay.
    const failed = await through('uReq', { payload: before[1].protectedReq }, 'srvErr');
    assert.equal(failed.error.code, 'ERR_OSCORE_REPLAY');
  });

  it('a redeploy with new keys is a new context: the saved window is not resumed, the peer may start at 0 again', async function () {
    await load('file');
    for (let i = 0; i < 2; i++) await exchange(`old keys ${i}`);
    await unload();
    const secret = crypto.randomBytes(16).toString('hex');
    FORBIDDEN.push(secret);
    await load('file', 'datagram', { ...credentials, ctxS: { masterSecret: secret, masterSalt: SALT } });
    // A peer that (correctly) starts a new context at sequence number 0, built from the core directly.
    const peer = SecurityContext.derive({ masterSecret: h(secret), masterSalt: h(SALT), senderId: h(CLIENT_ID), recipientId: h(SERVER_ID) });
    const { message } = protectRequest(peer, getRequest());
    assert.equal(pivOf(encode(message)), 0);
    const atServer = await through('uReq', { payload: encode(message) }, 'srvOut');
    assert.equal(atServer.oscore.piv, 0);
  });

  it('after a crash (no saved window) the server challenges with Echo, and the retry with Echo is accepted (App. B.1.2)', async function () {
    await load('file');
    const old = await exchange('before the crash');
    await unload();
    fs.rmSync(path.join(userDir, 'oscore-ctxS.replay.json')); // as if the process had been killed

    await load('file');
    const req = getRequest();
    const challenged = await through('pReq', { payload: encode(req) }, 'srvErr');
    assert.equal(challenged.error.code, 'ERR_OSCORE_ECHO_REQUIRED');
    assert.equal(challenged.error.responseCode, '4.01');
    // The challenge is a protected response: the client verifies it and finds 4.01 with an Echo option inside.
    assert.ok(getOption(decode(challenged.payload), OPT.OSCORE) !== undefined);
    const atClient = await through('uRes', { payload: challenged.payload }, 'cliOut');
    assert.equal(atClient.coap.code, '4.01');
    const echo = atClient.coap.options.Echo as Buffer;
    assert.ok(Buffer.isBuffer(echo) && echo.length > 0);
    // Retry with the Echo value: accepted, and the Echo option is consumed by the OSCORE layer.
    const retry = getRequest([opt(OPT.ECHO, echo)]);
    const atServer = await through('pReq', { payload: encode(retry) }, 'srvOut');
    assert.deepEqual(getOptions(decode(atServer.payload), OPT.URI_PATH).map(String), ['sensors', 'temp']);
    assert.equal(getOption(decode(atServer.payload), OPT.ECHO), undefined);
    // The old request is now below the window.
    const failed = await through('uReq', { payload: old.protectedReq }, 'srvErr');
    assert.equal(failed.error.code, 'ERR_OSCORE_REPLAY');
  });

  it('memory-only sequence numbers continue across a redeploy in the same process (and warn)', async function () {
    await load('memory');
    const a = await exchange('a');
    const warned = helper.log().getCalls().some((c: { args: { level: number; msg: unknown }[] }) => /warn\.memory|in memory only/.test(String(c.args[0]?.msg)));
    assert.ok(warned, 'the memory store warns');
    await unload();
    await load('memory');
    const b = await exchange('b');
    assert.ok(pivOf(b.protectedReq)! > pivOf(a.protectedReq)!);
    assert.deepEqual(fs.readdirSync(userDir), [], 'memory mode writes no file');
  });

  it('a context that cannot be created reports why without echoing the credential', async function () {
    const bad = { ...credentials, ctxC: { masterSecret: `${SECRET}zz`, masterSalt: SALT } };
    await load('file', 'datagram', bad);
    const caught = await through('uRes', { payload: encode(responseTo(getRequest(), 'x')) }, 'caught');
    assert.equal(caught._error.code, 'ERR_OSCORE_CONFIG');
    assert.match(caught._error.message, /Master Secret must be hex digits/);
  });

  it('no secret or derived key appears in any msg, status or log line of the tests above', function () {
    harvestLog();
    const text = JSON.stringify(seen, (_k, v) => {
      if (v && v.type === 'Buffer' && Array.isArray(v.data)) return Buffer.from(v.data).toString('hex');
      return v;
    });
    assert.ok(seen.msgs.length > 20 && seen.logs.length > 3 && seen.statuses.length > 10, `too little recorded to judge: ${seen.msgs.length} msgs`);
    for (const s of FORBIDDEN) {
      assert.ok(!text.toLowerCase().includes(s), 'a secret or key is visible');
      assert.ok(!text.includes(Buffer.from(s, 'hex').toString('base64')), 'a secret or key is visible (base64)');
    }
    // And none in the files the contexts wrote.
    const files = fs.readdirSync(root, { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
    assert.ok(files.length >= 3);
    for (const f of files) {
      const body = fs.readFileSync(path.join(f.parentPath ?? (f as unknown as { path: string }).path, f.name), 'utf8');
      for (const s of FORBIDDEN) assert.ok(!body.includes(s), `${f.name} holds key material`);
    }
  });
});
