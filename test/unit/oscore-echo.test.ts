// Echo recovery of a lost replay window (RFC 8613 App. B.1.2) under a replay flood: replayed requests never push
// out the Echo value a live client holds.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, createMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { SecurityContext } from '../../src/oscore/context';
import { EchoChallenges } from '../../src/oscore/echo';
import { EchoRequiredError } from '../../src/oscore/errors';
import { echoChallenge, protectRequest, unprotectRequest, unprotectResponse } from '../../src/oscore/protect';

const h = (s: string) => Buffer.from(s, 'hex');
const wire = (m: CoapMessage): CoapMessage => decode(encode(m));
const get = (options: CoapMessage['options'] = []) => createMessage({ type: 'CON', code: CODES.GET, messageId: 1, token: h('0a'), options });

describe('Echo recovery under replays (RFC 8613 App. B.1.2)', function () {
  it('a flood of replayed requests leaves the live client\'s Echo value valid', function () {
    const base = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
    const client = SecurityContext.derive({ ...base, senderId: h('c1'), recipientId: h('5e') });
    // requests recorded before the server lost its replay window
    const old = Array.from({ length: 20 }, () => protectRequest(client, get()).message);
    const server = SecurityContext.derive({ ...base, senderId: h('5e'), recipientId: h('c1') }, { replayWindowInitialized: false });

    // the live client asks and is challenged
    const live = protectRequest(client, get([{ number: OPT.URI_PATH, value: Buffer.from('door') }]));
    let challenge: EchoRequiredError | undefined;
    try {
      unprotectRequest(server, wire(live.message));
    } catch (err) {
      challenge = err as EchoRequiredError;
    }
    assert.ok(challenge instanceof EchoRequiredError);
    const seen = unprotectResponse(live.binding, wire({ type: 'ACK', messageId: 1, token: live.message.token, ...echoChallenge(challenge) } as CoapMessage));
    const echo = getOption(seen.message, OPT.ECHO)!;

    // an attacker replays every old request, many times: each is challenged, none takes the live value away
    for (let round = 0; round < 5; round++) {
      for (const m of old) assert.throws(() => unprotectRequest(server, wire(m)), EchoRequiredError);
    }
    assert.equal(server.echo.outstanding, 1);
    assert.equal(server.echo.repeated, 100);

    // the live client's retry with its Echo value initializes the window
    const retry = protectRequest(client, get([{ number: OPT.ECHO, value: echo }]));
    const ok = unprotectRequest(server, wire(retry.message));
    assert.equal(ok.binding.requestFresh, true);
    assert.equal(server.awaitingEchoRecovery, false);
    // and the old requests are replays from now on
    assert.throws(() => unprotectRequest(server, wire(old[19])), (e: unknown) => (e as { code?: string }).code === 'ERR_OSCORE_REPLAY');
  });

  it('EchoChallenges: one outstanding value, repeated until redeemed once; a wrong value does not consume it', function () {
    const e = new EchoChallenges(4);
    const a = e.issue();
    assert.equal(a.length, 4);
    assert.deepEqual(e.issue(), a);
    const wrong = Buffer.from(a);
    wrong[0] ^= 0xff;
    assert.equal(e.redeem(wrong), false);
    assert.equal(e.redeem(a), true);
    assert.equal(e.redeem(a), false, 'a value works once');
    assert.notDeepEqual(e.issue(), a);
    assert.throws(() => new EchoChallenges(41), RangeError);
  });
});
