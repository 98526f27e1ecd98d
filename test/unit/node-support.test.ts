// The node logic that lives in src/node-support (no Node-RED): dialog parsers, durations, a member's state
// resource, requests waiting for a flow (on a FakeClock), the request router and the interface list.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { OPT, encodeUint } from '../../src/coap/options';
import { ServerRequest } from '../../src/group/group-server';
import { interfaceChoices } from '../../src/node-support/interfaces';
import { PendingReplies, PendingRepliesFull, StateResource, parseInitialState } from '../../src/node-support/member-resource';
import { ProxyConfigError, parseAllowList, parseMembers, parseReverse } from '../../src/node-support/proxy-config';
import { RequestRouter } from '../../src/node-support/request-router';
import { DurationInputError, parseDuration } from '../../src/node-support/units';
import { FakeClock } from '../support/fake-clock';

function request(code: number, payload = '', contentFormat?: number): ServerRequest {
  const options = contentFormat === undefined ? [] : [{ number: OPT.CONTENT_FORMAT, value: encodeUint(contentFormat) }];
  return { message: { type: 'NON', code, messageId: 1, token: Buffer.from('t'), options, payload: Buffer.from(payload) }, remote: { address: '127.0.0.1', port: 1 }, multicast: true, path: '/light', query: [] };
}

describe('node-support: allow-list, members and reverse-map parsers', function () {
  it('allow-list: IPv4 with and without port, bracketed and bare IPv6 (with zone), *, kid', function () {
    assert.deepEqual(parseAllowList('127.0.0.1\n127.0.0.1:40000, [::1]:5683\n::1\nfe80::1%eth0\n*\nkid:0A@77\n# comment'), [
      { address: '127.0.0.1', port: undefined },
      { address: '127.0.0.1', port: 40000 },
      { address: '::1', port: 5683 },
      { address: '::1' },
      { address: 'fe80::1%eth0' },
      { address: '*' },
      { address: '*', kid: '0a@77' },
    ]);
  });

  it('allow-list: a bad line is an error naming the line, not a different rule', function () {
    for (const bad of ['lamp.local', '127.0.0.1:99999', '1.2.3.4:x', '[zz]:1', 'kid:xyz']) {
      assert.throws(() => parseAllowList(`127.0.0.1\n${bad}`), (e: Error) => e instanceof ProxyConfigError && /line 2/.test(e.message), bad);
    }
  });

  it('members: default port, several members, IPv6 groups in brackets', function () {
    assert.deepEqual(parseMembers('224.0.1.187 = 127.0.0.2:5683, 127.0.0.3:5683\n[ff02::fd]:7000 = [fe80::2]:5683\n[ff05::fd] = [::1]:1\nnot a line'), {
      '224.0.1.187:5683': ['127.0.0.2:5683', '127.0.0.3:5683'],
      '[ff02::fd]:7000': ['[fe80::2]:5683'],
      '[ff05::fd]:5683': ['[::1]:1'],
    });
  });

  it('reverse map rows: host, path prefix, case 1 or 2', function () {
    assert.deepEqual(parseReverse([{ host: ' lights.example ', path: '/a/b', group: 'coap://224.0.1.187', standIn: 'servers' }, { group: '' }]), [
      { host: 'lights.example', pathPrefix: ['a', 'b'], group: 'coap://224.0.1.187', standIn: 'servers' },
    ]);
  });
});

describe('node-support: durations are seconds unless the unit is named', function () {
  it('numbers are seconds; "500ms", "2s", "1.5 s" name their unit', function () {
    assert.equal(parseDuration(3, 'x'), 3000);
    assert.equal(parseDuration('3', 'x'), 3000);
    assert.equal(parseDuration('500ms', 'x'), 500);
    assert.equal(parseDuration('1.5 s', 'x'), 1500);
  });
  it('bad input names the field and never says "undefined"', function () {
    for (const bad of [undefined, 'abc', -1, {}, NaN, 1e9]) {
      assert.throws(() => parseDuration(bad, 'msg.timeout'), (e: Error) => e instanceof DurationInputError && /msg\.timeout/.test(e.message) && !/undefined/.test(e.message.replace('(got undefined)', '')));
    }
  });
});

