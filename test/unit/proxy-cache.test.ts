// Proxy cache (groupcomm-proxy-07 §7): one entry per server, freshness by Max-Age, Group-ETag over a complete J.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { CoapMessage } from '../../src/coap/message';
import { OPT, encodeUint, optionNumber } from '../../src/coap/options';
import { ProxyCache, isCacheableResponse, maxAgeOf, requestKey } from '../../src/proxy/cache';

const res = (payload: string, maxAge?: number): CoapMessage => ({
  type: 'NON', code: CODES.CONTENT, messageId: 1, token: Buffer.alloc(0), payload: Buffer.from(payload),
  options: maxAge === undefined ? [] : [{ number: OPT.MAX_AGE, value: encodeUint(maxAge) }],
});

describe('proxy cache (groupcomm-proxy-07 §7)', function () {
  it('the Cache-Key ignores the hop options (Multicast-Timeout, Proxy-Uri, Hop-Limit) and keeps Uri-Path and Accept', function () {
    const path = { number: OPT.URI_PATH, value: Buffer.from('light') };
    const a = requestKey(CODES.GET, [path, { number: optionNumber('Multicast-Timeout'), value: encodeUint(5) }, { number: OPT.HOP_LIMIT, value: encodeUint(15) }], Buffer.alloc(0));
    const b = requestKey(CODES.GET, [path], Buffer.alloc(0));
    const c = requestKey(CODES.GET, [path, { number: OPT.ACCEPT, value: encodeUint(50) }], Buffer.alloc(0));
    assert.equal(a, b);
    assert.notEqual(b, c);
    assert.notEqual(requestKey(CODES.FETCH, [path], Buffer.from('a')), requestKey(CODES.FETCH, [path], Buffer.from('b')));
  });

  it('keeps one entry per server, replaced as responses come, fresh until Max-Age (default 60 s)', function () {
    let now = 1_000_000;
    const cache = new ProxyCache(100, () => now);
    cache.store('k', 's1', res('a'));
    cache.store('k', 's1', res('b'));
    cache.store('k', 's2', res('c', 5));
    assert.equal(cache.count, 2);
    assert.deepEqual(cache.fresh('k').map((e) => e.message.payload.toString()).sort(), ['b', 'c']);
    now += 6000;
    assert.deepEqual(cache.fresh('k').map((e) => e.message.payload.toString()), ['b']);
    const served = cache.served(cache.fresh('k')[0]);
    assert.equal(served.options.find((o) => o.number === OPT.MAX_AGE)!.value.readUIntBE(0, 1), 54);
    cache.store('k', 's1', res('nope', 0)); // Max-Age 0: not cacheable, and the old entry goes
    assert.equal(cache.fresh('k').length, 0);
  });

  it('Group-ETag only for a complete J, and it changes when any entry changes', function () {
    let now = 0;
    const cache = new ProxyCache(100, () => now);
    const members = ['s1', 's2'];
    cache.store('k', 's1', res('a'));
    assert.equal(cache.groupEtag('k', members), undefined);
    cache.store('k', 's2', res('b'));
    const t1 = cache.groupEtag('k', members)!;
    assert.equal(t1.length, 8);
    assert.deepEqual(cache.groupEtag('k', members), t1);
    now += 10;
    cache.store('k', 's2', res('b2'));
    assert.notDeepEqual(cache.groupEtag('k', members), t1);
    assert.equal(cache.groupEtag('k', []), undefined);
  });

  it('a Max-Age longer than its 4 bytes (RFC 7252 §5.10) is malformed: 0 s, never cached, and no exception', function () {
    const m = (value: Buffer): CoapMessage => ({ type: 'NON', code: CODES.CONTENT, messageId: 1, token: Buffer.alloc(0), options: [{ number: OPT.MAX_AGE, value }], payload: Buffer.from('x') });
    assert.equal(maxAgeOf(m(Buffer.from('0000012c', 'hex'))), 300);
    for (const len of [5, 6, 7, 8]) {
      assert.equal(maxAgeOf(m(Buffer.alloc(len, 1))), 0);
      assert.equal(isCacheableResponse(m(Buffer.alloc(len, 1))), false);
    }
  });

  it('evicts the oldest entry beyond its size', function () {
    let now = 0;
    const cache = new ProxyCache(2, () => now++);
    cache.store('k1', 's', res('1'));
    cache.store('k2', 's', res('2'));
    cache.store('k3', 's', res('3'));
    assert.equal(cache.count, 2);
    assert.equal(cache.fresh('k1').length, 0);
  });

  it('keeps its count right when a server alternates cacheable and non-cacheable answers, and drops empty keys', function () {
    const cache = new ProxyCache(10, () => 0);
    const notFound: CoapMessage = { ...res('x'), code: CODES.NOT_FOUND };
    for (let i = 0; i < 5; i++) {
      cache.store('k', 's1', res('a'));
      cache.store('k', 's1', notFound);
    }
    assert.equal(cache.count, 0);
    cache.store('k', 's1', res('a'));
    assert.equal(cache.count, 1);
    assert.equal((cache as unknown as { entries: Map<string, unknown> }).entries.size, 1);
    cache.store('k', 's1', notFound);
    assert.equal((cache as unknown as { entries: Map<string, unknown> }).entries.size, 0);
  });
});
