// The message layer's bounds and failure paths on real sockets, with time on a FakeClock: RST matching for NON
// messages (RFC 7252 §4.3, RFC 7641 §3.6), the duplicate cache bounded in entries and bytes (RFC 7252 §4.5), retired
// tokens capped without ever being forgotten early (groupcomm-bis §3.1.5), Message IDs per destination (RFC 7252
// §4.4), a throwing handler, one empty-ACK path.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapResponseError } from '../../src/coap/errors';
import { CoapMessage, createMessage } from '../../src/coap/message';
import { OPT, encodeUint } from '../../src/coap/options';
import { GroupClient } from '../../src/group/group-client';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint, CoapError, DEDUP_ENTRY_OVERHEAD, DEDUP_SOURCE_OVERHEAD, EndpointOptions, RequestHandler } from '../../src/messaging/endpoint';
import { DEFAULT_PARAMS, exchangeLifetime, minTokenReuseTime, nonLifetime } from '../../src/messaging/parameters';
import { UdpTransport } from '../../src/transport/udp-transport';
import { FakeClock } from '../support/fake-clock';
import { closeChecked } from '../support/endpoints';
import { GROUP_V4, RawProbe, freeGroupPort, rawProbe } from '../support/lamps';
import { waitFor } from '../support/wait';

const req = (type: 'CON' | 'NON', messageId: number, token: string, payload = ''): Buffer =>
  encode(createMessage({ type, code: CODES.GET, messageId, token: Buffer.from(token), options: [{ number: OPT.URI_PATH, value: Buffer.from('r') }], payload: Buffer.from(payload) }));
const rst = (messageId: number): Buffer => encode({ type: 'RST', code: 0, messageId, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) });

async function endpoint(clock: FakeClock, opts: EndpointOptions = {}, handler?: RequestHandler): Promise<CoapEndpoint> {
  const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }), { clock, ...opts });
  if (handler) ep.setRequestHandler(handler);
  return ep;
}

