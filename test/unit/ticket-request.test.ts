// The ticket request of multicast-notifications-proxy-02 §4 against hand-computed bytes (tp_info of
// observe-multicast-notifications-15 §4.2.1.1, nested form), and the proxy's rejections.

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { encodeInformativeResponse } from '../../src/cbor/informative-response';
import { encode, encodeCodeOptionsPayload } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption } from '../../src/coap/message';
import { OPT, encodeUint } from '../../src/coap/options';
import { CoapEndpoint, ResponseContext } from '../../src/messaging/endpoint';
import { decodeLtmr, buildTicketRequest, encodeLtmr, isTicketRequest, TicketError } from '../../src/observe/ticket-request';
import { TicketListener } from '../../src/observe/ticket-listener';
import { GroupMembership, Transport } from '../../src/transport/udp-transport';
import { decodeInformativeResponse } from '../../src/cbor/informative-response';

const hex = (b: Buffer) => b.toString('hex');
// observe-multicast-notifications-15 §4.2.1.1 example: SRV 2001:db8::ab (port 5683 omitted), GRP ff35:30:2001:db8::23 port 61616, token 0x7b.
const TP = { server: { host: '2001:db8::ab', port: 5683 }, client: { host: 'ff35:30:2001:db8::23', port: 61616 }, token: Buffer.from([0x7b]) };
const TP_NESTED = '838220815020010db80000000000000000000000ab82208250ff35003020010db8000000000000002319f0b0417b';
// ph_req: GET | Observe 0 (delta 6, len 0) | Uri-Path (delta 5, len 5) "alarm"
const PH_REQ = Buffer.from('016055' + '616c61726d', 'hex');
const TARGET = 'coap://[2001:db8::ab]/alarm';
const LTMR = 47;

/** A transport with no sockets: joins are recorded, nothing is sent. */
class FakeTransport extends EventEmitter implements Transport {
  readonly counters = { received: 0, sent: 0, bytesReceived: 0, bytesSent: 0, sendErrors: 0, socketErrors: 0 };
  readonly joined: GroupMembership[] = [];
  readonly left: string[] = [];
  readonly sent: Buffer[] = [];
  constructor(readonly family: 'udp4' | 'udp6') {
    super();
  }
  send(data: Buffer): void {
    this.sent.push(data);
  }
  address() {
    return { address: '::1', port: 5683 };
  }
  async close(): Promise<void> {}
  async joinGroup(g: GroupMembership): Promise<void> {
    this.joined.push(g);
  }
  async leaveGroup(address: string): Promise<void> {
    this.left.push(address);
  }
}

function recorder(): { ctx: ResponseContext; answers: ({ code: number; payload?: Buffer } | 'ignored')[] } {
  const answers: ({ code: number; payload?: Buffer } | 'ignored')[] = [];
  return { answers, ctx: { respond: (r) => answers.push(r), ignore: () => answers.push('ignored') } };
}

