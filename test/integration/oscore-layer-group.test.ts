// coap-oscore-layer with a Group OSCORE context (RFC 10021) in a real Node-RED runtime: one group-mode request
// protected by a client layer node, verified by two server layer nodes (two members), answered in group mode and in
// pairwise mode (§8), both responses verified by the client's layer node and attributed to their senders. The
// context config node here is a test harness around a real GroupContext: the Group OSCORE config node of the
// product is another stream's; the layer only needs the source interface of nodes/lib/oscore-source.ts.

import assert from 'node:assert/strict';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupContext, decodeOscoreOption, generateGroupKeyPair } from '../../src/oscore';
import { OscoreExchanges } from '../../nodes/lib/oscore-exchanges';
import type { OscoreLayerSource } from '../../nodes/lib/oscore-source';

import { nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const layerNode = require('../../nodes/coap-oscore-layer');

helper.init(nodeRedRuntime());

type Msg = Record<string, any>;
const h = (x: string): Buffer => Buffer.from(x, 'hex');

const IDS = ['c1', '51', '52'];
const KEYS = IDS.map((id) => ({ id: h(id), ...generateGroupKeyPair() }));
const SECRET = generateGroupKeyPair().privateKey.subarray(0, 16);

function groupFor(index: number): GroupContext {
  const me = KEYS[index];
  return new GroupContext({
    masterSecret: SECRET,
    idContext: h('9a11'),
    senderId: me.id,
    privateKey: me.privateKey,
    credential: me.credential,
    members: KEYS.filter((_, i) => i !== index).map((k) => ({ senderId: k.id, credential: k.credential })),
  });
}

/** Harness config node: a GroupContext behind the layer's source interface. */
function harness(RED: any): void {
  function TestGroupContext(this: any, def: any) {
    RED.nodes.createNode(this, def);
    const group = groupFor(Number(def.member));
    const source: OscoreLayerSource = {
      exchanges: new OscoreExchanges(),
      requestContext: (recipient?: Buffer) => (recipient ? group.peer(recipient, 'pairwise')! : group.groupRequests()),
      requestVerifier: () => (kid, kidContext, g) => group.resolve(kid, kidContext, g),
    };
    Object.assign(this, source);
  }
  RED.nodes.registerType('test-group-context', TestGroupContext);
}

function flow() {
  const layer = (id: string, context: string, role: string, wires: string[][]) => ({ id, z: 'f1', type: 'coap-oscore-layer', context, role, format: 'datagram', errors: 'throw', wires });
  return [
    { id: 'f1', type: 'tab', label: 'group' },
    ...[0, 1, 2].map((i) => ({ id: `g${i}`, type: 'test-group-context', member: String(i) })),
    layer('pReq', 'g0', 'protect-request', [['wire', 'uReq1', 'uReq2']]),
    layer('uReq1', 'g1', 'unprotect-request', [['srv1']]),
    layer('uReq2', 'g2', 'unprotect-request', [['srv2']]),
    layer('pRes1', 'g1', 'protect-response', [['uRes']]),
    layer('pRes2', 'g2', 'protect-response', [['uRes']]),
    layer('uRes', 'g0', 'unprotect-response', [['cli']]),
    { id: 'catcher', z: 'f1', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
    ...['wire', 'srv1', 'srv2', 'cli', 'caught'].map((id) => ({ id, z: 'f1', type: 'helper' })),
  ];
}

function nextMsgs(id: string, n: number, ms = 3000): Promise<Msg[]> {
  return new Promise((resolve, reject) => {
    const got: Msg[] = [];
    const node = helper.getNode(id);
    const t = setTimeout(() => {
      node.removeListener('input', on);
      reject(new Error(`${got.length} of ${n} messages at ${id} within ${ms} ms`));
    }, ms);
    const on = (m: Msg) => {
      got.push(m);
      if (got.length === n) {
        clearTimeout(t);
        node.removeListener('input', on);
        resolve(got);
      }
    };
    node.on('input', on);
  });
}

describe('nodes: coap-oscore-layer with a Group OSCORE context (RFC 10021)', function () {
  afterEach(async function () {
    await helper.unload();
  });

  it('one group-mode request verified by two members; one answers in group mode, one in pairwise mode; the client verifies and attributes both', async function () {
    await helper.load([layerNode, harness], flow());
    const req: CoapMessage = { type: 'NON', code: CODES.GET, messageId: 7, token: h('beef'), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) };
    const wire = nextMsgs('wire', 1);
    const atServers = Promise.all([nextMsgs('srv1', 1), nextMsgs('srv2', 1)]);
    helper.getNode('pReq').receive({ payload: encode(req) });
    const protectedReq = decode((await wire)[0].payload);
    const f = decodeOscoreOption(getOption(protectedReq, OPT.OSCORE)!);
    assert.equal(f.group, true, 'group mode on the wire');
    assert.deepEqual(f.kidContext, h('9a11'));
    const [[s1], [s2]] = await atServers;
    for (const s of [s1, s2]) {
      assert.equal(s.oscore.kid, 'c1');
      assert.equal(s.oscore.mode, 'group');
      assert.equal(decode(s.payload).code, CODES.GET);
    }
    const atClient = nextMsgs('cli', 2);
    const reply = (text: string): Buffer => encode({ type: 'NON', code: CODES.CONTENT, messageId: 9, token: h('beef'), options: [], payload: Buffer.from(text) });
    helper.getNode('pRes1').receive({ payload: reply('lamp 51: on') });
    helper.getNode('pRes2').receive({ payload: reply('lamp 52: on'), oscoreOptions: { mode: 'pairwise' } });
    const got = await atClient;
    const byKid = Object.fromEntries(got.map((m) => [m.oscore.kid, m]));
    assert.equal(decode(byKid['51'].payload).payload.toString(), 'lamp 51: on');
    assert.equal(byKid['51'].oscore.mode, 'group');
    assert.equal(decode(byKid['52'].payload).payload.toString(), 'lamp 52: on');
    assert.equal(byKid['52'].oscore.mode, 'pairwise');
  });

  it('a pairwise-mode request to one member (msg.oscoreOptions.recipient); the other member cannot verify it', async function () {
    await helper.load([layerNode, harness], flow());
    const req: CoapMessage = { type: 'CON', code: CODES.GET, messageId: 8, token: h('cafe'), options: [], payload: Buffer.alloc(0) };
    const ok = nextMsgs('srv1', 1);
    const caught = nextMsgs('caught', 1);
    helper.getNode('pReq').receive({ payload: encode(req), oscoreOptions: { recipient: '51' } });
    const [s1] = await ok;
    assert.equal(s1.oscore.mode, 'pairwise');
    const [err] = await caught;
    assert.equal(err.error.source.id, 'uReq2');
    assert.equal(err._error?.code ?? err.error.code, 'ERR_OSCORE_DECRYPT');
  });
});
