// The proxy's stages as pure functions, in milliseconds: admission (groupcomm-proxy-07 §5.2.1 steps 2-4, §10;
// RFC 8768 §3; RFC 9175 §2.4; RFC 9000 §8.1), exchange states (§5.4.2, RFC 10020 §3.7), chain timers (§8.1) and
// the one target encoder / decoder (RFC 7252 §5.10.2, §6.4; RFC 6874).

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { parseUri } from '../../src/coap/uri';
import { EchoVerifier, HostLimits, hostOf, isAllowed, isAllowedAnywhere, nextHopLimit, readMulticastTimeout, withinAmplificationLimit } from '../../src/proxy/admission';
import { chainTimers, minimumAcceptable, ownMinimumAfter505, retryAfter505 } from '../../src/proxy/chain';
import { HopLimitError, LimitError, MulticastTimeoutRequiredError, MulticastTimeoutTooLargeError } from '../../src/proxy/errors';
import { ExchangeLife } from '../../src/proxy/exchange';
import { defaultMulticastTimeout, parseUriHost, rememberedProxyUris, resolveTarget, targetOptions } from '../../src/proxy/target';
import { FakeClock } from '../support/fake-clock';

const MT = optionNumber('Multicast-Timeout');
const req = (options: { number: number; value: Buffer }[]) => createMessage({ type: 'CON', code: CODES.GET, token: Buffer.from('t'), options });

describe('proxy admission (groupcomm-proxy-07 §5.2.1, §10)', function () {
  it('limits are kept per host: the IP address for address-identified clients, the OSCORE identity otherwise', function () {
    assert.equal(hostOf({ address: '127.0.0.1', port: 1 }), hostOf({ address: '127.0.0.1', port: 2 }));
    assert.notEqual(hostOf({ address: '127.0.0.1', port: 1, kid: '01' }), hostOf({ address: '127.0.0.1', port: 1 }));
  });

  it('REQ1: the allow-list admits by address, port, kid and target prefix; nobody by default', function () {
    const rules = [{ address: '127.0.0.1', targets: ['coap://224.0.1.187'] }, { address: '*', kid: 'aa' }];
    assert.equal(isAllowed(undefined, { address: '127.0.0.1', port: 1 }, 'coap://224.0.1.187/x'), false);
    assert.equal(isAllowed(rules, { address: '127.0.0.1', port: 1 }, 'coap://224.0.1.187/x'), true);
    assert.equal(isAllowed(rules, { address: '127.0.0.1', port: 1 }, 'coap://224.0.1.188/x'), false);
    assert.equal(isAllowed(rules, { address: '127.0.0.2', port: 1, kid: 'aa' }, 'coap://x'), true);
    assert.equal(isAllowedAnywhere(rules, { address: '127.0.0.3', port: 1 }), false);
    assert.equal(isAllowedAnywhere(rules, { address: '127.0.0.1', port: 9 }), true);
  });

  it('RFC 8768 §3: Hop-Limit is decremented; 1 (or 0) stops the request with 5.08 naming this proxy', function () {
    assert.equal(nextHopLimit(req([]), 16, 'p'), 15);
    assert.equal(nextHopLimit(req([{ number: OPT.HOP_LIMIT, value: encodeUint(2) }]), 16, 'p'), 1);
    assert.throws(() => nextHopLimit(req([{ number: OPT.HOP_LIMIT, value: encodeUint(1) }]), 16, '192.0.2.1:5683'), (e: HopLimitError) => {
      const r = e.toResponse();
      return r.code === CODES.HOP_LIMIT_REACHED && r.payload!.toString() === '192.0.2.1:5683';
    });
  });

  it('§5.2.1 step 3: no Multicast-Timeout: 4.00 with an empty Multicast-Timeout', function () {
    assert.throws(() => readMulticastTimeout(req([]), 300), (e: MulticastTimeoutRequiredError) => {
      const r = e.toResponse();
      return r.code === CODES.BAD_REQUEST && getOption(r as never, MT)!.length === 0;
    });
  });

  it('§5.2.1 step 4: a T\' above the maximum: 4.00 with Multicast-Timeout carrying the maximum', function () {
    assert.equal(readMulticastTimeout(req([{ number: MT, value: encodeUint(300) }]), 300), 300);
    assert.throws(() => readMulticastTimeout(req([{ number: MT, value: encodeUint(301) }]), 300), (e: MulticastTimeoutTooLargeError) => {
      const r = e.toResponse();
      return r.code === CODES.BAD_REQUEST && decodeUint(getOption(r as never, MT)!) === 300;
    });
  });

  it('RFC 9000 §8.1: at most 3x the bytes received towards an unverified source', function () {
    assert.equal(withinAmplificationLimit(10, 30), true);
    assert.equal(withinAmplificationLimit(10, 31), false);
  });

  it('RFC 9175 §2.4: an Echo value proves reachability only from the address and port it was sent to, while fresh', function () {
    const clock = new FakeClock();
    const v = new EchoVerifier({ clock, interval: 600_000, lifetime: 60_000 });
    const a = { address: '127.0.0.1', port: 1000 };
    const echo = v.challenge(a);
    assert.equal(echo.length, 12);
    assert.equal(v.check(a, undefined), false);
    assert.equal(v.check({ ...a, port: 1001 }, echo), false, 'another port');
    assert.equal(v.check({ ...a, address: '127.0.0.2' }, echo), false, 'another address');
    const forged = Buffer.from(echo);
    forged[11] ^= 1;
    assert.equal(v.check(a, forged), false, 'a forged value');
    clock.advance(61_000);
    assert.equal(v.check(a, echo), false, 'a stale value');
    const fresh = v.challenge(a);
    assert.equal(v.check(a, fresh), true);
    assert.equal(v.check(a, undefined), true, 'verified for the interval');
    clock.advance(600_000);
    assert.equal(v.check(a, undefined), false, 'and again after it');
  });

  it('per-host limits and the global budget answer 4.29 / 5.03 with Max-Age, count each refusal, and forget idle hosts', function () {
    const clock = new FakeClock();
    const l = new HostLimits({ clock, pending: 2, global: 3, tZeroPerSecond: 2 });
    const r1 = l.acquire('ip:a', 'pending');
    l.acquire('ip:a', 'pending');
    assert.throws(() => l.acquire('ip:a', 'pending', 5), (e: LimitError) => e.responseCode === CODES.TOO_MANY_REQUESTS && decodeUint(e.options[0].value) === 5);
    l.acquire('ip:b', 'pending');
    assert.throws(() => l.acquire('ip:c', 'pending'), (e: LimitError) => e.responseCode === CODES.SERVICE_UNAVAILABLE);
    assert.deepEqual([l.refused.pending, l.refused.global], [1, 1]);
    r1();
    r1(); // twice is once
    assert.equal(l.inUse, 2);
    l.takeTZero('ip:d');
    l.takeTZero('ip:d');
    assert.throws(() => l.takeTZero('ip:d'), LimitError);
    clock.advance(1000);
    l.takeTZero('ip:d');
    assert.equal(l.refused.tZero, 1);
  });
});

