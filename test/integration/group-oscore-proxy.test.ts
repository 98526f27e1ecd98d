// Group OSCORE (RFC 10021) end to end through a group proxy, on real sockets and loopback multicast: the client
// protects one GET in group mode for 5 servers (127.0.0.2-6); the client-proxy OSCORE layer (RFC 8613) sits outside
// it (oscore-capable-proxies-07 §2.3); every server's response (group mode, and pairwise mode for one of them, RFC
// 10021 §9.5 of -28) is verified with that server's credential and attributed to it (RFC 10021 §8.4, groupcomm-
// proxy-07 §5.5); what crosses lo is captured with tshark and must carry no plaintext (groupcomm-proxy-07 §4 REQ3,
// §10). Hosts that are not members answer too: their responses are relayed by the proxy and dropped by the client.
// Also the direct case (no proxy), and the counts of what was refused.

import assert from 'node:assert/strict';
import { decode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupClient } from '../../src/group/group-client';
import { GroupContext, SignatureChecker, decodeOscoreOption } from '../../src/oscore';
import { GroupProxy } from '../../src/proxy/group-proxy';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { GroupOscoreLamp, GroupMaterial, OscoreGroupProxy, endpointOn, forgerContext, groupMaterial, intruder as intruderFor, memberContext, openOscoreGroupProxy, serverIds, startGroupOscoreLamps } from '../support/group-oscore';

const intruder = (address: string, groupPort: number, g: GroupMaterial, kid: string) => intruderFor(address, groupPort, g, kid, CLIENT);
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { CapturedDatagram, WireCapture, captureUnavailable } from '../support/wire-capture';

const CLIENT = '25';

function oscoreFields(m: CoapMessage) {
  const v = getOption(m, OPT.OSCORE);
  return v === undefined ? undefined : decodeOscoreOption(v);
}

/** Words that appear in the plaintext of this exchange: the path, the lamps' bodies. */
const PLAINTEXT = ['light', 'lamp-', '"name"', '"on"'];

function plaintextIn(d: CapturedDatagram): string | undefined {
  return PLAINTEXT.find((w) => d.payload.includes(Buffer.from(w)));
}

