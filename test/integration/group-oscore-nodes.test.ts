// coap-group-oscore-context with coap-group-request and coap-observe-multicast in a Node-RED runtime
// (node-red-node-test-helper), against real Group OSCORE servers on loopback multicast: each response verified and
// attributed in msg.coap.origin.oscore, protected notifications delivered, the key-pair admin endpoint, sequence
// numbers and replay windows kept across a redeploy, and no secret in any msg, status or log.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { decodeOscoreOption, generateGroupKeyPair, parseCcs, privateKeyObject, protectResponse, publicKeyObject, sign, unprotectRequest, verify } from '../../src/oscore';
import { GroupMaterial, GroupOscoreLamp, endNodeRedLampTests, groupMaterial, intruder, memberConfigNode, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { freeGroupPort, GROUP_V4 } from '../support/lamps';
import { callsOf } from '../support/flow';

import { nodeRedRuntime } from '../support/node-red-runtime';
import { waitFor } from '../support/wait';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupContextNode = require('../../nodes/coap-group-oscore-context');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const requestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const observeNode = require('../../nodes/coap-observe-multicast');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const layerNode = require('../../nodes/coap-oscore-layer');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');

helper.init(nodeRedRuntime());

type Msg = Record<string, any>;

const hex = (b: Buffer) => b.toString('hex');

/** The config node of member `id` of `g`, knowing `peers`, and its credentials. */
function member(g: GroupMaterial, nodeId: string, id: string, peers: string[], store: 'file' | 'memory' = 'file') {
  return memberConfigNode(g, nodeId, id, { peers, sequenceStore: store, fields: { name: `member ${id}`, groupEncryptionAlg: '10', aeadAlg: '10', hkdf: 'SHA-256' } });
}

function secretsOf(g: GroupMaterial): string[] {
  return [hex(g.masterSecret), hex(g.masterSalt), ...[...g.keys.values()].map((k) => hex(k.privateKey))];
}

function assertNoSecret(things: unknown[], secrets: string[]): void {
  const text = JSON.stringify(things, (_k, v) => (v && v.type === 'Buffer' && Array.isArray(v.data) ? Buffer.from(v.data).toString('hex') : v));
  for (const s of secrets) assert.ok(!text.includes(s), 'a secret appeared in a msg, status or log');
}

function collect(id: string): Msg[] {
  const got: Msg[] = [];
  helper.getNode(id).on('input', (m: Msg) => got.push(m));
  return got;
}

describe('nodes: coap-group-oscore-context with coap-group-request and coap-observe-multicast (RFC 10021)', function () {
  this.timeout(20000);
  let root: string;
  let userDir: string;
  let material: GroupMaterial;
  let port: number;
  let lamps: GroupOscoreLamp[];

  before(async function () {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'group-oscore-nodes-'));
    port = await freeGroupPort();
    // A member ID per test: each test has a fresh user directory, so a reused ID would restart its sequence number
    // (the lamps would rightly refuse the repeated Partial IVs as replays).
    material = groupMaterial(['25', '26', '27', '28', '5e', ...serverIds(3)]);
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, firstHost: 60 });
  });
  beforeEach(function () {
    userDir = fs.mkdtempSync(path.join(root, 'userdir-'));
    helper.settings({ userDir });
  });
  afterEach(async function () {
    await helper.unload();
  });
  after(async function () {
    await endNodeRedLampTests(helper, lamps, root);
  });

  it('a group request with the Group OSCORE context: one message per lamp, verified and attributed (msg.coap.origin.oscore); no secret anywhere', async function () {
    const c = member(material, 'g25', '25', serverIds(3));
    const flow = [c.node, { id: 'req', type: 'coap-group-request', url: `coap://${GROUP_V4}:${port}/light`, method: 'GET', timeout: 1, payloadMode: 'auto', groupOscore: 'g25', wires: [['out']] }, { id: 'out', type: 'helper' }];
    await helper.load([groupContextNode, requestNode], flow, { g25: c.credentials });
    const out = collect('out');
    const statuses: unknown[] = [];
    const reqNode = helper.getNode('req');
    const orig = reqNode.status.bind(reqNode);
    reqNode.status = (s: unknown) => (statuses.push(s), orig(s));
    reqNode.receive({ payload: '' });
    await waitFor(() => out.some((m) => m.complete), 'the completion message');
    const responses = out.filter((m) => !m.complete);
    assert.equal(responses.length, 3);
    for (const m of responses) {
      const lamp = lamps.find((l) => l.address === m.coap.origin.address)!;
      assert.deepEqual(m.coap.origin.oscore, { kid: lamp.kid, mode: 'group' });
      assert.equal(m.payload.name, lamp.name);
    }
    const done = out.find((m) => m.complete)!;
    assert.deepEqual(done.coap.errors, []);
    const spy = helper.log();
    assertNoSecret([out, statuses, spy ? spy.getCalls().map((x: { args: unknown[] }) => x.args) : []], secretsOf(material));
  });

  it('a member signing with a key that does not match its listed credential gets nothing back: every lamp refuses the request on its signature (RFC 10021 §8.2)', async function () {
    const c = member(material, 'g26', '26', serverIds(3));
    // Its own key pair, consistent in itself (RFC 10021 §2: a private key must match the own credential), while the
    // lamps know 0x26 by the credential the group lists for it.
    const forged = generateGroupKeyPair({ signatureAlg: material.signatureAlg });
    c.node.credential = hex(forged.credential);
    c.credentials.privateKey = hex(forged.privateKey);
    const flow = [c.node, { id: 'req', type: 'coap-group-request', url: `coap://${GROUP_V4}:${port}/light`, method: 'GET', timeout: 1, groupOscore: 'g26', wires: [['out']] }, { id: 'out', type: 'helper' }];
    await helper.load([groupContextNode, requestNode], flow, { g26: c.credentials });
    const out = collect('out');
    const refused = lamps.map((l) => l.refused.length);
    helper.getNode('req').receive({ payload: '' });
    await waitFor(() => out.some((m) => m.complete), 'the completion message');
    assert.equal(out.filter((m) => !m.complete).length, 0);
    // the lamps refused it on the signature (RFC 10021 §8.2), so no resource ran
    assert.ok(lamps.every((l, i) => l.refused.length === refused[i] + 1 && /Decryption failed|signature/i.test(l.refused.at(-1)!)));
  });

  it('a request node that names a context which does not exist (a flow deployed without it) refuses to send: an error and a red status at deploy, every input ends with an error a Catch node sees, and nothing reaches the lamps or the proxy', async function () {
    // a "proxy" that only counts what reaches it
    const proxy = dgram.createSocket('udp4');
    let atProxy = 0;
    proxy.on('message', () => atProxy++);
    await new Promise<void>((resolve) => proxy.bind(0, '127.0.0.1', resolve));
    try {
      const fields = ['groupOscore', 'oscoreEndToEnd', 'oscoreProxy'];
      const req = (field: string) => ({ id: field, z: 'f1', type: 'coap-group-request', url: `coap://${GROUP_V4}:${port}/light`, method: 'GET', timeout: 1, [field]: 'deleted-context', wires: [['out']] });
      const flow = [{ id: 'f1', type: 'tab' }, ...fields.map(req), { id: 'catcher', z: 'f1', type: 'catch', scope: fields, uncaught: false, wires: [['caught']] }, { id: 'caught', z: 'f1', type: 'helper' }, { id: 'out', z: 'f1', type: 'helper' }];
      await helper.load([groupContextNode, requestNode], flow);
      const caught = collect('caught');
      const out = collect('out');
      const received = () => lamps.map((l) => l.server.endpoint.transport.counters.received);
      const before = received();
      for (const field of fields) {
        const node = helper.getNode(field);
        assert.deepEqual(callsOf(node, 'error'), ['coap-group-request.errors.context-missing'], `${field}: said once at deploy`);
        assert.deepEqual(callsOf(node, 'status').at(-1), { fill: 'red', shape: 'ring', text: 'coap-group-request.status.context-missing' });
        node.receive({ payload: '', proxy: `coap://127.0.0.1:${proxy.address().port}` });
        node.receive({ payload: '' });
      }
      await waitFor(() => caught.length === 6, 'an error for every input');
      for (const m of caught) assert.match(m.error.message, /coap-group-request.errors.context-missing/);
      assert.deepEqual(caught.map((m) => m.error.source.id).sort(), [...fields, ...fields].sort());
      assert.deepEqual(out, []);
      assert.deepEqual(received(), before, 'no lamp received anything');
      assert.equal(atProxy, 0, 'nothing went to the proxy');
      for (const field of fields) assert.equal(callsOf(helper.getNode(field), 'status').at(-1).text, 'coap-group-request.status.context-missing');
    } finally {
      proxy.close();
    }
  });

  it('the key-pair button\'s admin endpoint returns a private key and its public credential (CCS) for EdDSA and ECDSA P-256, and refuses other algorithms', async function () {
    await helper.load([groupContextNode], [member(material, 'g25', '25', []).node], {});
    for (const alg of [-8, -7]) {
      const res = await helper.request().post('/coap-group-oscore-context/keypair').send({ signatureAlg: alg }).expect(200);
      assert.match(res.body.privateKey, /^[0-9a-f]{64}$/);
      const info = parseCcs(Buffer.from(res.body.credential, 'hex'));
      assert.equal(info.alg, alg);
      // the two belong together: what the private key signs, the credential's public key verifies
      const data = crypto.randomBytes(32);
      const signature = sign(alg, privateKeyObject(info, Buffer.from(res.body.privateKey, 'hex')), data);
      assert.ok(verify(alg, publicKeyObject(info), data, signature));
    }
    await helper.request().post('/coap-group-oscore-context/keypair').send({ signatureAlg: 99 }).expect(400);
  });

  it('coap-observe-multicast with Group OSCORE on both sides: protected notifications on the group, delivered after verification', async function () {
    const groupPort = await freeGroupPort('239.255.0.94');
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.70', () => r()));
    const srvPort = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    const sniffer = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    const onGroup: Buffer[] = [];
    sniffer.on('message', (m) => onGroup.push(m));
    await new Promise<void>((r) => sniffer.bind(groupPort, '239.255.0.94', () => r()));
    sniffer.addMembership('239.255.0.94', '127.0.0.1');
    try {
      const srv = member(material, 'gs', '5e', ['25']);
      const cli = member(material, 'gc', '25', ['5e']);
      const flow = [
        srv.node,
        cli.node,
        { id: 'srv', type: 'coap-observe-multicast', mode: 'server', address: '127.0.0.70', port: srvPort, path: '/alarm', group: '239.255.0.94', groupPort, threshold: 1, contentFormat: 'text/plain', minInterval: 0, initial: 'calm', groupOscore: 'gs', wires: [['events']] },
        { id: 'events', type: 'helper' },
        { id: 'cl', type: 'coap-observe-multicast', mode: 'client', uri: `coap://127.0.0.70:${srvPort}/alarm`, bindAddress: '127.0.0.1', autoStart: false, payloadMode: 'string', groupOscore: 'gc', wires: [['obs']] },
        { id: 'obs', type: 'helper' },
      ];
      await helper.load([groupContextNode, observeNode], flow, { gs: srv.credentials, gc: cli.credentials });
      const got = collect('obs');
      const events = collect('events');
      // the server node opens its socket asynchronously: register once it is serving
      helper.getNode('cl').receive({});
      await waitFor(() => events.some((m) => m.topic === 'registration') && got.length === 1, 'the registration and the first notification');
      assert.equal(got[0].payload, 'calm');
      assert.equal(got[0].coap.via, 'last_notif');
      helper.getNode('srv').receive({ payload: 'ALARM' });
      await waitFor(() => got.length === 2, 'the second notification');
      assert.equal(got[1].payload, 'ALARM');
      assert.equal(got[1].coap.via, 'multicast');
      const wire = decode(onGroup.at(-1)!);
      assert.ok(!wire.payload.includes(Buffer.from('ALARM')));
      assert.equal(decodeOscoreOption(getOption(wire, OPT.OSCORE)!).group, true);
      assertNoSecret([got, events], secretsOf(material));
    } finally {
      await new Promise<void>((r) => sniffer.close(() => r()));
    }
  });

  it('coap-oscore-layer with the group context: a request protected in group mode (and one in pairwise mode), a member\'s responses verified and attributed', async function () {
    const c = member(material, 'g26', '26', serverIds(3));
    const flow = [
      c.node,
      { id: 'pReq', type: 'coap-oscore-layer', groupContext: 'g26', role: 'protect-request', format: 'datagram', errors: 'throw', wires: [['reqOut']] },
      { id: 'uRes', type: 'coap-oscore-layer', groupContext: 'g26', role: 'unprotect-response', format: 'datagram', errors: 'throw', wires: [['resOut']] },
      { id: 'reqOut', type: 'helper' },
      { id: 'resOut', type: 'helper' },
    ];
    await helper.load([groupContextNode, layerNode], flow, { g26: c.credentials });
    const reqOut = collect('reqOut');
    const resOut = collect('resOut');
    const server = memberContext(material, 'a2');
    for (const [i, recipient] of [undefined, 'a2'].entries()) {
      const token = Buffer.from([0x61, i]);
      helper.getNode('pReq').receive({ payload: encode({ type: 'NON', code: CODES.GET, messageId: 10 + i, token, options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }), ...(recipient ? { oscoreOptions: { recipient } } : {}) });
      await waitFor(() => reqOut.length === i + 1, 'the protected request');
      const wire = decode(reqOut[i].payload);
      assert.equal(decodeOscoreOption(getOption(wire, OPT.OSCORE)!).group === true, recipient === undefined, 'group mode, or pairwise for one member');
      // the member 0xa2 verifies it and answers
      const v = unprotectRequest((kid, kidContext, groupFlag) => server.resolve(kid, kidContext, groupFlag), wire);
      assert.equal(v.message.options.find((o) => o.number === OPT.URI_PATH)!.value.toString(), 'light');
      const res = protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.from('on') });
      helper.getNode('uRes').receive({ payload: encode({ type: 'NON', messageId: 20 + i, token, ...res }) });
      await waitFor(() => resOut.length === i + 1, 'the protected response');
      assert.equal(decode(resOut[i].payload).payload.toString(), 'on');
      assert.equal(resOut[i].oscore.kid, 'a2');
      assert.equal(resOut[i].oscore.mode, recipient ? 'pairwise' : 'group');
    }
  });

  it('coap-group-proxy with a signature check: a protected request through it reaches every lamp, and a non-member\'s forged response never reaches the client', async function () {
    // a member 0x28 for this test (fresh sequence numbers), and a host claiming lamp 0xa1 with its own key
    const forger = await intruder('127.0.0.34', port, material, serverIds(3)[0], '28');
    try {
      const c = member(material, 'g28', '28', serverIds(3));
      const lampSide = member(material, 'ga1', serverIds(3)[0], ['28', ...serverIds(3).slice(1)]);
      const flow = [
        c.node,
        lampSide.node,
        { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: '127.0.0.1', signatureGroup: 'ga1', events: true, outputs: 1, wires: [['events']] },
        { id: 'events', type: 'helper' },
        { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', groupOscore: 'g28', wires: [['out']] },
        { id: 'out', type: 'helper' },
      ];
      await helper.load([groupContextNode, endpointNode, proxyNode, requestNode], flow, { g28: c.credentials, ga1: lampSide.credentials });
      const ep = await helper.getNode('pl').getEndpoint();
      const out = collect('out');
      const events = collect('events');
      helper.getNode('req').receive({ proxy: `coap://127.0.0.1:${ep.transport.address().port}` });
      await waitFor(() => out.some((m) => m.complete), 'the completion message');
      const responses = out.filter((m) => !m.complete);
      assert.deepEqual(responses.map((m) => m.coap.origin.oscore.kid).sort(), serverIds(3));
      // the forged response was dropped by the proxy, so the client had nothing to refuse
      assert.deepEqual(out.find((m) => m.complete)!.coap.errors, []);
      assert.ok(events.some((m) => m.topic === 'drop' && /signature check failed/.test(m.payload.reason) && m.payload.reason.includes('127.0.0.34')));
    } finally {
      await forger.close();
    }
  });

  it('a redeploy keeps the sequence number ahead (file) and saves every member\'s replay window', async function () {
    const c = member(material, 'g27', '27', serverIds(3));
    const flow = [c.node, { id: 'req', type: 'coap-group-request', url: `coap://${GROUP_V4}:${port}/light`, method: 'GET', timeout: 1, groupOscore: 'g27', wires: [['out']] }, { id: 'out', type: 'helper' }];
    const run = async () => {
      await helper.load([groupContextNode, requestNode], flow, { g27: c.credentials });
      const out = collect('out');
      helper.getNode('req').receive({ payload: '' });
      await waitFor(() => out.some((m) => m.complete), 'the completion message');
      const next = helper.getNode('g27').getContext().sequence.peek();
      await helper.unload();
      return { out, next };
    };
    const first = await run();
    assert.equal(first.out.filter((m) => !m.complete).length, 3);
    const saved = JSON.parse(fs.readFileSync(path.join(userDir, 'group-oscore-g27.replay.json'), 'utf8'));
    assert.deepEqual(Object.keys(saved.windows).sort(), serverIds(3));
    const ssn = fs.readFileSync(path.join(userDir, 'group-oscore-g27.ssn.json'), 'utf8');
    assert.ok(!ssn.includes(hex(material.masterSecret)));
    const second = await run();
    assert.equal(second.out.filter((m) => !m.complete).length, 3, 'the lamps accept the new Partial IVs: nothing is reused');
    assert.ok(second.next > first.next);
  });
});