describe('proxy exchange states (groupcomm-proxy-07 §5.4.2, RFC 10020 §3.7)', function () {
  it('after T\' only notifications of active observations are relayed', function () {
    const life = new ExchangeLife(true);
    assert.equal(life.admit('s1', CODES.CONTENT, true), true);
    assert.equal(life.admit('s2', CODES.CONTENT, false), true, 'before T\' everything');
    assert.equal(life.tPrimePassed(), 'observing');
    assert.equal(life.admit('s2', CODES.CONTENT, true), false, 's2 never started an observation');
    assert.equal(life.admit('s3', CODES.CONTENT, true), false, 'a server first heard after T\'');
    assert.equal(life.admit('s1', CODES.CONTENT, true), true);
    assert.equal(life.admit('s1', CODES.NOT_FOUND, false), true, 'the response that ends s1\'s observation');
    assert.equal(life.admit('s1', CODES.CONTENT, true), false, 'and nothing from s1 after it');
  });

  it('without an observation T\' ends the exchange; deregistration relays the answers, then ends', function () {
    const plain = new ExchangeLife(false);
    assert.equal(plain.tPrimePassed(), 'end');
    const obs = new ExchangeLife(true);
    obs.admit('s1', CODES.CONTENT, true);
    assert.equal(obs.deregister(), true);
    assert.equal(obs.state, 'deregistering');
    assert.equal(obs.admit('s9', CODES.CONTENT, false), true);
    assert.equal(obs.end(), true);
    assert.equal(obs.end(), false);
    assert.equal(obs.admit('s1', CODES.CONTENT, true), false);
  });
});

describe('chain timers (groupcomm-proxy-07 §8.1)', function () {
  const c = { nextHop: { address: '127.0.0.1', port: 1 }, rttPrevious: 1, rttNext: 1, serverAnswerTime: 2 };
  it('a non-last proxy collects until T\', keeps its own T > T\', and sends T\'\' = T\' - RTT(previous)', function () {
    assert.deepEqual(chainTimers(10, c), { collect: 10, tOwn: 11, tNext: 9 });
    const t = chainTimers(10, c)!;
    assert.ok(t.tNext < 10 && t.tNext < t.tOwn && t.tOwn > 10 && t.tOwn - t.tNext >= c.rttNext);
  });
  it('5.05 only when no T\'\' fits the servers\' answer time; its minimum is one with which they answer', function () {
    // the smallest T'' = serverAnswerTime + RTT(next) = 3, so the smallest T' = 4
    assert.equal(minimumAcceptable(c), 4);
    assert.equal(chainTimers(3, c), undefined);
    assert.deepEqual(chainTimers(4, c)?.tNext, 3);
  });
  it('a 5.05 from the next hop: retry with a larger T\'\' if it fits under T\', else this proxy\'s own minimum', function () {
    assert.equal(retryAfter505(10, 5, 7, c), 7);
    assert.equal(retryAfter505(10, 5, 4, c), 6, 'greater than the previous value');
    assert.equal(retryAfter505(10, 5, 10, c), undefined);
    assert.equal(ownMinimumAfter505(10, c), 11);
  });
});

