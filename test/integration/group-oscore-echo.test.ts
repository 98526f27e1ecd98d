// RFC 10021 §9 on real multicast (loopback): a group server whose replay windows were lost answers a group-mode
// request sent over multicast with the protected 4.01 + Echo (its own Partial IV), instead of suppressing it like
// other errors to group requests (groupcomm-bis §3.1.2); the client's unicast pairwise-mode retry with the Echo value
// is served and makes that member's window valid, after which group requests are served again. Other rejections
// (a forged countersignature) stay suppressed.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { GroupContext, decodeOscoreOption, generateGroupKeyPair, protectRequest, unprotectResponse } from '../../src/oscore';
import type { ClientBinding } from '../../src/oscore/binding';
import { oscoreServerTransform } from '../../src/oscore/nested';
import { GROUP_V4, freeGroupPort } from '../support/lamps';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
const GID = h('ec40');
const SECRET = h('102132435465768798a9bacbdcedfe0f');
const SERVER_ADDRESS = '127.0.0.2';

describe('Group OSCORE §9 Echo recovery through a group server on loopback multicast (RFC 10021)', function () {
  const kp = [generateGroupKeyPair(), generateGroupKeyPair()];
  const ids = [h('01'), h('11')];
  const context = (me: number, opts = {}) =>
    new GroupContext({ masterSecret: SECRET, idContext: GID, senderId: ids[me], privateKey: kp[me].privateKey, credential: kp[me].credential, members: [{ senderId: ids[1 - me], credential: kp[1 - me].credential }] }, opts);

  let server: GroupServer;
  let sock: dgram.Socket;
  let groupPort: number;
  const inbox: { msg: Buffer; from: dgram.RemoteInfo }[] = [];
  let waiting: (() => void) | undefined;
  let mid = 0x4000;

  before(async function () {
    groupPort = await freeGroupPort();
    // the server restarted without its replay windows: every member is challenged first
    server = await GroupServer.open({ address: SERVER_ADDRESS, port: 0, groups: [{ address: GROUP_V4, port: groupPort }], leisure: 0, requestTransform: oscoreServerTransform({ contexts: context(1, { replayWindowInitialized: false }) }) });
    server.addResource('/light', () => ({ code: CODES.CONTENT, payload: 'on' }));
    sock = dgram.createSocket('udp4');
    sock.on('error', () => undefined);
    sock.on('message', (msg, from) => {
      inbox.push({ msg, from });
      waiting?.();
    });
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    // network safety: multicast leaves through loopback only, TTL 1
    sock.setMulticastInterface('127.0.0.1');
    sock.setMulticastTTL(1);
    sock.setMulticastLoopback(true);
  });

  after(async function () {
    await new Promise<void>((r) => sock.close(() => r()));
    await server.close();
  });

  /** The next datagram to arrive (already arrived ones first). */
  const next = (): Promise<{ msg: CoapMessage; from: dgram.RemoteInfo }> =>
    new Promise((resolve) => {
      const take = () => {
        const d = inbox.shift();
        if (!d) return false;
        waiting = undefined;
        resolve({ msg: decode(d.msg), from: d.from });
        return true;
      };
      if (!take()) waiting = () => void take();
    });

  const send = (m: { code: number; options: CoapMessage['options']; payload: Buffer }, to: { address: string; port: number }, token: Buffer): void => {
    sock.send(encode({ type: 'NON', messageId: mid++, token, ...m } as CoapMessage), to.port, to.address);
  };

  const get = (extra: CoapMessage['options'] = []) => ({ code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }, ...extra], payload: Buffer.alloc(0) });

  it('the group-mode request over multicast gets the protected 4.01 + Echo; the unicast pairwise retry with it is served; then group requests are served', async function () {
    const client = context(0);
    const group = { address: GROUP_V4, port: groupPort };

    // 1. group-mode request to the group: the challenge comes back although the request was a group request
    const first = protectRequest(client.groupRequests(), get());
    send(first.message, group, h('e1'));
    const c = await next();
    assert.equal(c.from.address, SERVER_ADDRESS);
    const oscore = decodeOscoreOption(getOption(c.msg, OPT.OSCORE)!);
    assert.ok(oscore.piv, '§9: the server MUST include its own Partial IV');
    const challenge = unprotectResponse(first.binding, c.msg);
    assert.equal(challenge.message.code, CODES.UNAUTHORIZED);
    assert.equal(challenge.responder.recipientId.toString('hex'), '11');
    const echo = getOption(challenge.message, OPT.ECHO);
    assert.ok(echo && echo.length > 0, 'Echo option in the 4.01');
    assert.equal(challenge.message.payload.length, 0, '§9: no diagnostic payload');

    // 2. §9: the retry echoing the value is unicast and, the pairwise mode being set, in pairwise mode
    const retry = protectRequest(client.peer(ids[1], 'pairwise')!, get([{ number: OPT.ECHO, value: echo }]));
    send(retry.message, server.address(), h('e2'));
    const r = await next();
    const served = unprotectResponse(retry.binding, r.msg);
    assert.equal(served.message.code, CODES.CONTENT);
    assert.equal(served.message.payload.toString(), 'on');

    // 3. a forged group request is still dropped silently (§7 / groupcomm-bis §3.1.2) ...
    const suppressed = server.counters.suppressed;
    const forged = protectRequest(client.groupRequests(), get()).message;
    forged.payload[forged.payload.length - 1] ^= 1;
    send(forged, group, h('e3'));
    // ... and the next genuine group request is served: the first datagram back answers it, not the forged one
    const again = protectRequest(client.groupRequests(), get());
    send(again.message, group, h('e4'));
    const a = await next();
    assert.deepEqual(a.msg.token, h('e4'));
    const ok = unprotectResponse(again.binding as ClientBinding, a.msg);
    assert.equal(ok.message.code, CODES.CONTENT);
    assert.equal(server.counters.suppressed, suppressed + 1, 'the forged request was counted as suppressed');
  });
});
