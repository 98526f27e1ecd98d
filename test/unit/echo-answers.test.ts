// The answering side of RFC 9175 §2.4 item 3 for a group registration (draft-ietf-core-cacheable-oscore §3.1): which
// unprotected 4.01 + Echo challenges get the registration again, on the FakeClock (the time window and the refill of
// the budget are about time).

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { ECHO_ANSWER_REFILL, EchoAnswers, MAX_ECHO_ANSWERS } from '../../src/messaging/echo-verifier';
import { FakeClock } from '../support/fake-clock';

const token = Buffer.from('0a0b', 'hex');
const registration = createMessage({ type: 'NON', code: CODES.FETCH, token, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.OSCORE, value: Buffer.from('09', 'hex') }], payload: Buffer.from('c1') });
const challenge = (echo: Buffer, oscore = false) =>
  createMessage({ type: 'NON', code: CODES.UNAUTHORIZED, token, options: [...(oscore ? [{ number: OPT.OSCORE, value: Buffer.alloc(0) }] : []), { number: OPT.ECHO, value: echo }].sort((a, b) => a.number - b.number) });
const server = (n: number) => ({ address: `127.0.0.${n}`, port: 5683 });

describe('EchoAnswers: bounded answers to Echo challenges of a group registration (RFC 9175 §2.2.1, §2.4)', function () {
  it('answers a server once with its Echo on the same token and bytes; refuses an Echo of 0 or 41 bytes and a protected 4.01', function () {
    const clock = new FakeClock();
    const a = new EchoAnswers(() => clock.now(), 10_000);
    const again = a.repeat(registration, challenge(Buffer.from('e1')), server(1))!;
    assert.ok(again.token.equals(token));
    assert.deepEqual(getOption({ ...registration, options: again.options }, OPT.ECHO), Buffer.from('e1'));
    assert.ok(again.payload.equals(registration.payload));
    assert.equal(a.repeat(registration, challenge(Buffer.from('e2')), server(1)), undefined, 'a second challenge from the same server');
    assert.equal(a.repeat(registration, challenge(Buffer.alloc(0)), server(2)), undefined);
    assert.equal(a.repeat(registration, challenge(Buffer.alloc(41)), server(3)), undefined);
    assert.ok(a.repeat(registration, challenge(Buffer.alloc(40)), server(4)), '40 bytes is within the bounds');
    assert.equal(a.repeat(registration, challenge(Buffer.from('e1'), true), server(5)), undefined, 'not unprotected: no challenge');
    assert.deepEqual([a.repeats, a.refused], [2, 3]);
  });

  it('answers only within the window after the registration went out; sent() opens it again', function () {
    const clock = new FakeClock();
    const a = new EchoAnswers(() => clock.now(), 10_000);
    clock.advance(10_001);
    assert.equal(a.repeat(registration, challenge(Buffer.from('e1')), server(1)), undefined, 'too late');
    a.sent();
    clock.advance(10_000);
    assert.ok(a.repeat(registration, challenge(Buffer.from('e1')), server(1)));
  });

  it(`at most ${MAX_ECHO_ANSWERS} repeats; registering again lets each server ask once more but refills the budget only once per ${ECHO_ANSWER_REFILL} ms`, function () {
    const clock = new FakeClock();
    const a = new EchoAnswers(() => clock.now(), 10_000);
    const flood = () => {
      let n = 0;
      for (let h = 1; h <= 100; h++) if (a.repeat(registration, challenge(Buffer.from([h])), server(h))) n++;
      return n;
    };
    assert.equal(flood(), MAX_ECHO_ANSWERS);
    // joins (sent()) as often as a client likes, within the refill interval: nothing more
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      a.sent();
      assert.equal(flood(), 0);
    }
    clock.advance(ECHO_ANSWER_REFILL);
    a.sent();
    assert.equal(flood(), MAX_ECHO_ANSWERS);
  });
});