describe('the proxy target: one encoder, one decoder (RFC 7252 §5.10.2, §6.4)', function () {
  const cfg = { forward: true, hosts: {}, knownServer: () => true, reverse: [{ host: 'g', group: 'coap://224.0.1.187:5683', standIn: 'servers' as const }], listenPort: 5683 };
  for (const style of ['proxy-uri', 'proxy-scheme'] as const) {
    it(`${style}: what the encoder writes the decoder reads back, IPv6 zone included`, function () {
      for (const text of ['coap://224.0.1.187:7000/a/b?x=1', 'coap://[ff02::fd%25eth0]:5683/light', 'coap://[2001:db8::1]/x']) {
        const uri = parseUri(text);
        const t = resolveTarget(req(targetOptions(uri, style).sort((a, b) => a.number - b.number)), cfg)!;
        assert.equal(t.text, text.replace(':5683', ''));
        assert.equal(t.uri.zone, uri.zone);
      }
    });
  }
  it('Uri-Host carries an IPv6 literal in brackets (RFC 7252 §6.4) and the decoder takes both zone spellings', function () {
    const o = targetOptions(parseUri('coap://[fe80::1%25eth0]:5684/x'), 'reverse', 5683);
    assert.equal(o.find((x) => x.number === OPT.URI_HOST)!.value.toString(), '[fe80::1%eth0]');
    assert.deepEqual(parseUriHost('[fe80::1%25eth0]'), { host: 'fe80::1', zone: 'eth0' });
    assert.deepEqual(parseUriHost('[fe80::1%eth0]'), { host: 'fe80::1', zone: 'eth0' });
  });
  it('target errors carry fixed diagnostics, never the client\'s bytes', function () {
    const garbage = Buffer.alloc(300, 0x01);
    assert.throws(() => resolveTarget(req([{ number: OPT.PROXY_URI, value: garbage }]), cfg), (e: Error & { toResponse(): { payload?: Buffer } }) => e.toResponse().payload!.length < 64);
  });
  it('a Proxy-Uri seen lately is not parsed again: the same frozen target, at most 64 remembered, host names and forward-off never served from memory', function () {
    const proxyUri = (text: string) => req([{ number: OPT.PROXY_URI, value: Buffer.from(text) }]);
    const first = resolveTarget(proxyUri('coap://224.0.1.187:7000/r?x=1'), cfg)!;
    const again = resolveTarget(proxyUri('coap://224.0.1.187:7000/r?x=1'), cfg)!;
    assert.equal(again, first);
    assert.ok(Object.isFrozen(first) && Object.isFrozen(first.uri) && Object.isFrozen(first.uri.path) && Object.isFrozen(first.uri.query));
    assert.throws(() => (first.uri.path as string[]).push('y'), TypeError);
    assert.deepEqual({ host: again.uri.host, port: again.uri.port, path: again.uri.path, query: again.uri.query, text: again.text }, { host: '224.0.1.187', port: 7000, path: ['r'], query: ['x=1'], text: 'coap://224.0.1.187:7000/r?x=1' });
    // forward proxying off: refused even for a remembered URI
    assert.throws(() => resolveTarget(proxyUri('coap://224.0.1.187:7000/r?x=1'), { ...cfg, forward: false }), (e: { responseCode?: number }) => e.responseCode === CODES.PROXYING_NOT_SUPPORTED);
    // bounded: 200 different URIs leave at most 64, and each still resolves to itself
    for (let i = 0; i < 200; i++) assert.equal(resolveTarget(proxyUri(`coap://224.0.1.187/r${i}`), cfg)!.text, `coap://224.0.1.187/r${i}`);
    assert.equal(rememberedProxyUris(), 64);
    assert.notEqual(resolveTarget(proxyUri('coap://224.0.1.187:7000/r?x=1'), cfg), first);
    // a host name resolves through this proxy's hosts table every time
    const named = proxyUri('coap://lamps/on');
    assert.equal(resolveTarget(named, { ...cfg, hosts: { lamps: '224.0.1.187' } })!.uri.host, '224.0.1.187');
    assert.equal(resolveTarget(named, { ...cfg, hosts: { lamps: '224.0.1.188' } })!.uri.host, '224.0.1.188');
    // a long URI is resolved, not remembered
    const before = rememberedProxyUris();
    const long = `coap://224.0.1.187/${'a'.repeat(300)}`;
    assert.equal(resolveTarget(proxyUri(long), cfg)!.text, long);
    assert.notEqual(resolveTarget(proxyUri(long), cfg), resolveTarget(proxyUri(long), cfg));
    assert.equal(rememberedProxyUris(), before);
  });
  it('one T\' default (groupcomm-proxy-07 §5.1.1): one second under T', function () {
    assert.equal(defaultMulticastTimeout(2000), 1);
    assert.equal(defaultMulticastTimeout(2500), 2);
    assert.ok(defaultMulticastTimeout(2500) * 1000 < 2500);
  });
});