describe('node-support: a group member\'s state resource', function () {
  it('GET returns the state as JSON (or text); PUT of a JSON object merges into an object state', function () {
    const r = new StateResource({ initial: parseInitialState('{"name":"lamp-1","on":false}'), writable: true });
    assert.deepEqual(r.read(), { code: CODES.CONTENT, contentFormat: 50, payload: Buffer.from('{"name":"lamp-1","on":false}') });
    const w = r.handle(request(CODES.PUT, '{"on":true}', 50));
    assert.equal(w.response.code, CODES.CHANGED);
    assert.deepEqual(w.changed!.value, { name: 'lamp-1', on: true });
    assert.deepEqual(JSON.parse(r.read().payload!.toString()), { name: 'lamp-1', on: true });
  });
  it('not writable: 4.05 for PUT; a body that does not parse as its Content-Format is 4.00 without echoing it', function () {
    assert.equal(new StateResource({ writable: false }).handle(request(CODES.PUT, 'x')).response.code, CODES.METHOD_NOT_ALLOWED);
    const bad = new StateResource({ writable: true }).handle(request(CODES.PUT, '{nope', 50)).response;
    assert.equal(bad.code, CODES.BAD_REQUEST);
    assert.ok(!String(bad.payload).includes('nope'));
  });
});

describe('node-support: requests waiting for a flow', function () {
  it('each resolves once: with the answer, or 5.03 after the timeout (FakeClock)', async function () {
    const clock = new FakeClock();
    const p = new PendingReplies(1000, 2, undefined, clock);
    const a = p.add();
    const b = p.add();
    assert.throws(() => p.add(), PendingRepliesFull);
    assert.equal(p.settle(a.id, { code: CODES.CONTENT }), true);
    assert.equal(p.settle(a.id, { code: CODES.CONTENT }), false, 'answered once');
    assert.deepEqual(await a.response, { code: CODES.CONTENT });
    clock.advance(999);
    assert.equal(p.size, 1);
    clock.advance(1);
    assert.deepEqual(await b.response, { code: CODES.SERVICE_UNAVAILABLE });
    assert.equal(p.size, 0);
    assert.equal(clock.pending, 0);
  });
});

describe('node-support: request router', function () {
  // a stand-in with the one method the router calls on the endpoint at construction
  const fakeEndpoint = () => {
    const ep = { handler: undefined as unknown, setRequestHandler(h: unknown) { ep.handler = h; }, value: 42 };
    return ep;
  };
  const ctx = () => {
    const c = { answered: undefined as number | undefined, ignored: false, respond(r: { code: number }) { c.answered = r.code; }, ignore() { c.ignored = true; } };
    return c;
  };
  it('the claiming route gets the request; a single route gets everything; nobody: 4.04 unicast, silence multicast', function () {
    const ep = fakeEndpoint();
    const router = new RequestRouter(ep as never);
    const seen: string[] = [];
    const a = router.viewFor({ a: 1 }, (req) => req.message.options.some((o) => o.number === OPT.PROXY_URI));
    const b = router.viewFor({ b: 1 }, () => false);
    assert.equal((a as unknown as { value: number }).value, 42, 'the view reads through to the endpoint');
    a.setRequestHandler(() => seen.push('a'));
    const dispatch = ep.handler as (req: unknown, c: unknown) => void;
    dispatch({ ...request(CODES.GET), multicast: false }, ctx());
    assert.deepEqual(seen, ['a'], 'one route takes everything');
    b.setRequestHandler(() => seen.push('b'));
    const proxied = request(CODES.GET);
    proxied.message.options.push({ number: OPT.PROXY_URI, value: Buffer.from('coap://x') });
    dispatch(proxied, ctx());
    const c1 = ctx();
    dispatch({ ...request(CODES.GET), multicast: false }, c1);
    const c2 = ctx();
    dispatch(request(CODES.GET), c2);
    assert.deepEqual(seen, ['a', 'a']);
    assert.equal(c1.answered, CODES.NOT_FOUND);
    assert.equal(c2.ignored, true);
    a.setRequestHandler(undefined);
    assert.equal(router.size, 1);
  });
});

describe('node-support: interfaces for the dialogs', function () {
  it('IPv4 by address, IPv6 as ::%name, loopback first', function () {
    const list = interfaceChoices({
      eth0: [{ address: '192.0.2.5', family: 'IPv4', internal: false } as never, { address: 'fe80::5', family: 'IPv6', internal: false } as never],
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true } as never, { address: '::1', family: 'IPv6', internal: true } as never],
    });
    assert.deepEqual(list.map((i) => i.value), ['127.0.0.1', '::%lo', '192.0.2.5', '::%eth0']);
  });
});