describe('ticket request (multicast-notifications-proxy-02 §4)', function () {
  const ir = { tpInfo: TP, phReq: PH_REQ };

  it('LTMR value = the serialized tp_info, nested form (observe-multicast-notifications-15 §4.2.1.1 example, authority nested per its CDDL)', function () {
    assert.equal(hex(encodeLtmr(TP)), TP_NESTED);
    assert.deepEqual(decodeLtmr(Buffer.from(TP_NESTED, 'hex')), { ...TP, server: { ...TP.server, zone: undefined }, client: { ...TP.client, zone: undefined } });
  });

  it('ticket bytes by hand: ph_req code and options, Observe 0, Proxy-Uri instead of Uri-Path, LTMR', function () {
    const msg = buildTicketRequest(ir, TARGET, Buffer.from([0x4a]));
    msg.messageId = 0x1234;
    const expected =
      '41' + '01' + '1234' + '4a' + // CON, TKL 1 | GET | MID | token
      '60' + // Observe (delta 6, length 0) = 0
      'dd100e' + Buffer.from(TARGET).toString('hex') + // Proxy-Uri: delta 13+16 = 29 (-> 35), length 13+14 = 27
      'cd21' + TP_NESTED; // LTMR: delta 12 (-> 47), length 13+0x21 = 46
    assert.equal(hex(encode(msg)), expected);
    assert.ok(isTicketRequest(msg));
  });

  it('with Proxy-Scheme: every ph_req option is kept, plus Proxy-Scheme and Uri-Host', function () {
    const msg = buildTicketRequest(ir, TARGET, Buffer.from([0x4a]), { proxyScheme: true });
    const view = msg.options.map((o) => [o.number, o.number === LTMR ? hex(o.value) : o.value.toString()]);
    assert.deepEqual(view, [[OPT.URI_HOST, '[2001:db8::ab]'], [OPT.OBSERVE, ''], [OPT.URI_PATH, 'alarm'], [OPT.PROXY_SCHEME, 'coap'], [LTMR, TP_NESTED]]);
  });

  it('ph_req is taken opaquely: a protected FETCH keeps its outer options and ciphertext, Observe is set to 0', function () {
    // OMN-15 §10 style: FETCH, OSCORE [PIV 0x01f5, kid context 0x57ab2e, kid 0x05], Observe 0, 0xff ciphertext
    const oscore = Buffer.from('1a01f50357ab2e05', 'hex');
    const ct = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const ph = encodeCodeOptionsPayload(CODES.FETCH, [{ number: OPT.OBSERVE, value: encodeUint(3) }, { number: OPT.OSCORE, value: oscore }], ct);
    const msg = buildTicketRequest({ tpInfo: TP, phReq: ph }, TARGET, Buffer.from([1]));
    assert.equal(msg.code, CODES.FETCH);
    assert.ok(getOption(msg, OPT.OSCORE)!.equals(oscore));
    assert.equal(getOption(msg, OPT.OBSERVE)!.length, 0);
    assert.ok(msg.payload.equals(ct));
  });

  it('refuses to build a ticket without tp_info or ph_req, or whose ph_req names another resource', function () {
    assert.throws(() => buildTicketRequest({ phReq: PH_REQ }, TARGET, Buffer.from([1])), TicketError);
    assert.throws(() => buildTicketRequest({ tpInfo: TP }, TARGET, Buffer.from([1])), TicketError);
    assert.throws(() => buildTicketRequest(ir, 'coap://[2001:db8::ab]/other', Buffer.from([1])), /not for the target/);
  });

  describe('proxy: TicketListener', function () {
    let listenT: FakeTransport;
    let upT: FakeTransport;
    let listen: CoapEndpoint;
    let upstream: CoapEndpoint;
    let tickets: TicketListener;
    beforeEach(function () {
      listenT = new FakeTransport('udp6');
      upT = new FakeTransport('udp6');
      listen = new CoapEndpoint(listenT);
      upstream = new CoapEndpoint(upT);
      tickets = new TicketListener(listen, upstream, { groupInterface: '::%lo' });
    });
    afterEach(async function () {
      tickets.close();
      await listen.close();
      await upstream.close();
    });

    const remote = { address: '::1', port: 40000 };
    const ticket = (patch: (m: CoapMessage) => void = () => undefined): CoapMessage => {
      const m = buildTicketRequest(ir, TARGET, Buffer.from([0x4a]));
      patch(m);
      return m;
    };
    const setOpt = (m: CoapMessage, o: CoapOption) => (m.options = [...m.options.filter((x) => x.number !== o.number), o].sort((a, b) => a.number - b.number));

    it('a valid ticket is not forwarded: the proxy joins tpi_client, rebuilds the phantom request = ph_req, answers an empty ACK', async function () {
      const r = recorder();
      assert.ok(tickets.wants(ticket(), remote));
      tickets.handle({ message: ticket(), remote }, r.ctx);
      await new Promise((res) => setImmediate(res));
      assert.deepEqual(r.answers, ['ignored']);
      assert.deepEqual(upT.joined, [{ address: 'ff35:30:2001:db8::23', port: 61616, interfaces: ['::%lo'] }]);
      assert.equal(upT.sent.length, 0, 'nothing goes to the server');
      const [l] = tickets.listening();
      assert.equal(hex(l.phantom), hex(PH_REQ));
      assert.equal(tickets.clientCount(), 1);
      // a deregistration (Observe 1, same token, no LTMR) is taken by the listener too, and ends the listening
      const dereg = createMessage({ code: CODES.GET, token: Buffer.from([0x4a]), options: [{ number: OPT.OBSERVE, value: encodeUint(1) }, { number: OPT.PROXY_URI, value: Buffer.from(TARGET) }] });
      assert.ok(tickets.wants(dereg, remote));
      tickets.handle({ message: dereg, remote }, recorder().ctx);
      assert.equal(tickets.observationCount, 0);
      await new Promise((res) => setImmediate(res));
      assert.deepEqual(upT.left, ['ff35:30:2001:db8::23']);
    });

    const rejections: [string, (m: CoapMessage) => void, string, RegExp][] = [
      ['an LTMR that is not CBOR', (m) => setOpt(m, { number: LTMR, value: Buffer.from('ffffff', 'hex') }), '4.00', /not CBOR/],
      ['an LTMR that is CBOR but not tp_info', (m) => setOpt(m, { number: LTMR, value: Buffer.from('83010203', 'hex') }), '4.00', /not a tp_info/],
      ['an LTMR with a 9-byte tpi_token', (m) => setOpt(m, { number: LTMR, value: Buffer.from(TP_NESTED.slice(0, -4) + '49' + '000102030405060708', 'hex') }), '4.00', /not a tp_info/],
      ['LTMR in a POST', (m) => (m.code = CODES.POST), '4.00', /GET or FETCH with Observe 0/],
      ['LTMR in a GET without Observe', (m) => (m.options = m.options.filter((o) => o.number !== OPT.OBSERVE)), '4.00', /Observe 0/],
      ['LTMR in a deregistration (Observe 1)', (m) => setOpt(m, { number: OPT.OBSERVE, value: encodeUint(1) }), '4.00', /Observe 0/],
      ['a tpi_server that is not the target', (m) => setOpt(m, { number: OPT.PROXY_URI, value: Buffer.from('coap://[2001:db8::cd]/alarm') }), '4.00', /not the target/],
      ['a tpi_client that is not multicast', (m) => setOpt(m, { number: LTMR, value: encodeLtmr({ ...TP, client: { host: '2001:db8::1', port: 61616 } }) }), '4.00', /not a multicast/],
      ['no target', (m) => (m.options = m.options.filter((o) => o.number !== OPT.PROXY_URI)), '4.00', /Proxy-Uri/],
      ['an IPv4 group on an IPv6 upstream', (m) => {
        setOpt(m, { number: LTMR, value: encodeLtmr({ server: { host: '192.0.2.1', port: 5683 }, client: { host: '239.255.0.1', port: 5683 }, token: Buffer.from([1]) }) });
        setOpt(m, { number: OPT.PROXY_URI, value: Buffer.from('coap://192.0.2.1/alarm') });
      }, '5.02', /cannot listen to a group of that address family/],
    ];
    for (const [why, patch, code, diag] of rejections) {
      it(`rejects ${why}: ${code} with a diagnostic, listens to nothing`, function () {
        const r = recorder();
        const m = ticket(patch);
        assert.ok(isTicketRequest(m));
        tickets.handle({ message: m, remote }, r.ctx);
        assert.equal(r.answers.length, 1);
        const a = r.answers[0] as { code: number; payload: Buffer };
        assert.equal(codeToString(a.code), code);
        assert.match(a.payload.toString(), diag);
        assert.equal(upT.joined.length, 0);
        assert.equal(tickets.observationCount, 0);
      });
    }

    it('an error response never echoes the client\'s LTMR: a fixed diagnostic goes out, the details stay in the \'rejected\' event', function () {
      const host = '2001:db8::bad:beef';
      const cases: [CoapOption, string][] = [
        [{ number: LTMR, value: encodeLtmr({ ...TP, client: { host, port: 61616 } }) }, 'tpi_client is not a multicast address'],
        [{ number: LTMR, value: encodeLtmr({ ...TP, server: { host: 'ff02::bad:beef', port: 5683 } }) }, 'tpi_server is a multicast address'],
        [{ number: LTMR, value: Buffer.concat([Buffer.from('83', 'hex'), Buffer.from('7f', 'hex'), Buffer.from('bad:beef')]) }, 'Listen-To-Multicast-Responses is not CBOR'],
        [{ number: LTMR, value: Buffer.from('bad:beef') }, 'Listen-To-Multicast-Responses is not CBOR'],
      ];
      const details: string[] = [];
      tickets.on('rejected', (r: { reason: string }) => details.push(r.reason));
      for (const [opt, fixed] of cases) {
        const r = recorder();
        tickets.handle({ message: ticket((m) => setOpt(m, opt)), remote }, r.ctx);
        const a = r.answers[0] as { code: number; payload: Buffer };
        assert.equal(codeToString(a.code), '4.00');
        assert.equal(a.payload.toString(), fixed);
        assert.ok(!a.payload.toString().includes('bad:beef'), 'no text of the option in the response');
        assert.ok(!a.payload.includes(opt.value), 'no bytes of the option in the response');
      }
      assert.equal(details.length, cases.length);
      assert.match(details[0], /2001:db8::bad:beef/, 'the local event keeps the details');
    });

    it('a second ticket for the same (server, group, token) with another phantom request is refused', async function () {
      tickets.handle({ message: ticket(), remote }, recorder().ctx);
      const r = recorder();
      const other = buildTicketRequest({ tpInfo: TP, phReq: Buffer.from('0160', 'hex') }, 'coap://[2001:db8::ab]/', Buffer.from([0x4b]));
      tickets.handle({ message: other, remote }, r.ctx);
      assert.equal(codeToString((r.answers[0] as { code: number }).code), '4.00');
      await new Promise((res) => setImmediate(res));
      assert.equal(upT.joined.length, 1);
    });

    it('the informative response round trip: the ticket built from a decoded informative response validates', function () {
      const decoded = decodeInformativeResponse(encodeInformativeResponse(ir));
      const r = recorder();
      tickets.handle({ message: buildTicketRequest(decoded, TARGET, Buffer.from([9])), remote }, r.ctx);
      assert.equal(tickets.observationCount, 1);
    });
  });
});
