// Deterministic Requests (draft-ietf-core-cacheable-oscore-02) in a Node-RED runtime: two coap-group-oscore-context
// nodes of two members that name the group's Deterministic Client, two coap-group-request nodes with "Deterministic
// Requests" checked, through a coap-group-proxy node with its cache on and the group's members listed, to 3 Group
// OSCORE lamps on loopback multicast. The first request fans out and every response is verified and attributed; the
// second, from the other member, is answered from the proxy's cache: the lamps see nothing (groupcomm-proxy-07
// §7.4). A POST with Deterministic Requests ends with an error and sends nothing. And Node-RED as the servers:
// coap-group-server nodes whose group context has the checkbox answer Deterministic Requests.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GroupMaterial, GroupOscoreLamp, endNodeRedLampTests, groupMaterial, memberConfigNode, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, freeGroupPort } from '../support/lamps';
import { Status, callsOf } from '../support/flow';
import { nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupContextNode = require('../../nodes/coap-group-oscore-context');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const requestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const serverNode = require('../../nodes/coap-group-server');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const oscoreContextNode = require('../../nodes/coap-oscore-context');

helper.init(nodeRedRuntime());

type Msg = Record<string, any>;
const hex = (b: Buffer) => b.toString('hex');

/** The config node of member `id`, with the Deterministic Client 0xdc checked (or not). */
function member(g: GroupMaterial, nodeId: string, id: string, deterministic = true) {
  return memberConfigNode(g, nodeId, id, { peers: serverIds(3), sequenceStore: 'memory', fields: { deterministic, detSenderId: 'dc', detHashAlg: '-16' } });
}

/** Resolves with everything `id` received once `pred` holds (checked on every message: no polling, no sleep). */
function until(id: string, pred: (got: Msg[]) => boolean): Promise<Msg[]> {
  const got: Msg[] = [];
  return new Promise((resolve) => {
    helper.getNode(id).on('input', (m: Msg) => {
      got.push(m);
      if (pred(got)) resolve(got);
    });
  });
}

describe('nodes: Deterministic Requests through coap-group-proxy\'s cache (draft-ietf-core-cacheable-oscore-02, groupcomm-proxy-07 §7.4)', function () {
  this.timeout(20000);
  let root: string;
  let material: GroupMaterial;
  let port: number;
  let lamps: GroupOscoreLamp[];
  const seen = () => lamps.reduce((n, l) => n + l.seen.length + l.refused.length, 0);

  before(async function () {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'det-nodes-'));
    helper.settings({ userDir: root });
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', '26', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from('dc', 'hex') } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, firstHost: 80 });
  });
  afterEach(async function () {
    await helper.unload();
  });
  after(async function () {
    await endNodeRedLampTests(helper, lamps, root);
  });

  function flow() {
    const a = member(material, 'g25', '25');
    const b = member(material, 'g26', '26');
    const membersLine = `${GROUP_V4}:${port} = ${lamps.map((l) => `${l.address}:${l.server.address().port}`).join(', ')}`;
    const req = (id: string, ctx: string, method = 'GET') => ({ id, type: 'coap-group-request', endpoint: 'ce', method, url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', groupOscore: ctx, deterministic: true, wires: [['out']] });
    const nodes = [
      a.node,
      b.node,
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: '127.0.0.1', cache: true, members: membersLine, events: true, outputs: 1, wires: [['events']] },
      { id: 'events', type: 'helper' },
      { id: 'f1', type: 'tab' },
      req('reqA', 'g25'),
      req('reqB', 'g26'),
      req('reqPost', 'g25', 'POST'),
      { id: 'catcher', z: 'f1', type: 'catch', scope: ['reqPost'], uncaught: false, wires: [['caught']] },
      { id: 'caught', z: 'f1', type: 'helper' },
      { id: 'out', type: 'helper' },
    ];
    for (const n of nodes as Msg[]) if (n.type !== 'tab' && !n.z) n.z = 'f1';
    return { nodes, credentials: { g25: a.credentials, g26: b.credentials } };
  }

  async function proxyUri(): Promise<string> {
    const ep = await helper.getNode('pl').getEndpoint();
    return `coap://127.0.0.1:${ep.transport.address().port}`;
  }

  function assertAttributed(msgs: Msg[]): void {
    const responses = msgs.filter((m) => !m.complete);
    assert.equal(responses.length, 3);
    for (const m of responses) {
      const lamp = lamps.find((l) => l.address === m.coap.origin.address)!;
      assert.ok(lamp, `origin ${m.coap.origin.address}`);
      assert.deepEqual(m.coap.origin.oscore, { kid: lamp.kid, mode: 'group' });
      assert.equal(m.payload.name, lamp.name);
    }
    assert.deepEqual(msgs.find((m) => m.complete)!.coap.errors, []);
  }

  it('member 0x25 fans out once through the proxy; the same GET from member 0x26 is served from the proxy\'s cache, verified and attributed, and the lamps see nothing', async function () {
    const f = flow();
    await helper.load([groupContextNode, requestNode, endpointNode, proxyNode], f.nodes, f.credentials);
    const proxy = await proxyUri();
    const before = seen();
    let done = until('out', (got) => got.some((m) => m.complete));
    helper.getNode('reqA').receive({ proxy });
    assertAttributed(await done);
    assert.equal(seen() - before, 3, 'each lamp got the Deterministic Request once');

    const events = until('events', (got) => got.some((e) => e.topic === 'request' && /cache/.test(e.payload.reason ?? '')));
    done = until('out', (got) => got.some((m) => m.complete));
    helper.getNode('reqB').receive({ proxy });
    assertAttributed(await done);
    assert.equal(seen() - before, 3, 'the second request never reached the group');
    const ev = await events;
    assert.equal(ev.filter((e) => e.topic === 'request').pop()!.payload.reason, 'served from cache');
  });

  it('coap-group-server nodes with the Deterministic Client checked in their group context answer a Deterministic Request, each verified and attributed; without it they refuse it', async function () {
    // keys made in this process for a Gid of this test alone; every member knows every other (no secret in the flow)
    const gid = crypto.randomBytes(4).toString('hex');
    const ctx = (id: string, det: boolean) => ({ id: `c${id}-${det}`, type: 'coap-group-oscore-context', gid, senderId: id, provisioning: 'process', signatureAlg: '-8', sequenceStore: 'memory', deterministic: det, detSenderId: 'dc', detHashAlg: '-16' });
    const server = (n: number, ctxId: string) => ({ id: `s${n}`, type: 'coap-group-server', address: `127.0.0.${90 + n}`, port: 0, group: GROUP_V4, groupPort: port, multicastInterface: '127.0.0.1', path: '/light', leisure: 0.05, mode: 'state', contentFormat: 'application/json', initial: JSON.stringify({ name: `node-lamp-${n}` }), groupOscore: ctxId, wires: [[]] });
    const run = async (serverDet: boolean): Promise<Msg[]> => {
      const flow = [
        ctx('25', true),
        ctx('b1', serverDet),
        ctx('b2', serverDet),
        server(1, `cb1-${serverDet}`),
        server(2, `cb2-${serverDet}`),
        { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 1, payloadMode: 'auto', groupOscore: 'c25-true', deterministic: true, wires: [['out']] },
        { id: 'out', type: 'helper' },
      ];
      await helper.load([groupContextNode, requestNode, endpointNode, serverNode], flow);
      await Promise.all(['s1', 's2'].map((id) => helper.getNode(id).serverAddress()));
      const done = until('out', (got) => got.some((m) => m.complete));
      helper.getNode('req').receive({});
      const msgs = await done;
      await helper.unload();
      return msgs;
    };
    const msgs = await run(true);
    const responses = msgs.filter((m) => !m.complete);
    assert.deepEqual(responses.map((m) => m.payload.name).sort(), ['node-lamp-1', 'node-lamp-2']);
    assert.deepEqual(responses.map((m) => m.coap.origin.oscore).sort((a, b) => a.kid.localeCompare(b.kid)), [{ kid: 'b1', mode: 'group' }, { kid: 'b2', mode: 'group' }]);
    // servers whose context does not name the Deterministic Client do not know its kid: nothing is answered
    // (a group request gets no error responses, RFC 10021 §7)
    const refused = await run(false);
    assert.equal(refused.filter((m) => !m.complete).length, 0);
    assert.equal(refused.find((m) => m.complete)!.coap.outcome, 'no answer');
  });

  it('with "Revalidate with Group-ETag" and OSCORE to the proxy: the set the proxy serves from its cache is kept, and the next identical GET is answered by the proxy\'s 2.03 alone, the kept responses emitted again with msg.coap.revalidated (groupcomm-proxy-07 §7.3, §7.4)', async function () {
    const a = member(material, 'g25', '25');
    const secret = crypto.randomBytes(16).toString('hex');
    const membersLine = `${GROUP_V4}:${port} = ${lamps.map((l) => `${l.address}:${l.server.address().port}`).join(', ')}`;
    const nodes: Msg[] = [
      a.node,
      { id: 'cC', type: 'coap-oscore-context', senderId: 'c1', recipientId: '01', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
      { id: 'cP', type: 'coap-oscore-context', senderId: '01', recipientId: 'c1', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: 'kid:c1', oscoreContexts: ['cP'], cache: true, members: membersLine, events: true, outputs: 1, wires: [['events']] },
      { id: 'events', type: 'helper' },
      { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', groupOscore: 'g25', deterministic: true, oscoreProxy: 'cC', groupEtag: true, wires: [['out']] },
      { id: 'out', type: 'helper' },
      { id: 'f1', type: 'tab' },
    ];
    for (const n of nodes) if (n.type !== 'tab') n.z = 'f1';
    await helper.load([groupContextNode, requestNode, endpointNode, proxyNode, oscoreContextNode], nodes, { g25: a.credentials, cC: { masterSecret: secret }, cP: { masterSecret: secret } });
    const proxy = await proxyUri();
    const events: Msg[] = [];
    helper.getNode('events').on('input', (m: Msg) => events.push(m));
    const once = async () => {
      const done = until('out', (got) => got.some((m) => m.complete));
      helper.getNode('req').receive({ proxy });
      return done;
    };
    const before = seen();
    const miss = await once(); // fans out: J was not complete, no Group-ETag
    assertAttributed(miss);
    assert.ok(miss.every((m) => !m.coap.revalidated));
    const hit = await once(); // from the cache, every response with the set's Group-ETag: kept
    assertAttributed(hit);
    const tags = hit.filter((m) => !m.complete).map((m) => m.coap.options['Group-ETag']);
    assert.ok(tags[0] !== undefined && tags.every((t) => JSON.stringify(t) === JSON.stringify(tags[0])), `one Group-ETag on the hit: ${JSON.stringify(tags)}`);
    assert.ok(hit.every((m) => !m.coap.revalidated));
    const ev0 = events.length;
    const again = await once(); // the proxy's 2.03
    assertAttributed(again);
    const responses = again.filter((m) => !m.complete);
    assert.ok(responses.every((m) => m.coap.revalidated === true && m.coap.code === '2.05'), 'each kept response emitted again, marked revalidated');
    assert.deepEqual(responses.map((m) => m.coap.options['Group-ETag']), responses.map(() => tags[0]));
    const complete = again.find((m) => m.complete)!;
    assert.equal(complete.coap.revalidated, true);
    assert.equal(complete.coap.outcome, 'answered');
    assert.deepEqual(events.slice(ev0).filter((e) => e.topic === 'response').map((e) => e.payload.code), ['2.03'], 'the proxy sent a single 2.03');
    assert.equal(seen() - before, 3, 'only the first request reached the group');
    assert.ok(!JSON.stringify([...miss, ...hit, ...again, ...events]).includes(secret));
  });

  it('the group settings Inner Observe and Det. padding (draft §3.1, App. A) reach the core in every member; padded requests with an Inner Observe are answered by coap-group-server nodes that have them too', async function () {
    const gid = crypto.randomBytes(4).toString('hex');
    const ctx = (id: string) => ({ id: `p${id}`, type: 'coap-group-oscore-context', gid, senderId: id, provisioning: 'process', signatureAlg: '-8', sequenceStore: 'memory', deterministic: true, detSenderId: 'dc', detHashAlg: '-16', detInnerObserve: true, detPadding: '32' });
    const server = (n: number) => ({ id: `ps${n}`, type: 'coap-group-server', address: `127.0.0.${94 + n}`, port: 0, group: GROUP_V4, groupPort: port, multicastInterface: '127.0.0.1', path: '/light', leisure: 0.05, mode: 'state', contentFormat: 'application/json', initial: JSON.stringify({ name: `padded-lamp-${n}` }), groupOscore: `pb${n}`, wires: [[]] });
    const flow = [
      ctx('25'),
      ctx('b1'),
      ctx('b2'),
      server(1),
      server(2),
      { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 1, payloadMode: 'auto', groupOscore: 'p25', deterministic: true, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ];
    await helper.load([groupContextNode, requestNode, endpointNode, serverNode], flow);
    try {
      const det = helper.getNode('p25').getContext().deterministicClient;
      assert.deepEqual({ padding: det.padding, innerObserve: det.innerObserve }, { padding: 32, innerObserve: true });
      await Promise.all(['ps1', 'ps2'].map((id) => helper.getNode(id).serverAddress()));
      const done = until('out', (got) => got.some((m) => m.complete));
      helper.getNode('req').receive({});
      const responses = (await done).filter((m) => !m.complete);
      assert.deepEqual(responses.map((m) => m.payload.name).sort(), ['padded-lamp-1', 'padded-lamp-2']);
      assert.ok(responses.every((m) => m.coap.options.Observe === undefined), 'the Inner Observe is ignored by the client (§3.4.4 step 4)');
    } finally {
      await helper.unload();
    }
  });

  it('a POST with Deterministic Requests is refused before anything is sent: the input ends with an error a Catch node sees', async function () {
    const f = flow();
    await helper.load([groupContextNode, requestNode, endpointNode, proxyNode], f.nodes, f.credentials);
    const before = seen();
    const caught = until('caught', (got) => got.length >= 1);
    helper.getNode('reqPost').receive({ payload: 'on' });
    const [m] = await caught;
    assert.match(m.error.message, /Deterministic Request must be safe/);
    assert.equal(seen(), before);
  });

  it('"Deterministic Requests" checked without a Group OSCORE context warns at deploy and shows a yellow status; with one, neither', async function () {
    const f = flow();
    const plain = { id: 'reqPlain', z: 'f1', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, payloadMode: 'auto', deterministic: true, wires: [['out']] };
    await helper.load([groupContextNode, requestNode, endpointNode, proxyNode], [...f.nodes, plain], f.credentials);
    const warned = (id: string) => callsOf(helper.getNode(id), 'warn').filter((w: unknown) => w === 'coap-group-request.warn.deterministic-ignored').length;
    const flagged = (id: string) => callsOf(helper.getNode(id), 'status').filter((st: Status) => st.text === 'coap-group-request.status.deterministic-ignored');
    assert.equal(warned('reqPlain'), 1, 'one warning at deploy');
    assert.deepEqual(flagged('reqPlain'), [{ fill: 'yellow', shape: 'ring', text: 'coap-group-request.status.deterministic-ignored' }]);
    assert.equal(warned('reqA'), 0);
    assert.deepEqual(flagged('reqA'), []);
  });
});
