// The client's Group-ETag store (groupcomm-proxy-07 §7.3): one set per request with its tag, refreshed on a 2.03 as
// RFC 7252 §5.9.1.3 says, bounded in sets, responses and bytes.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, getOption, getOptions } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import type { Origin } from '../../src/group/group-client';
import { GroupEtagStore } from '../../src/proxy/group-etag-store';
import { FakeClock } from '../support/fake-clock';

const GETAG = optionNumber('Group-ETag');
const origin = (n: number): Origin => ({ address: `127.0.0.${n}`, port: 5683, uri: `coap://127.0.0.${n}:5683` });
const res = (payload: string | Buffer, maxAge?: number, tag?: Buffer): CoapMessage => ({
  type: 'NON',
  code: CODES.CONTENT,
  messageId: 1,
  token: Buffer.from('aa', 'hex'),
  payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload),
  options: [...(maxAge === undefined ? [] : [{ number: OPT.MAX_AGE, value: encodeUint(maxAge) }]), ...(tag ? [{ number: GETAG, value: tag }] : [])],
});
const T1 = Buffer.from('0102', 'hex');

describe('client Group-ETag store (groupcomm-proxy-07 §7.3)', function () {
  it('keeps one response per server with its Max-Age (absent = 60 s, RFC 7252 §5.10.5), fresh until it runs out', function () {
    const clock = new FakeClock();
    const s = new GroupEtagStore({ clock });
    assert.ok(s.put('k', T1, [{ origin: origin(2), message: res('a', 10, T1) }, { origin: origin(3), message: res('b', undefined, T1) }, { origin: origin(2), message: res('a2', 10, T1) }]));
    const set = s.peek('k')!;
    assert.deepEqual(set.responses.map((r) => [r.origin.address, r.message.payload.toString(), r.maxAge]), [['127.0.0.2', 'a2', 10], ['127.0.0.3', 'b', 60]]);
    assert.ok(s.tagFor('k')!.equals(T1));
    assert.ok(s.isFresh('k'));
    clock.advance(10_000);
    assert.equal(s.isFresh('k'), false, 'the 10 s response is stale');
    assert.ok(s.tagFor('k'), 'a stale set is kept: validation is for it (RFC 7252 §5.6.2)');
  });

  it('a 2.03 with the tag refreshes every stored response with the 2.03\'s Max-Age and Group-ETag (RFC 7252 §5.9.1.3); another tag refreshes nothing', function () {
    const clock = new FakeClock();
    const s = new GroupEtagStore({ clock });
    s.put('k', T1, [{ origin: origin(2), message: res('a', 10, T1) }, { origin: origin(3), message: res('b', 20, T1) }]);
    clock.advance(15_000);
    assert.equal(s.revalidate('k', Buffer.from('ffff', 'hex'), 30, GETAG), undefined);
    assert.equal(s.revalidate('other', T1, 30, GETAG), undefined);
    const out = s.revalidate('k', T1, 30, GETAG)!;
    assert.equal(out.length, 2);
    for (const r of out) {
      assert.equal(decodeUint(getOption(r.message, OPT.MAX_AGE)!), 30);
      assert.equal(getOptions(r.message, GETAG).length, 1);
      assert.equal(r.maxAge, 30);
      assert.equal(r.storedAt, clock.now());
    }
    assert.ok(s.isFresh('k'));
  });

  it('is bounded: the least recently used set goes first, past the sets or the bytes; a set over the bounds is not kept', function () {
    const s = new GroupEtagStore({ clock: new FakeClock(), maxSets: 2, maxResponses: 3, maxBytes: 3000 });
    s.put('a', T1, [{ origin: origin(2), message: res('x') }]);
    s.put('b', T1, [{ origin: origin(2), message: res('x') }]);
    s.revalidate('a', T1, 60, GETAG); // 'a' is now the most recently used
    s.put('c', T1, [{ origin: origin(2), message: res('x') }]);
    assert.deepEqual(['a', 'b', 'c'].map((k) => !!s.tagFor(k)), [true, false, true]);
    // bytes: a 2000-byte set pushes out the others
    assert.ok(s.put('big', T1, [{ origin: origin(2), message: res(Buffer.alloc(2000)) }]));
    assert.ok(s.put('big2', T1, [{ origin: origin(3), message: res(Buffer.alloc(1500)) }]));
    assert.equal(s.size, 1);
    assert.ok(s.bytes <= 3000);
    assert.ok(s.tagFor('big2'));
    // over the bounds: not kept, and the key's old set is forgotten
    assert.equal(s.put('big2', T1, [{ origin: origin(2), message: res(Buffer.alloc(3001)) }]), false);
    assert.equal(s.tagFor('big2'), undefined);
    assert.equal(s.put('many', T1, [2, 3, 4, 5].map((n) => ({ origin: origin(n), message: res('x') }))), false);
    assert.equal(s.size, 0);
    assert.equal(s.bytes, 0);
  });

  it('holds copies: changing a delivered message later does not change the stored one', function () {
    const s = new GroupEtagStore({ clock: new FakeClock() });
    const m = res('abc', 60, T1);
    s.put('k', T1, [{ origin: origin(2), message: m }]);
    m.payload.write('zzz');
    assert.equal(s.peek('k')!.responses[0].message.payload.toString(), 'abc');
  });
});