describe('message layer: bounds and failure paths (FakeClock, real sockets)', function () {
  let clock: FakeClock;
  let probe: RawProbe;
  let other: RawProbe;
  const open: CoapEndpoint[] = [];
  beforeEach(async function () {
    clock = new FakeClock();
    probe = await rawProbe();
    other = await rawProbe();
  });
  afterEach(async function () {
    await closeChecked(open.splice(0), [probe, other]);
  });
  const make = async (opts: EndpointOptions = {}, handler?: RequestHandler) => {
    const ep = await endpoint(clock, opts, handler);
    open.push(ep);
    return ep;
  };

  describe('RST matching for NON messages (RFC 7252 §4.3)', function () {
    it('a RST from the destination with the NON\'s Message ID calls onReset once; one from another port does not', async function () {
      const ep = await make();
      let resets = 0;
      const mid = ep.newMessageId(probe.address());
      ep.sendMessage(createMessage({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: Buffer.from('t1') }), probe.address(), { onReset: () => resets++ });
      assert.equal(decode(await probe.next()).messageId, mid);
      assert.equal(ep.nonResetEntries, 1);
      other.send(rst(mid), ep.transport.address()); // the same MID from a source the NON did not go to
      await once(ep, 'reset');
      assert.equal(resets, 0);
      probe.send(rst(mid), ep.transport.address());
      await once(ep, 'reset');
      assert.equal(resets, 1);
      probe.send(rst(mid), ep.transport.address()); // matched once only
      await once(ep, 'reset');
      assert.equal(resets, 1);
      assert.equal(ep.nonResetEntries, 0);
    });

    it('forgets a NON after NON_LIFETIME: a later RST does not match', async function () {
      const ep = await make();
      let resets = 0;
      const mid = ep.newMessageId(probe.address());
      ep.sendMessage(createMessage({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: Buffer.from('t2') }), probe.address(), { onReset: () => resets++ });
      await probe.next();
      clock.advance(nonLifetime(DEFAULT_PARAMS));
      assert.equal(ep.nonResetEntries, 0);
      probe.send(rst(mid), ep.transport.address());
      await once(ep, 'reset');
      assert.equal(resets, 0);
    });

    it('remembers at most maxNonResetEntries NON messages (the oldest go first)', async function () {
      const ep = await make({ maxNonResetEntries: 3 });
      const hits: number[] = [];
      const mids: number[] = [];
      for (let i = 0; i < 5; i++) {
        const mid = ep.newMessageId(probe.address());
        mids.push(mid);
        ep.sendMessage(createMessage({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: Buffer.from([i]) }), probe.address(), { onReset: () => hits.push(i) });
      }
      await probe.count(5);
      assert.equal(ep.nonResetEntries, 3);
      probe.send(rst(mids[0]), ep.transport.address());
      await once(ep, 'reset');
      probe.send(rst(mids[4]), ep.transport.address());
      await once(ep, 'reset');
      assert.deepEqual(hits, [4]);
    });

    it('a RST to a NON notification cancels that observation on a GroupServer (RFC 7641 §3.6)', async function () {
      const port = await freeGroupPort();
      const server = await GroupServer.open({ address: '127.0.0.1', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0, clock });
      try {
        server.addResource('/r', () => ({ payload: 'v' }), { observable: true });
        probe.send(encode(createMessage({ type: 'NON', code: CODES.GET, messageId: 7, token: Buffer.from('ob'), options: [{ number: OPT.OBSERVE, value: encodeUint(0) }, { number: OPT.URI_PATH, value: Buffer.from('r') }] })), server.address());
        await probe.next();
        assert.equal(server.observerCount('/r'), 1);
        server.notify('/r');
        const note = decode(await probe.next());
        assert.equal(note.type, 'NON');
        other.send(rst(note.messageId), server.address()); // not the observer: no effect
        await once(server.endpoint, 'reset');
        assert.equal(server.observerCount('/r'), 1);
        probe.send(rst(note.messageId), server.address());
        await once(server.endpoint, 'reset');
        assert.equal(server.observerCount('/r'), 0);
      } finally {
        await closeChecked(server);
      }
    });
  });

  describe('Message IDs per destination (RFC 7252 §4.4)', function () {
    it('65,535 messages to one host do not make the next message to another host repeat a Message ID it got', async function () {
      this.timeout(60_000);
      const ep = await make();
      const non = (mid: number, i: number) => createMessage({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: Buffer.from([i & 0xff, i >> 8]) });
      ep.sendMessage(non(ep.newMessageId(probe.address()), 0), probe.address());
      const first = decode(await probe.next()).messageId;
      // a busy proxy: 65,535 relayed messages to another client (one Message ID counter for all would wrap here)
      for (let i = 0; i < 65_535; i++) {
        ep.sendMessage(non(ep.newMessageId(other.address()), i), other.address());
        if (i % 4096 === 4095) await new Promise((r) => setImmediate(r));
      }
      ep.sendMessage(non(ep.newMessageId(probe.address()), 1), probe.address());
      const second = decode(await probe.next()).messageId;
      assert.notEqual(second, first, 'the same Message ID reached the same endpoint again within EXCHANGE_LIFETIME');
      assert.equal(second, (first + 1) & 0x7fff);
      assert.equal(ep.messageIdCounters.size, 2);
    });

    it('a group member never gets the same Message ID by multicast and by unicast: multicast IDs have the top bit set', async function () {
      const ep = await make();
      const group = { address: GROUP_V4, port: probe.address().port };
      for (let i = 0; i < 40_000; i++) {
        const u = ep.newMessageId(probe.address());
        const m = ep.newMessageId(group);
        assert.ok(u < 0x8000 && m >= 0x8000, `unicast ${u}, multicast ${m}`);
      }
    });

    it('two CONs with the same Message ID to two hosts are each retransmitted until their own ACK', async function () {
      const ep = await make();
      const acked: string[] = [];
      const con = (to: RawProbe, name: string) =>
        ep.sendMessage(createMessage({ type: 'CON', code: CODES.CONTENT, messageId: 0x1234, token: Buffer.from(name) }), to.address(), { onAck: () => acked.push(name), onFail: (e) => acked.push(`${name} failed: ${e.message}`) });
      con(probe, 'a');
      con(other, 'b');
      assert.equal(decode(await probe.next()).messageId, 0x1234);
      assert.equal(decode(await other.next()).messageId, 0x1234);
      const ack = encode({ type: 'ACK', code: 0, messageId: 0x1234, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) });
      other.send(ack, ep.transport.address());
      await waitFor(() => acked.length === 1, 'the ACK of b');
      assert.deepEqual(acked, ['b']);
      // 'a' is still retransmitted: its first retransmission comes after ACK_TIMEOUT x [1, 1.5]
      clock.advance(DEFAULT_PARAMS.ACK_TIMEOUT * DEFAULT_PARAMS.ACK_RANDOM_FACTOR);
      assert.equal(decode(await probe.next()).messageId, 0x1234);
      probe.send(ack, ep.transport.address());
      await waitFor(() => acked.length === 2, 'the ACK of a');
      assert.deepEqual(acked, ['b', 'a']);
      clock.advance(exchangeLifetime(DEFAULT_PARAMS));
      assert.equal(other.replies.length, 1, 'the acknowledged CON was retransmitted');
    });

    it('keeps at most maxMessageIdCounters destinations, and forgets one unused for EXCHANGE_LIFETIME', async function () {
      const ep = await make({ maxMessageIdCounters: 8 });
      for (let port = 40_000; port < 40_020; port++) ep.newMessageId({ address: '127.0.0.1', port });
      assert.ok(ep.messageIdCounters.size <= 8, `${ep.messageIdCounters.size} counters`);
      assert.ok(ep.messageIdCounters.evictions >= 12);
      // the most recently used destination kept its counter: its next ID follows the last one
      const last = { address: '127.0.0.1', port: 40_019 };
      const a = ep.newMessageId(last);
      clock.advance(1);
      assert.equal(ep.newMessageId(last), (a + 1) & 0x7fff);
      clock.advance(exchangeLifetime(DEFAULT_PARAMS));
      ep.sweep();
      assert.equal(ep.messageIdCounters.size, 0);
    });
  });

  describe('duplicate cache (RFC 7252 §4.5) bounded in entries and bytes', function () {
    it('holds at most maxDedupBytes of replies; a retransmission within the bound gets the same reply bytes', async function () {
      let calls = 0;
      const big = Buffer.alloc(1000, 0x61);
      const ep = await make({ maxDedupBytes: 10_000 }, (_r, ctx) => {
        calls++;
        ctx.respond({ code: CODES.CONTENT, payload: big });
      });
      for (let i = 0; i < 40; i++) probe.send(req('CON', 1000 + i, `k${i}`), ep.transport.address());
      await probe.count(40);
      assert.equal(calls, 40);
      assert.ok(ep.dedupBytes <= 10_000, `dedupBytes ${ep.dedupBytes}`);
      assert.ok(ep.dedupEntries <= Math.floor(10_000 / (DEDUP_ENTRY_OVERHEAD + 1000)) + 1, `entries ${ep.dedupEntries}`);
      assert.ok(ep.counters.dedupEvictions >= 40 - ep.dedupEntries);
      // the newest one is still held: its retransmission is answered from the cache, byte for byte
      const first = probe.replies.find((r) => decode(r).messageId === 1039);
      probe.send(req('CON', 1039, 'k39'), ep.transport.address());
      await probe.count(41);
      assert.deepEqual(probe.replies[40], first);
      assert.equal(calls, 40);
      assert.equal(ep.counters.duplicates, 1);
      // EXCHANGE_LIFETIME later everything is swept
      clock.advance(exchangeLifetime(DEFAULT_PARAMS));
      ep.sweep();
      assert.equal(ep.dedupEntries, 0);
      assert.equal(ep.dedupBytes, 0);
    });

    it('holds at most maxDedupEntries entries', async function () {
      const ep = await make({ maxDedupEntries: 10 }, (_r, ctx) => ctx.respond({ code: CODES.CONTENT }));
      for (let i = 0; i < 30; i++) probe.send(req('NON', 2000 + i, `n${i}`), ep.transport.address());
      await probe.count(30);
      assert.equal(ep.dedupEntries, 10);
      assert.equal(ep.dedupBytes, 10 * DEDUP_ENTRY_OVERHEAD + DEDUP_SOURCE_OVERHEAD); // one source, the probe
      assert.equal(ep.counters.dedupEvictions, 20);
    });

    it('respond(res, { keepReply: false }) keeps no reply bytes: a retransmission is dropped as a duplicate', async function () {
      let calls = 0;
      const ep = await make({}, (_r, ctx) => {
        calls++;
        ctx.respond({ code: CODES.CONTENT, payload: Buffer.alloc(500) }, { keepReply: false });
      });
      probe.send(req('CON', 3000, 'a'), ep.transport.address());
      const reply = decode(await probe.next());
      assert.equal(reply.type, 'ACK');
      assert.equal(reply.payload.length, 500);
      assert.equal(ep.dedupBytes, DEDUP_ENTRY_OVERHEAD + DEDUP_SOURCE_OVERHEAD);
      probe.send(req('CON', 3000, 'a'), ep.transport.address()); // retransmission
      probe.send(req('CON', 3001, 'b'), ep.transport.address()); // a marker: its reply comes after the duplicate was handled
      assert.equal(decode(await probe.next()).messageId, 3001);
      assert.equal(probe.replies.length, 2);
      assert.equal(ep.counters.duplicates, 1);
      assert.equal(calls, 2);
    });
  });

  describe('one empty-ACK path (RFC 7252 §4.2, §5.2.2)', function () {
    it('an ignored CON gets an empty ACK, and its retransmission the same ACK again', async function () {
      const ep = await make({}, (_r, ctx) => ctx.ignore());
      probe.send(req('CON', 4000, 'e'), ep.transport.address());
      const ack = await probe.next();
      assert.deepEqual(decode(ack), { type: 'ACK', code: 0, messageId: 4000, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) } satisfies CoapMessage);
      probe.send(req('CON', 4000, 'e'), ep.transport.address());
      assert.deepEqual(await probe.next(), ack);
      assert.equal(ep.dedupBytes, DEDUP_ENTRY_OVERHEAD + DEDUP_SOURCE_OVERHEAD + 4);
    });

    it('a slow answer: an empty ACK after SEPARATE_RESPONSE_AFTER, then the response as a CON', async function () {
      let answer: (() => void) | undefined;
      const ep = await make({}, (_r, ctx) => {
        answer = () => ctx.respond({ code: CODES.CONTENT, payload: Buffer.from('late') });
      });
      probe.send(req('CON', 4100, 's'), ep.transport.address());
      await once(ep.transport, 'datagram');
      clock.advance(DEFAULT_PARAMS.SEPARATE_RESPONSE_AFTER);
      const ack = decode(await probe.next());
      assert.equal(ack.type, 'ACK');
      assert.equal(ack.code, 0);
      answer!();
      const res = decode(await probe.next());
      assert.equal(res.type, 'CON');
      assert.equal(res.payload.toString(), 'late');
      // acknowledge it, so nothing is retransmitted
      probe.send(encode({ type: 'ACK', code: 0, messageId: res.messageId, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) }), ep.transport.address());
      await once(ep.transport, 'datagram');
      assert.equal(clock.pending, 0);
    });
  });

  describe('a request handler that throws', function () {
    it('an unexpected exception becomes an empty 5.00 and a handler-error event, never its message', async function () {
      const ep = await make({}, () => {
        throw new Error('internal detail: /etc/secret');
      });
      const errors: Error[] = [];
      ep.on('handler-error', (e: Error) => errors.push(e));
      probe.send(req('CON', 5000, 'x'), ep.transport.address());
      const res = decode(await probe.next());
      assert.equal(res.type, 'ACK');
      assert.equal(res.code, CODES.INTERNAL_SERVER_ERROR);
      assert.equal(res.payload.length, 0);
      assert.equal(errors.length, 1);
      assert.match(errors[0].message, /internal detail/);
      assert.equal(ep.counters.handlerErrors, 1);
      ep.counters.handlerErrors = 0; // seen and checked: let closeChecked pass
    });

    it('a thrown CoapResponseError becomes its own response, without a handler-error', async function () {
      const ep = await make({}, () => {
        throw new CoapResponseError({ responseCode: CODES.FORBIDDEN, diagnostic: 'not allowed', options: [{ number: OPT.MAX_AGE, value: encodeUint(5) }] });
      });
      probe.send(req('NON', 5100, 'y'), ep.transport.address());
      const res = decode(await probe.next());
      assert.equal(res.type, 'NON');
      assert.equal(res.code, CODES.FORBIDDEN);
      assert.equal(res.payload.toString(), 'not allowed');
      assert.deepEqual(res.options, [{ number: OPT.MAX_AGE, value: encodeUint(5) }]);
      assert.equal(ep.counters.handlerErrors, 0);
    });

    it('a request with an unknown critical option gets 4.02 with a fixed diagnostic (no client bytes)', async function () {
      const ep = await make({}, (_r, ctx) => ctx.respond({ code: CODES.CONTENT }));
      probe.send(encode(createMessage({ type: 'CON', code: CODES.GET, messageId: 5200, token: Buffer.from('z'), options: [{ number: 65001, value: Buffer.from('abc') }] })), ep.transport.address());
      const res = decode(await probe.next());
      assert.equal(res.code, CODES.BAD_OPTION);
      assert.equal(res.payload.toString(), 'unrecognized critical option');
    });
  });

  describe('a rejected piggybacked response (RFC 7252 §5.4.1)', function () {
    it('ends the request with ERR_BAD_RESPONSE (5.02) instead of leaving it pending for ever', async function () {
      const ep = await make();
      const pending = ep.request({ code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('r') }] }, probe.address());
      const sent = decode(await probe.next());
      assert.equal(sent.type, 'CON');
      // a piggybacked 2.05 with an unrecognized critical option (odd number 65001)
      probe.send(
        encode(createMessage({ type: 'ACK', code: CODES.CONTENT, messageId: sent.messageId, token: sent.token, options: [{ number: 65001, value: Buffer.from('x') }], payload: Buffer.from('v') })),
        ep.transport.address(),
      );
      await assert.rejects(pending, (e: unknown) => e instanceof CoapError && e.code === 'ERR_BAD_RESPONSE' && e.toResponse().code === CODES.BAD_GATEWAY);
      assert.equal(ep.activeExchanges, 0);
      assert.equal(ep.counters.unknownCriticalOptions, 1);
    });
  });

  describe('a group exchange cancelled after its deadline (groupcomm-bis §3.1, RFC 7959 follow-ups)', function () {
    it("still ends when a Block2 follow-up was pending: 'end' fires and the summary resolves", async function () {
      const ep = await make();
      // a member that answers block 0 of 2 and then never answers the follow-up
      const member = await UdpTransport.open({ bindAddress: '127.0.0.1', groups: [{ address: GROUP_V4, port: 0 }] });
      try {
        const next = () => new Promise<{ msg: CoapMessage; remote: { address: string; port: number } }>((r) => member.once('datagram', (dg: { data: Buffer; remote: { address: string; port: number } }) => r({ msg: decode(dg.data), remote: dg.remote })));
        const first = next();
        const ex = new GroupClient(ep).request({ uri: `coap://${GROUP_V4}:${member.groupPort()}/big`, timeout: 1000 });
        const req = await first;
        const second = next();
        member.send(
          encode(createMessage({ type: 'NON', code: CODES.CONTENT, messageId: 0x4242, token: req.msg.token, options: [{ number: OPT.BLOCK2, value: encodeUint((0 << 4) | (1 << 3) | 2) }], payload: Buffer.alloc(64, 0x61) })),
          req.remote,
        );
        const followUp = await second; // the client asks for block 1 by unicast
        assert.equal(followUp.msg.type, 'CON');
        let ended = false;
        ex.on('end', () => (ended = true));
        clock.advance(1000); // the deadline: collecting stops, the follow-up is still pending
        assert.equal(ended, false);
        ex.cancel();
        assert.equal(ended, true);
        const summary = await ex.summary;
        assert.equal(summary.cancelled, true);
      } finally {
        await member.close();
      }
      clock.advance(exchangeLifetime(DEFAULT_PARAMS)); // let the abandoned follow-up's CON run out on the fake clock
    });
  });

  describe('retired tokens capped (groupcomm-bis §3.1.5)', function () {
    it('refuses new group tokens at maxRetiredTokens, never forgets a retired one early, and frees slots after MIN_TOKEN_REUSE_TIME', async function () {
      // 4-byte tokens are random and kept in the retired map (8-byte ones are counters: see the next test)
      const ep = await make({ maxRetiredTokens: 3, tokenLength: 4 });
      const t1 = ep.newToken();
      const stop1 = ep.listen(t1, () => undefined);
      const stop2 = ep.listen(ep.newToken(), () => undefined);
      const once1 = ep.newOneShotToken();
      assert.equal(ep.canRetireToken(), false);
      const refused = (fn: () => unknown) =>
        assert.throws(fn, (e: unknown) => e instanceof CoapError && e.code === 'ERR_TOO_MANY_TOKENS' && e.toResponse().code === CODES.SERVICE_UNAVAILABLE);
      refused(() => ep.listen(ep.newToken(), () => undefined));
      refused(() => ep.newOneShotToken());
      const port = await freeGroupPort();
      refused(() => ep.groupRequest({ code: CODES.GET }, { address: GROUP_V4, port }, 100, () => undefined, () => undefined));
      assert.equal(ep.counters.tokensRefused, 3);
      stop1();
      stop2();
      assert.equal(ep.retiredTokens, 3);
      assert.equal(ep.isTokenBusy(t1), true);
      assert.equal(ep.isTokenBusy(once1), true);
      clock.advance(minTokenReuseTime(DEFAULT_PARAMS) - 1);
      assert.equal(ep.isTokenBusy(t1), true);
      assert.equal(ep.canRetireToken(), false);
      clock.advance(1);
      assert.equal(ep.isTokenBusy(t1), false);
      assert.equal(ep.retiredTokens, 0);
      assert.equal(ep.canRetireToken(), true);
    });

    it('8-byte tokens are counter + 32 random bits: never repeated, never stored when retired, late group responses dropped without RST, late unicast responses reset', async function () {
      const ep = await make({ maxRetiredTokens: 10 });
      const seen = new Set<string>();
      const counters: number[] = [];
      for (let i = 0; i < 2000; i++) {
        const t = ep.newOneShotToken();
        assert.equal(t.length, 8);
        seen.add(t.toString('hex'));
        counters.push(t.readUInt32BE(0));
      }
      assert.equal(seen.size, 2000);
      // consecutive even counters (groupcomm-bis §3.1.5 without a map entry per retired token)
      for (let i = 1; i < counters.length; i++) assert.equal((counters[i] - counters[i - 1]) >>> 0, 2);
      assert.equal(counters[0] % 2, 0);
      assert.equal(ep.retiredTokens, 0);
      assert.equal(ep.canRetireToken(), true);
      assert.equal(ep.isTokenBusy(Buffer.from([...seen][0], 'hex')), true);

      // a group request that ended: its late response is dropped silently (groupcomm-bis §3.1.5)
      const g = ep.groupRequest({ code: CODES.GET }, probe.address(), 100, () => undefined, () => undefined);
      const sent = decode(await probe.next());
      assert.deepEqual(sent.token, g.token);
      g.cancel();
      const late = (token: Buffer, messageId: number) =>
        encode(createMessage({ type: 'NON', code: CODES.CONTENT, messageId, token, payload: Buffer.from('late') }));
      const handled = once(ep.transport, 'datagram'); // the endpoint's own listener runs first
      probe.send(late(g.token, 7001), ep.transport.address());
      await handled;
      assert.equal(ep.counters.lateGroupResponses, 1);
      assert.equal(ep.counters.resetsSent, 0);

      // an even counter never drawn yet is not ours: an unmatched NON response from a unicast source gets RST
      const future = Buffer.from(g.token);
      future.writeUInt32BE((g.token.readUInt32BE(0) + 1000) >>> 0, 0);
      probe.send(late(future, 7002), ep.transport.address());
      assert.equal(decode(await probe.next()).type, 'RST');

      // a unicast request (odd counter): a late response after it completed gets RST (RFC 7252 §4.2)
      const pending = ep.request({ code: CODES.GET, type: 'NON' }, probe.address());
      const uni = decode(await probe.next());
      assert.equal(uni.token.length, 8);
      assert.equal(uni.token.readUInt32BE(0) % 2, 1);
      probe.send(late(uni.token, 7003), ep.transport.address());
      assert.equal((await pending).message.payload.toString(), 'late');
      probe.send(late(uni.token, 7004), ep.transport.address());
      assert.equal(decode(await probe.next()).type, 'RST');
      assert.equal(ep.counters.lateGroupResponses, 1);
    });

    it('newToken() gives up instead of looping when every short token is taken', async function () {
      const ep = await make({ tokenLength: 1 });
      for (let i = 0; i < 256; i++) ep.retireToken(Buffer.from([i]));
      assert.throws(() => ep.newToken(), (e: unknown) => e instanceof CoapError && e.code === 'ERR_TOO_MANY_TOKENS');
      ep.counters.tokensRefused = 0;
    });
  });
});