describe('Group OSCORE end to end through the group proxy (RFC 10021, oscore-capable-proxies-07, groupcomm-proxy-07 §5.5)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let clientGroup: GroupContext;
  let rig: OscoreGroupProxy; // the client, the proxy and its endpoints
  const proxyAddr = () => rig.listen.transport.address();
  const group = (p = '/light') => `coap://${GROUP_V4}:${port}${p}`;

  before(async function () {
    port = await freeGroupPort();
    material = groupMaterial([CLIENT, '26', ...serverIds(5)]);
    // lamp-5 (0xa5) answers the group-mode request in pairwise mode.
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material, pairwise: [4] });
    clientGroup = memberContext(material, CLIENT);
    rig = await openOscoreGroupProxy();
  });

  after(async function () {
    await rig?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  const viaProxy = (timeout = 1500) =>
    requestViaProxy(rig.client, { proxy: proxyAddr(), uri: group(), multicastTimeout: 1, timeout, oscore: { proxy: rig.alice.client, endToEnd: { context: clientGroup.groupRequests() } } });

  function assertAttributed(responses: { message: CoapMessage; origin: { address: string; oscore?: { kid: string; mode: string } } }[]): void {
    assert.equal(responses.length, 5);
    assert.deepEqual(new Set(responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
    for (const r of responses) {
      const lamp = lamps.find((l) => l.address === r.origin.address)!;
      // verified with the credential of the member that its address belongs to, in the mode it chose
      assert.deepEqual(r.origin.oscore, { kid: lamp.kid, mode: lamp === lamps[4] ? 'pairwise' : 'group' });
      assert.equal(codeToString(r.message.code), '2.05');
      assert.equal(JSON.parse(r.message.payload.toString()).name, lamp.name);
      assert.equal(getOption(r.message, OPT.OSCORE), undefined);
    }
  }

  it('direct (no proxy): one group-mode request, five responses, each verified with its server\'s credential and attributed', async function () {
    const ex = new GroupClient(rig.client).request({ uri: group(), timeout: 1000, oscore: { context: clientGroup.groupRequests() } });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.rejected, 0);
    assertAttributed(ex.responses);
    assert.ok(lamps.every((l) => l.seen.some((x) => x.code === CODES.GET && x.path === '/light')));
  });

  it('through the proxy: every response verified and attributed; on the wire (tshark on lo) the group request is one group-mode OSCORE message and nothing carries plaintext', async function () {
    const unavailable = captureUnavailable();
    if (unavailable) this.skip();
    const ports = [rig.client.transport.address().port, proxyAddr().port, rig.upstream.transport.address().port, port, ...lamps.map((l) => l.server.address().port)];
    const wire = await WireCapture.start([...new Set(ports)]);
    let captured: CapturedDatagram[];
    let ex;
    try {
      ex = viaProxy();
      const s = await ex.summary;
      assert.deepEqual(s.errors, []);
    } finally {
      captured = await wire.stop();
    }
    assertAttributed(ex.responses);
    assert.equal(ex.rejected, 0);
    const up = rig.upstream.transport.address().port;
    // The proxy's traffic: client <-> proxy, proxy <-> group and servers.
    const proxyTraffic = captured.filter((d) => d.srcPort === proxyAddr().port || d.dstPort === proxyAddr().port || d.srcPort === up || d.dstPort === up);
    assert.ok(proxyTraffic.length >= 1 + 5 + 1 + 5, `captured ${proxyTraffic.length} datagrams of the proxy`);
    for (const d of proxyTraffic) assert.equal(plaintextIn(d), undefined, `plaintext "${plaintextIn(d)}" in ${d.src}:${d.srcPort} -> ${d.dst}:${d.dstPort}`);
    // The one request to the group: group mode (Group Flag), the Gid as kid context, the client's Sender ID as kid.
    const toGroup = captured.filter((d) => d.dst === GROUP_V4 && d.dstPort === port).map((d) => decode(d.payload));
    assert.equal(toGroup.length, 1);
    const f = oscoreFields(toGroup[0])!;
    assert.equal(f.group, true);
    assert.ok(f.kidContext!.equals(material.gid));
    assert.equal(f.kid!.toString('hex'), CLIENT);
    assert.equal(toGroup[0].code, CODES.POST, 'outer code POST (RFC 8613 §4.2)');
    assert.ok(!toGroup[0].options.some((o) => o.number === OPT.URI_PATH), 'the path is inside the ciphertext');
    // The servers' responses to the proxy: each names its server by kid; the Group Flag tells the mode.
    const fromLamps = captured.filter((d) => d.dstPort === up && lamps.some((l) => l.address === d.src)).map((d) => ({ d, m: decode(d.payload) }));
    assert.equal(fromLamps.length, 5);
    for (const { d, m } of fromLamps) {
      const lamp = lamps.find((l) => l.address === d.src)!;
      const rf = oscoreFields(m)!;
      assert.equal(rf.kid!.toString('hex'), lamp.kid);
      assert.equal(rf.group === true, lamp !== lamps[4]);
      assert.equal(m.code, CODES.CHANGED, 'outer code 2.04');
    }
    // What the client received: only the proxy's layer is visible (one OSCORE option), its kid absent (RFC 8613).
    const toClient = captured.filter((d) => d.dstPort === rig.client.transport.address().port && d.srcPort === proxyAddr().port).map((d) => decode(d.payload)).filter((m) => m.code !== 0);
    assert.equal(toClient.length, 5);
    assert.ok(toClient.every((m) => m.options.length === 1 && m.options[0].number === OPT.OSCORE && oscoreFields(m)!.group !== true));
  });

  it('hosts that are not members answer too: the proxy relays them, the client verifies nothing from them, drops and counts them', async function () {
    // 127.0.0.30 claims lamp-1's Sender ID but signs with its own key; 127.0.0.31 uses a Sender ID nobody knows.
    const impostor = await intruder('127.0.0.30', port, material, lamps[0].kid);
    const stranger = await intruder('127.0.0.31', port, material, 'e9');
    try {
      const relayedBefore = rig.proxy.counters.relayed;
      const ex = viaProxy(1800);
      const s = await ex.summary;
      assert.equal(rig.proxy.counters.relayed - relayedBefore, 7, 'the proxy cannot tell: it relays all seven');
      assertAttributed(ex.responses);
      assert.equal(ex.rejected, 2);
      const byOrigin = new Map(s.errors.map((e) => [e.origin, e]));
      assert.equal(s.errors.length, 2);
      // refused on its signature, or (when lamp-1's own answer came first) already as a second response without
      // Partial IV from 0xa1 (RFC 10021 §5.1 of -28: one Response Number per server): dropped either way
      assert.match(byOrigin.get(`coap://127.0.0.30:${impostor.address().port}`)!.error, /signature|second response without Partial IV/);
      assert.equal(byOrigin.get(`coap://127.0.0.30:${impostor.address().port}`)!.code, 'oscore');
      assert.match(byOrigin.get(`coap://127.0.0.31:${stranger.address().port}`)!.error, /Recipient ID|kid/);
      // and directly, without the proxy, the same
      const direct = new GroupClient(rig.client).request({ uri: group(), timeout: 1000, oscore: { context: clientGroup.groupRequests() } });
      await direct.summary;
      assertAttributed(direct.responses);
      assert.equal(direct.rejected, 2);
    } finally {
      await stopAll(impostor, stranger);
    }
  });

  it('the proxy as external signature checker (RFC 10021 §7.5): a genuine request is fanned out and the non-members\' responses to it are not relayed; a forged request is answered 4.00 and never reaches the group', async function () {
    const cl = await endpointOn('127.0.0.1');
    const cu = await endpointOn('127.0.0.1');
    const impostor = await intruder('127.0.0.32', port, material, lamps[0].kid);
    const stranger = await intruder('127.0.0.33', port, material, 'e9');
    // The checker holds the Signature Encryption Key and the members' credentials (here taken from one member's
    // context): it can verify countersignatures, not decrypt.
    const checking = new GroupProxy({ listen: cl, upstream: cu, allow: [{ address: '*' }], signatureCheckers: [SignatureChecker.forGroup(memberContext(material, lamps[0].kid))] });
    try {
      const send = (ctx: GroupContext) => requestViaProxy(rig.client, { proxy: cl.transport.address(), uri: group(), multicastTimeout: 1, timeout: 1500, oscore: { endToEnd: { context: ctx.groupRequests() } } });
      const genuine = send(clientGroup);
      const gs = await genuine.summary;
      assertAttributed(genuine.responses);
      // the two forged responses stopped at the proxy: the client had nothing to drop
      assert.equal(genuine.rejected, 0);
      assert.deepEqual(gs.errors, []);
      assert.equal(checking.counters.signatureRejected, 2);
      assert.equal(checking.counters.relayed, 5);
      assert.equal(checking.counters.groupRequests, 1);
      // 0x26 signs with a key that is not the one its listed credential names: the signature cannot verify. The
      // forger's context is consistent in itself (its own new key pair: RFC 10021 §2 refuses a private key that does
      // not match the own credential), while the group and the checker know 0x26 by its listed credential.
      const forger = forgerContext(material, '26', lamps.map((l) => l.kid));
      const sentUpstream = cu.transport.counters.sent;
      const forged = send(forger);
      const s = await forged.summary;
      assert.equal(forged.responses.length, 0);
      assert.deepEqual(forged.proxyErrors.map((e) => [e.code, e.message]), [['4.00', 'Group OSCORE signature check failed']]);
      assert.equal(s.errors[0].code, '4.00');
      assert.equal(checking.counters.signatureRejected, 3);
      assert.equal(checking.counters.groupRequests, 1);
      // the proxy decided before fanning out: its upstream socket sent nothing for the forged request
      assert.equal(cu.transport.counters.sent, sentUpstream);
    } finally {
      await checking.close();
      await stopAll(cl, cu, impostor, stranger);
    }
  });
});
