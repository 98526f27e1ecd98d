// An observer of a Deterministic Request proves its address with Echo before a server registers it
// (draft-ietf-core-cacheable-oscore §3.1 keeps the Outer Echo for this; RFC 9175 §2.4 item 3), on real sockets and
// loopback multicast with 3 Group OSCORE servers (127.0.0.12-14): a registration replayed from an address that never
// asked (a raw socket on 127.0.0.30 stands for the spoofed source) registers nothing and gets only an unprotected
// 4.01 + Echo, never a notification; our group client answers the challenge and observes as before.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { decode, encode } from '../../src/coap/codec';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupClient, GroupResponse } from '../../src/group/group-client';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupContext, protectRequest } from '../../src/oscore';
import { GroupOscoreLamp, endpointOn, groupMaterial, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, RawProbe, freeGroupPort, rawProbe, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

describe('Observers of a Deterministic Request prove their address with Echo before they are registered (draft-ietf-core-cacheable-oscore §3.1, RFC 9175 §2.4)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: GroupOscoreLamp[];
  let member: GroupContext;
  let victim: RawProbe;
  let client: CoapEndpoint;
  const light = [{ number: OPT.URI_PATH, value: Buffer.from('light') }];
  const observers = () => lamps.map((l) => l.server.observerCount('/light'));
  /** Our group client observes /light with the Deterministic Request; every response lands in `heard`. */
  const observe = (ep: CoapEndpoint) => {
    const ex = new GroupClient(ep).request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 5000, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }], oscore: { context: member.deterministicRequests() } });
    const heard: GroupResponse[] = [];
    ex.on('response', (r: GroupResponse) => heard.push(r));
    return { ex, heard };
  };
  /** Every lamp turns off and notifies; resolves once `heard` holds a registration answer and a notification of each. */
  const changeAll = async (heard: GroupResponse[]) => {
    for (const l of lamps) {
      l.on = false;
      l.server.notify('/light');
    }
    await waitFor(() => heard.length >= 6, 'a notification from each server');
  };
  const challenges = () => lamps.map((l) => l.server.counters.echoChallenges);

  before(async function () {
    port = await freeGroupPort();
    const material = { ...groupMaterial(['25', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from('dc', 'hex'), innerObserve: true } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true, firstHost: 12 });
    member = memberContext(material, '25');
    victim = await rawProbe('127.0.0.30', { multicast: true });
    client = await endpointOn('127.0.0.1');
  });

  after(async function () {
    await stopAll(client, victim, lamps.map((l) => l.server));
  });

  it('a registration replayed from an unverified address registers nothing: each server answers it with an unprotected 4.01 + Echo, smaller than the request, and no notification ever goes there', async function () {
    // the registration as an eavesdropper saw it on the wire (Inner and Outer Observe 0, §3.1), sent again from the
    // victim's address: once to the group, once to the first server alone
    const reg = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...light], payload: Buffer.alloc(0) });
    const token = Buffer.from('5eed0001', 'hex');
    const bytes = encode(createMessage({ type: 'NON', token, messageId: 0x1234, ...reg.message }));
    victim.send(bytes, { address: GROUP_V4, port });
    victim.send(encode(createMessage({ type: 'NON', token, messageId: 0x1235, ...reg.message })), { address: lamps[0].address, port: lamps[0].server.address().port });
    await waitFor(() => victim.replies.length >= 4, 'an answer to each replay');
    for (const d of victim.replies) {
      const m = decode(d);
      assert.equal(m.code, CODES.UNAUTHORIZED);
      assert.equal(getOption(m, OPT.OSCORE), undefined, 'the Outer Echo of §3.1: unprotected');
      assert.equal(getOption(m, OPT.ECHO)?.length, 12);
      assert.equal(getOption(m, OPT.OBSERVE), undefined);
      assert.ok(m.token.equals(token));
      assert.ok(d.length < bytes.length, `no amplification: ${d.length} bytes for ${bytes.length}`);
    }
    assert.deepEqual(challenges(), [2, 1, 1]);
    assert.deepEqual(observers(), [0, 0, 0], 'nothing registered');
    assert.deepEqual(lamps.map((l) => l.seen.length), [0, 0, 0], 'the resource handler never ran');

    // an Echo value issued to another address proves nothing for this one
    const other = lamps[0];
    const elsewhere = other.server['observerEcho']!.challenge({ address: '127.0.0.1', port: 5683 });
    victim.send(encode(createMessage({ type: 'NON', token, messageId: 0x1236, ...reg.message, options: [...reg.message.options, { number: OPT.ECHO, value: elsewhere }].sort((a, b) => a.number - b.number) })), { address: other.address, port: other.server.address().port });
    await waitFor(() => victim.replies.length >= 5, 'the answer to the replay with a foreign Echo');
    assert.equal(decode(victim.replies[4]).code, CODES.UNAUTHORIZED);
    assert.deepEqual(observers(), [0, 0, 0], 'still nothing registered');

    // a verified observer (our group client) registers and gets a change; the victim's address gets nothing of it
    const { ex, heard } = observe(client);
    try {
      await waitFor(() => heard.length >= 3, 'the verified observer\'s registrations answered');
      await changeAll(heard);
    } finally {
      ex.cancel();
      for (const l of lamps) l.on = undefined;
    }
    assert.equal(victim.replies.length, 5, 'only the challenges ever went to the victim');
    assert.deepEqual(lamps.map((l) => l.server.takeObservers('/light').map((o) => o.remote.address)), [['127.0.0.1'], ['127.0.0.1'], ['127.0.0.1']], 'only the verified observer was registered');
  });

  it('our group client answers each server\'s challenge with the Echo, to that server alone on the same token, and receives every notification, verified and attributed', async function () {
    const fresh = await endpointOn('127.0.0.1');
    const before = challenges();
    const { ex, heard } = observe(fresh);
    try {
      await waitFor(() => heard.length >= 3, 'each server\'s first notification');
      assert.deepEqual(challenges().map((n, i) => n - before[i]), [1, 1, 1], 'each server challenged the new address once');
      assert.deepEqual(observers(), [1, 1, 1]);
      await changeAll(heard);
    } finally {
      ex.cancel();
      for (const l of lamps) {
        l.on = undefined;
        l.server.takeObservers('/light');
      }
      await fresh.close();
    }
    const summary = await ex.summary;
    assert.deepEqual(summary.errors, [], 'no response refused: the challenges were answered, not delivered');
    assert.deepEqual(heard.map((r) => r.origin.oscore?.kid).sort(), [...lamps.map((l) => l.kid), ...lamps.map((l) => l.kid)].sort());
    assert.deepEqual(heard.slice(3).map((r) => JSON.parse(r.message.payload.toString()).on), [false, false, false]);
  });
});
