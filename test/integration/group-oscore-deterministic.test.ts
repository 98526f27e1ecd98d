// Cacheable protected group exchanges (groupcomm-proxy-07 §7.4) with Deterministic Requests (draft-ietf-core-
// cacheable-oscore-02 §3), on real sockets and loopback multicast: members of a Group OSCORE group send a safe GET as
// the group's Deterministic Client to 5 servers (127.0.0.2-6), directly and through the group proxy with the
// client-proxy OSCORE layer outside (oscore-capable-proxies-07 §2.3). Every response is verified with its server's
// credential and attributed (§3.4.5); the same GET again, from another member, is answered from the proxy's cache
// (groupcomm-proxy-07 §7.1, §7.3) without a datagram to the group; the proxy never holds the plaintext (checked on
// the wire with tshark).

import assert from 'node:assert/strict';
import { decode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT, decodeUint, optionNumber } from '../../src/coap/options';
import { GroupClient } from '../../src/group/group-client';
import { GroupContext, REQUEST_HASH_OPTION, decodeOscoreOption } from '../../src/oscore';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { GroupOscoreLamp, GroupMaterial, OscoreGroupProxy, groupMaterial, memberContext, openOscoreGroupProxy, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { CapturedDatagram, WireCapture, captureUnavailable } from '../support/wire-capture';

const DET_ID = 'dc';

const oscoreFields = (m: CoapMessage) => decodeOscoreOption(getOption(m, OPT.OSCORE)!);

/** Words of this exchange's plaintext: the path and the lamps' bodies. */
const PLAINTEXT = ['light', 'lamp-', '"name"', '"on"'];

describe('Deterministic Requests: cacheable Group OSCORE exchanges through the group proxy (draft-ietf-core-cacheable-oscore-02, groupcomm-proxy-07 §7.4)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let memberA: GroupContext;
  let memberB: GroupContext;
  let rig: OscoreGroupProxy; // the client, the proxy and its endpoints
  const proxyAddr = () => rig.listen.transport.address();
  const group = (p = '/light') => `coap://${GROUP_V4}:${port}${p}`;
  const seenByLamps = () => lamps.reduce((n, l) => n + l.seen.length + l.refused.length, 0);

  before(async function () {
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', '26', ...serverIds(5)]), deterministicClient: { senderId: Buffer.from(DET_ID, 'hex') } };
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material });
    memberA = memberContext(material, '25');
    memberB = memberContext(material, '26');
    // The proxy knows the group's members, so it can answer from its cache alone (groupcomm-proxy-07 §7.1).
    rig = await openOscoreGroupProxy({ cache: true, members: { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) } });
  });

  after(async function () {
    await rig?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  const viaProxy = (member: GroupContext, timeout = 1500) =>
    requestViaProxy(rig.client, { proxy: proxyAddr(), uri: group(), multicastTimeout: 1, timeout, oscore: { proxy: rig.alice.client, endToEnd: { context: member.deterministicRequests() } } });

  function assertAttributed(responses: { message: CoapMessage; origin: { address: string; oscore?: { kid: string; mode: string } } }[]): void {
    assert.equal(responses.length, 5);
    assert.deepEqual(new Set(responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
    for (const r of responses) {
      const lamp = lamps.find((l) => l.address === r.origin.address)!;
      // §3.4.4 step 4: group mode, verified with the credential of the member the address belongs to
      assert.deepEqual(r.origin.oscore, { kid: lamp.kid, mode: 'group' });
      assert.equal(codeToString(r.message.code), '2.05');
      assert.equal(JSON.parse(r.message.payload.toString()).name, lamp.name);
      assert.equal(getOption(r.message, OPT.OSCORE), undefined);
      assert.equal(getOption(r.message, REQUEST_HASH_OPTION), undefined);
    }
  }

  it('direct (no proxy): one Deterministic Request to the group, five responses in group mode, each verified with its server\'s credential and attributed (§3.4.5)', async function () {
    const before = lamps.map((l) => l.seen.length);
    const ex = new GroupClient(rig.client).request({ uri: group(), timeout: 1000, oscore: { context: memberA.deterministicRequests() } });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.rejected, 0);
    assertAttributed(ex.responses);
    // each server got the plain GET (§3.4.3) once
    assert.deepEqual(lamps.map((l, i) => l.seen.length - before[i]), [1, 1, 1, 1, 1]);
    assert.ok(lamps.every((l) => l.seen[l.seen.length - 1].code === CODES.GET && l.seen[l.seen.length - 1].path === '/light'));
  });

  it('through the proxy: the first GET fans out and is cached; the same GET from another member is served from the cache alone (no datagram to the group), every response verified and attributed', async function () {
    rig.proxy.cache!.clear();
    const lampsBefore = seenByLamps();
    const first = viaProxy(memberA);
    const s1 = await first.summary;
    assert.deepEqual(s1.errors, []);
    assertAttributed(first.responses);
    assert.equal(seenByLamps() - lampsBefore, 5, 'the first request reached the five servers');
    assert.equal(rig.proxy.cache!.count, 5, 'one cache entry per server (groupcomm-proxy-07 §7)');

    const sentUpstream = rig.upstream.transport.counters.sent;
    const relayed = rig.proxy.counters.relayed;
    const second = viaProxy(memberB);
    const s2 = await second.summary;
    assert.deepEqual(s2.errors, []);
    assert.equal(second.rejected, 0);
    assertAttributed(second.responses);
    // nothing reached the group: the servers saw nothing and the proxy's upstream socket sent nothing; the five
    // responses the client got were the proxy's cached copies
    assert.equal(seenByLamps() - lampsBefore, 5);
    assert.equal(rig.upstream.transport.counters.sent, sentUpstream);
    assert.equal(rig.proxy.counters.relayed - relayed, 5);
    // groupcomm-proxy-07 §7.3: served from a complete set J, each response with the one Group-ETag of that set
    const tags = second.responses.map((r) => getOption(r.message, optionNumber('Group-ETag'))?.toString('hex'));
    assert.ok(tags[0] !== undefined && tags.every((t) => t === tags[0]), `Group-ETag on every cached response: ${tags.join(',')}`);
  });

  it('on the wire (tshark on lo): one FETCH to the group (pairwise, the Deterministic Client\'s kid, Request-Hash), responses with outer 2.05 and Max-Age, and no plaintext in any datagram of the proxy, for a miss and a hit', async function () {
    const unavailable = captureUnavailable();
    if (unavailable) this.skip();
    rig.proxy.cache!.clear();
    const ports = [rig.client.transport.address().port, proxyAddr().port, rig.upstream.transport.address().port, port, ...lamps.map((l) => l.server.address().port)];
    const wire = await WireCapture.start([...new Set(ports)]);
    let captured: CapturedDatagram[];
    try {
      const a = viaProxy(memberA);
      assert.deepEqual((await a.summary).errors, []);
      assertAttributed(a.responses);
      const b = viaProxy(memberB);
      assert.deepEqual((await b.summary).errors, []);
      assertAttributed(b.responses);
    } finally {
      captured = await wire.stop();
    }
    const up = rig.upstream.transport.address().port;
    const proxyTraffic = captured.filter((d) => [d.srcPort, d.dstPort].some((p) => p === proxyAddr().port || p === up));
    assert.ok(proxyTraffic.length >= 2 * (1 + 5) + 1 + 5, `captured ${proxyTraffic.length} datagrams of the proxy`);
    for (const d of proxyTraffic) {
      const word = PLAINTEXT.find((w) => d.payload.includes(Buffer.from(w)));
      assert.equal(word, undefined, `plaintext "${word}" in ${d.src}:${d.srcPort} -> ${d.dst}:${d.dstPort}`);
    }
    const toGroup = captured.filter((d) => d.dst === GROUP_V4 && d.dstPort === port).map((d) => decode(d.payload));
    assert.equal(toGroup.length, 1, 'only the miss went to the group');
    const f = oscoreFields(toGroup[0]);
    assert.equal(toGroup[0].code, CODES.FETCH, '§3.4.2 step 8: outer FETCH');
    assert.notEqual(f.group, true, 'pairwise mode (no Group Flag)');
    assert.equal(f.kid!.toString('hex'), DET_ID);
    assert.equal(f.piv!.toString('hex'), '00');
    assert.ok(f.kidContext!.equals(material.gid));
    assert.equal(getOption(toGroup[0], REQUEST_HASH_OPTION)!.length, 32);
    const fromLamps = captured.filter((d) => d.dstPort === up && lamps.some((l) => l.address === d.src)).map((d) => decode(d.payload));
    assert.equal(fromLamps.length, 5);
    for (const m of fromLamps) {
      assert.equal(m.code, CODES.CONTENT, '§3.4.4 step 6: outer 2.05');
      assert.equal(decodeUint(getOption(m, OPT.MAX_AGE)!), 60, '§3.4.4 step 9: outer Max-Age (default 60)');
      assert.equal(oscoreFields(m).group, true);
      assert.equal(getOption(m, REQUEST_HASH_OPTION), undefined, '§3.4.4 step 7: Request-Hash elided');
    }
  });
});
