// Nested OSCORE layers (draft-ietf-core-oscore-capable-proxies-07): the option escalation of §2.2 step by step
// (App. C), layers on an outgoing request in the order of §2.3, the incoming-request loop of §2.4 (App. D) in the
// shape of App. B.1, responses with the removed layers in reverse order and their Partial IVs (§2.5, §2.5.1), incoming
// responses (§2.6, §2.6.1), the layer limit (§2.1), errors per RFC 8613 §8.2 under outer layers, and the 4.02 / 5.02
// rule for options a proxy cannot protect.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { decode, encode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, getOptions } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { ContextRegistry, MemorySequenceStore, SecurityContext, decodeOscoreOption, decodePartialIv, isProtected, unprotectResponse } from '../../src/oscore';
import {
  CLIENT_TO_PROXY_VIEW,
  END_TO_END_VIEW,
  LayerError,
  PROXY_TO_CLIENT_VIEW,
  assertRecognized,
  escalate,
  escalatedOptions,
  firstUnrecognizedOption,
  oscoreClientId,
  oscoreServerTransform,
  protectRequestLayers,
  protectResponseLayers,
  proxyRelatedKind,
  rebindResponses,
  removeRequestLayers,
  unprotectResponseLayers,
} from '../../src/oscore/nested';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const opt = (number: number, value: string | number | Buffer): CoapOption => ({
  number,
  value: Buffer.isBuffer(value) ? value : typeof value === 'number' ? encodeUint(value) : Buffer.from(value, 'utf8'),
});
const wire = (m: CoapMessage): CoapMessage => decode(encode(m));
const asResponse = (token: Buffer, parts: { code: number; options: CoapOption[]; payload: Buffer }, messageId = 7): CoapMessage => wire({ type: 'NON', messageId, token, ...parts });

/** Two ends of one OSCORE association: `a` sends with Sender ID `aId`, `b` with `bId`. */
function assoc(aId: string, bId: string, opts: { idContext?: Buffer; bOpts?: Parameters<typeof SecurityContext.derive>[1] } = {}) {
  const base = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), ...(opts.idContext ? { idContext: opts.idContext } : {}) };
  return {
    a: SecurityContext.derive({ ...base, senderId: h(aId), recipientId: h(bId) }),
    b: SecurityContext.derive({ ...base, senderId: h(bId), recipientId: h(aId) }, opts.bOpts),
    base,
  };
}

const piv = (m: { options: CoapOption[] }): number | undefined => {
  const f = decodeOscoreOption(getOption(m, OPT.OSCORE)!);
  return f.piv ? decodePartialIv(f.piv) : undefined;
};

function layerError(code: string, responseCode?: number) {
  return (err: unknown) => {
    assert.ok(err instanceof LayerError, `not a LayerError: ${String(err)}`);
    assert.equal(err.code, code);
    if (responseCode !== undefined) assert.equal(err.responseCode, responseCode);
    return true;
  };
}

describe('nested OSCORE layers (oscore-capable-proxies-07)', function () {
  describe('§2.2 escalation of class U/I options, step by step (App. C)', function () {
    const base = { sender: 'C', peer: 'P', nextHop: 'P', addedBy: 'C', proxyScheme: false };
    const cases: { name: string; q: Parameters<typeof escalate>[0]; classE: boolean; steps: number[] }[] = [
      { name: 'Proxy-Scheme for the proxy, its immediately next consumer: E', q: { ...base, option: OPT.PROXY_SCHEME, consumers: ['P'] }, classE: true, steps: [1, 2, 3, 5, 6, 8] },
      { name: 'Uri-Host for a forward proxy (Proxy-Scheme present): E', q: { ...base, option: OPT.URI_HOST, consumers: ['P', 'S'], proxyScheme: true }, classE: true, steps: [1, 2, 3, 5, 6, 7, 8] },
      { name: 'Uri-Host for a reverse proxy (no Proxy-Scheme): U', q: { ...base, option: OPT.URI_HOST, consumers: ['P'] }, classE: false, steps: [1, 2, 3, 5, 6, 7, 9] },
      { name: 'an option the proxy needs to remove the layer: U', q: { ...base, option: OPT.PROXY_URI, consumers: ['P'], neededForRemoval: true }, classE: false, steps: [1, 2, 3, 5, 9] },
      { name: 'the inner OSCORE option, for the server, in the proxy\'s layer: E', q: { ...base, option: OPT.OSCORE, consumers: ['S'] }, classE: true, steps: [1, 2, 4, 6, 8] },
      { name: 'Uri-Host end to end (X = S, a consumer, but not the next one): U', q: { ...base, peer: 'S', option: OPT.URI_HOST, consumers: ['P', 'S'], proxyScheme: true }, classE: false, steps: [1, 2, 3, 9] },
      { name: 'Proxy-Scheme end to end (X = S is no consumer; the next hop P is the next consumer): U', q: { ...base, peer: 'S', option: OPT.PROXY_SCHEME, consumers: ['P'] }, classE: false, steps: [1, 2, 4, 9] },
      { name: 'an option added by someone else, X the next hop: E', q: { ...base, addedBy: 'S', peer: 'C', nextHop: 'C', sender: 'P', option: optionNumber('Reply-From'), consumers: ['C'] }, classE: true, steps: [1, 4, 6, 8] },
      { name: 'an option added by someone else, for the next hop that is not X: U', q: { ...base, addedBy: 'S', peer: 'C', nextHop: 'P2', sender: 'P1', option: OPT.HOP_LIMIT, consumers: ['P2'] }, classE: false, steps: [1, 4, 9] },
      { name: 'an option nobody consumes: E (the next hop is not its next consumer)', q: { ...base, peer: 'S', option: OPT.HOP_LIMIT, consumers: [] }, classE: true, steps: [1, 2, 4, 6, 8] },
    ];
    for (const c of cases) {
      it(c.name, function () {
        assert.deepEqual(escalate(c.q), { classE: c.classE, steps: c.steps });
      });
    }

    it('options that are class E or E+U keep RFC 8613 processing (no steps)', function () {
      assert.deepEqual(escalate({ ...base, option: OPT.URI_PATH, consumers: ['S'] }), { classE: true, steps: [] });
      assert.deepEqual(escalate({ ...base, option: OPT.OBSERVE, consumers: ['P', 'S'] }), { classE: false, steps: [] });
      assert.deepEqual(escalate({ ...base, option: OPT.MAX_AGE, consumers: ['P'] }), { classE: false, steps: [] });
    });

    it('client through a group proxy: Multicast-Timeout, Proxy-Uri, Hop-Limit stay Outer end to end and become Inner for the proxy (oscore-capable-proxies-07 §2.2, §3)', function () {
      const mt = optionNumber('Multicast-Timeout');
      const options = [opt(OPT.PROXY_URI, 'coap://224.0.1.187/light'), opt(mt, 3), opt(OPT.HOP_LIMIT, 8), opt(OPT.URI_PATH, 'x')];
      assert.deepEqual(escalatedOptions(options, END_TO_END_VIEW), []);
      // after the end-to-end layer, its OSCORE option is in the message too
      assert.deepEqual(escalatedOptions([...options, opt(OPT.OSCORE, h('0905'))], CLIENT_TO_PROXY_VIEW), [mt, OPT.OSCORE, OPT.HOP_LIMIT, OPT.PROXY_URI].sort((a, b) => a - b));
      // The proxy's layer of a relayed response: Reply-From (added by the proxy) and the server's OSCORE option.
      assert.deepEqual(escalatedOptions([opt(optionNumber('Reply-From'), h('81830139')), opt(OPT.OSCORE, Buffer.alloc(0))], PROXY_TO_CLIENT_VIEW), [OPT.OSCORE, optionNumber('Reply-From')]);
    });

    it('proxy-related options (OCP-07 §1.1)', function () {
      assert.equal(proxyRelatedKind({ options: [opt(OPT.PROXY_URI, 'coap://a')] }), 'forward');
      assert.equal(proxyRelatedKind({ options: [opt(OPT.URI_HOST, 'a'), opt(OPT.PROXY_SCHEME, 'coap')] }), 'forward');
      assert.equal(proxyRelatedKind({ options: [opt(OPT.URI_HOST, 'a')] }), 'reverse');
      assert.equal(proxyRelatedKind({ options: [opt(OPT.URI_PATH, 'a')] }), 'reverse');
      assert.equal(proxyRelatedKind({ options: [opt(OPT.OSCORE, h('09')), opt(optionNumber('Multicast-Timeout'), 0)] }), undefined);
    });
  });

  describe('App. B.1: forward proxy, OSCORE client-server and client-proxy', function () {
    function setup() {
      const cs = assoc('5f', '01'); // client Sender ID 0x5f towards the server
      const cp = assoc('20', '02'); // client Sender ID 0x20 towards the proxy
      const proxyContexts = new ContextRegistry().add(cp.b);
      const serverContexts = new ContextRegistry().add(cs.b);
      const original = createMessage({
        type: 'CON', code: CODES.GET, messageId: 1, token: h('8c'),
        options: [opt(OPT.URI_HOST, 'example.com'), opt(OPT.URI_PATH, 'alarm_status'), opt(OPT.PROXY_SCHEME, 'coap')],
      });
      return { cs, cp, proxyContexts, serverContexts, original };
    }
    const forwardOnly = (m: CoapMessage) => proxyRelatedKind(m) === 'forward';

    it('the request: end-to-end layer first, the proxy\'s last; only the outer OSCORE option is visible', function () {
      const { cs, cp, original } = setup();
      const { message, layers } = protectRequestLayers(original, [
        { context: cs.a, view: END_TO_END_VIEW },
        { context: cp.a, view: CLIENT_TO_PROXY_VIEW },
      ]);
      assert.equal(message.code, CODES.POST);
      assert.deepEqual(message.options.map((o) => o.number), [OPT.OSCORE]);
      assert.deepEqual(decodeOscoreOption(getOption(message, OPT.OSCORE)!).kid, h('20'));
      assert.deepEqual(layers.map((l) => l.binding.kid.toString('hex')), ['5f', '20']);
      assert.deepEqual(layers[0].classE, []);
      assert.deepEqual(layers[1].classE, [OPT.URI_HOST, OPT.OSCORE, OPT.PROXY_SCHEME]);
    });

    it('the proxy removes its layer and stops at the proxy-related options; the server removes the rest; responses go back in reverse order', function () {
      const { cs, cp, proxyContexts, serverContexts, original } = setup();
      const out = protectRequestLayers(original, [
        { context: cs.a, view: END_TO_END_VIEW },
        { context: cp.a, view: CLIENT_TO_PROXY_VIEW },
      ]);
      // §2.4 at the proxy: step 5-6 (OSCORE), back to step 1, step 2 (Proxy-Scheme + Uri-Host): hand over for forwarding.
      const atProxy = removeRequestLayers(wire(out.message), { contexts: proxyContexts, proxyRelated: forwardOnly });
      assert.equal(atProxy.proxied, true);
      assert.equal(atProxy.layers.length, 1);
      assert.equal(oscoreClientId(atProxy.layers[0].context), '20');
      assert.equal(atProxy.message.code, CODES.POST);
      assert.deepEqual(atProxy.message.options.map((o) => o.number), [OPT.URI_HOST, OPT.OSCORE, OPT.PROXY_SCHEME]);
      assert.deepEqual(decodeOscoreOption(getOption(atProxy.message, OPT.OSCORE)!).kid, h('5f'));
      // P -> S: consumes Proxy-Scheme, new token 0x7b.
      const toServer = wire({ ...atProxy.message, token: h('7b'), options: atProxy.message.options.filter((o) => o.number !== OPT.PROXY_SCHEME) });
      const atServer = removeRequestLayers(toServer, { contexts: serverContexts });
      assert.equal(atServer.proxied, false);
      assert.equal(atServer.message.code, CODES.GET);
      assert.deepEqual(getOptions(atServer.message, OPT.URI_PATH).map(String), ['alarm_status']);
      // S -> P: 2.04, OSCORE empty, {2.05, "0"}; P -> C: 2.04, OSCORE empty, {2.04, OSCORE empty, ...}
      const fromServer = protectResponseLayers(atServer.layers, { code: CODES.CONTENT, options: [], payload: Buffer.from('0') });
      assert.equal(fromServer.code, CODES.CHANGED);
      assert.equal(getOption(fromServer, OPT.OSCORE)!.length, 0);
      const fromProxy = protectResponseLayers(atProxy.layers, fromServer);
      assert.equal(fromProxy.code, CODES.CHANGED);
      assert.deepEqual(fromProxy.options, [{ number: OPT.OSCORE, value: Buffer.alloc(0) }]);
      // §2.6 at the client: the layers come off in reverse order of application.
      const got = unprotectResponseLayers(asResponse(out.message.token, fromProxy), [{ binding: out.layers[0].binding }, { binding: out.layers[1].binding }]);
      assert.equal(got.message.code, CODES.CONTENT);
      assert.equal(got.message.payload.toString(), '0');
      assert.equal(got.verified.length, 2);
    });

    it('§2.5.1: several responses to one request: every one but the first carries a Partial IV; the client takes at most one without (§2.6.1)', function () {
      const cp = assoc('20', '02');
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('8c'), options: [opt(OPT.PROXY_URI, 'coap://224.0.1.187/x'), opt(optionNumber('Multicast-Timeout'), 2)] }), [
        { context: cp.a, view: CLIENT_TO_PROXY_VIEW, multipleResponses: true },
      ]);
      const atProxy = removeRequestLayers(wire(out.message), { contexts: new ContextRegistry().add(cp.b), proxyRelated: forwardOnly });
      assert.equal(decodeUint(getOption(atProxy.message, optionNumber('Multicast-Timeout'))!), 2);
      const relayed = [0, 1, 2, 3].map((i) => protectResponseLayers(atProxy.layers, { code: CODES.CONTENT, options: [opt(optionNumber('Reply-From'), h('818301440a000002'))], payload: Buffer.from(`r${i}`) }));
      assert.deepEqual(relayed.map(piv), [undefined, 0, 1, 2]);
      // Reply-From travelled Inner
      assert.ok(relayed.every((r) => r.options.length === 1 && r.options[0].number === OPT.OSCORE));
      const b = out.layers[0].binding;
      const order = [2, 0, 3, 1];
      for (const i of order) assert.equal(unprotectResponse(b, asResponse(h('8c'), relayed[i], 100 + i)).message.payload.toString(), `r${i}`);
      // replays of each, including the one without Partial IV
      for (const i of order) assert.throws(() => unprotectResponse(b, asResponse(h('8c'), relayed[i], 200 + i)), (e: unknown) => (e as { code?: string }).code === 'ERR_OSCORE_REPLAY');
      // the proxy cannot send a second response without Partial IV
      assert.throws(() => protectResponseLayers(atProxy.layers, { code: CODES.CONTENT, options: [], payload: Buffer.from('x') }, { partialIv: false }), (e: unknown) => (e as { code?: string }).code === 'ERR_OSCORE_INVALID_INPUT');
    });
  });

  describe('§2.1 layer limit and errors under outer layers (§2.4 step 6, §2.5)', function () {
    it('outgoing: more layers than the limit abort the sending before any Sequence Number is used', function () {
      const x = assoc('01', '02');
      const y = assoc('03', '04');
      const z = assoc('05', '06');
      assert.throws(() => protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: x.a }, { context: y.a }, { context: z.a }]), layerError('ERR_OSCORE_LAYER_LIMIT'));
      assert.deepEqual([x.a, y.a, z.a].map((c) => c.sequence.peek()), [0, 0, 0]);
      assert.doesNotThrow(() => protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: x.a }, { context: y.a }, { context: z.a }], { maxLayers: 3 }));
    });

    it('incoming: one layer more than allowed gives 4.01, protected with the layers removed so far', function () {
      const l1 = assoc('20', '02');
      const l2 = assoc('21', '03');
      const contexts = new ContextRegistry().add(l1.b).add(l2.b);
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('01') }), [{ context: l2.a }, { context: l1.a }]);
      assert.throws(
        () => removeRequestLayers(wire(out.message), { contexts, maxLayers: 1 }),
        (err: unknown) => {
          assert.ok(err instanceof LayerError && err.code === 'ERR_OSCORE_LAYER_LIMIT' && err.responseCode === CODES.UNAUTHORIZED);
          assert.equal(err.layers.length, 1);
          assert.equal(err.response!.code, CODES.CHANGED, 'protected: Outer code 2.04');
          const r = unprotectResponse(out.layers[1].binding, asResponse(h('01'), err.response as never));
          assert.equal(codeToString(r.message.code), '4.01');
          return true;
        },
      );
      // with a limit of 2 both come off
      const again = protectRequestLayers(createMessage({ code: CODES.GET, token: h('01') }), [{ context: l2.a }, { context: l1.a }]);
      assert.equal(removeRequestLayers(wire(again.message), { contexts, maxLayers: 2 }).layers.length, 2);
    });

    it('an RFC 8613 §8.2 error at the second layer is protected with the first (4.01 "Security context not found" inside)', function () {
      const l1 = assoc('20', '02');
      const unknown = assoc('77', '78');
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('02') }), [{ context: unknown.a }, { context: l1.a }]);
      assert.throws(
        () => removeRequestLayers(wire(out.message), { contexts: new ContextRegistry().add(l1.b) }),
        (err: unknown) => {
          assert.ok(err instanceof LayerError && err.code === 'ERR_OSCORE_LAYER_FAILED');
          assert.equal(err.responseCode, CODES.UNAUTHORIZED);
          const r = unprotectResponse(out.layers[1].binding, asResponse(h('02'), err.response as never));
          assert.equal(codeToString(r.message.code), '4.01');
          assert.equal(r.message.payload.toString(), 'Security context not found');
          assert.equal(getOption(r.message, OPT.MAX_AGE)!.length, 0, 'Max-Age 0');
          return true;
        },
      );
    });

    it('at the first layer the error goes back unprotected: replay 4.01, wrong key 4.00, unknown kid 4.01', function () {
      const l1 = assoc('20', '02');
      const contexts = new ContextRegistry().add(l1.b);
      const out = protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: l1.a }]);
      removeRequestLayers(wire(out.message), { contexts });
      const check = (m: CoapMessage, code: string, text: string) =>
        assert.throws(
          () => removeRequestLayers(wire(m), { contexts }),
          (err: unknown) => {
            assert.ok(err instanceof LayerError);
            assert.equal(codeToString(err.response!.code), code);
            assert.equal(err.response!.payload!.toString(), text);
            assert.equal(isProtected({ options: err.response!.options! }), false);
            return true;
          },
        );
      check(out.message, '4.01', 'Replay detected');
      // a fresh Partial IV, so that the replay check does not answer first
      const wrongKey = SecurityContext.derive({ masterSecret: crypto.randomBytes(16), masterSalt: l1.base.masterSalt, senderId: h('20'), recipientId: h('02') }, { sequenceStore: new MemorySequenceStore(100) });
      check(protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: wrongKey }]).message, '4.00', 'Decryption failed');
      check(protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: assoc('99', '98').a }]).message, '4.01', 'Security context not found');
    });

    it('§2.4.1 source-based policy: a context not listed for the source looks exactly like an unknown one', function () {
      const l1 = assoc('20', '02');
      const lookup = (kid: Buffer, _kc: Buffer | undefined, source: { address: string } | undefined) => (source?.address === '127.0.0.1' && kid.equals(h('20')) ? l1.b : undefined);
      const m1 = protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: l1.a }]).message;
      assert.equal(removeRequestLayers(wire(m1), { contexts: lookup, source: { address: '127.0.0.1', port: 1 } }).layers.length, 1);
      const m2 = protectRequestLayers(createMessage({ code: CODES.GET }), [{ context: l1.a }]).message;
      assert.throws(() => removeRequestLayers(wire(m2), { contexts: lookup, source: { address: '127.0.0.7', port: 1 } }), (err: unknown) => err instanceof LayerError && err.response!.payload!.toString() === 'Security context not found');
    });

    it('App. B.1.2 under the loop: a lost replay window gives a protected 4.01 + Echo; the repeat with Echo Inner is accepted', function () {
      const l1 = assoc('20', '02', { bOpts: { replayWindowInitialized: false } });
      const contexts = new ContextRegistry().add(l1.b);
      const first = protectRequestLayers(createMessage({ code: CODES.GET, token: h('03') }), [{ context: l1.a }]);
      let echo: Buffer | undefined;
      assert.throws(
        () => removeRequestLayers(wire(first.message), { contexts }),
        (err: unknown) => {
          assert.ok(err instanceof LayerError);
          const r = unprotectResponse(first.layers[0].binding, asResponse(h('03'), err.response as never));
          assert.equal(codeToString(r.message.code), '4.01');
          echo = getOption(r.message, OPT.ECHO);
          return echo !== undefined;
        },
      );
      const again = protectRequestLayers(createMessage({ code: CODES.GET, token: h('04') }), [{ context: l1.a, addOptions: [{ number: OPT.ECHO, value: echo! }] }]);
      const ok = removeRequestLayers(wire(again.message), { contexts });
      assert.equal(getOption(ok.message, OPT.ECHO), undefined, 'the Echo was consumed by the layer');
    });
  });

  describe('§2.2: a proxy must recognize every option it protects', function () {
    it('4.02 for a request, 5.02 for a response; options named in `understood` pass', function () {
      assert.equal(firstUnrecognizedOption([opt(OPT.URI_PATH, 'a'), opt(65000, 'x')]), 65000);
      assert.equal(firstUnrecognizedOption([opt(65000, 'x')], [65000]), undefined);
      assert.throws(() => assertRecognized({ options: [opt(65000, 'x')] }, 'request'), layerError('ERR_OSCORE_UNRECOGNIZED_OPTION', CODES.BAD_OPTION));
      assert.throws(() => assertRecognized({ options: [opt(65001, 'x')] }, 'response'), layerError('ERR_OSCORE_UNRECOGNIZED_OPTION', CODES.BAD_GATEWAY));
      assert.doesNotThrow(() => assertRecognized({ options: [opt(optionNumber('Reply-From'), h('00'))] }, 'response'));
    });
  });

  describe('§2.6 incoming responses', function () {
    it('an OSCORE option left after every expected layer stops processing', function () {
      const l1 = assoc('20', '02');
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('05') }), [{ context: l1.a }]);
      const srv = removeRequestLayers(wire(out.message), { contexts: new ContextRegistry().add(l1.b) });
      const res = protectResponseLayers(srv.layers, { code: CODES.CONTENT, options: [opt(OPT.OSCORE, Buffer.alloc(0))], payload: Buffer.from('smuggled') });
      assert.throws(() => unprotectResponseLayers(asResponse(h('05'), res), [{ binding: out.layers[0].binding }]), layerError('ERR_OSCORE_UNEXPECTED_LAYER'));
    });

    it('Group OSCORE stand-in: one Sender ID for the client, one per server; each server\'s first response may go without Partial IV', function () {
      // Every server derives the same Recipient Context for the client's Sender ID 0x5f from the shared secret.
      const base = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
      const client = SecurityContext.derive({ ...base, senderId: h('5f'), recipientId: h('a1') });
      const servers = ['a1', 'a2', 'a3'].map((id) => SecurityContext.derive({ ...base, senderId: h(id), recipientId: h('5f') }));
      const recipients = new Map(['a1', 'a2', 'a3'].map((id) => [id, id === 'a1' ? client : SecurityContext.derive({ ...base, senderId: h('5f'), recipientId: h(id) })]));
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('06'), options: [opt(OPT.URI_PATH, 'light')] }), [{ context: client, multipleResponses: true }]);
      const responses = servers.map((s, i) => {
        const got = removeRequestLayers(wire(out.message), { contexts: new ContextRegistry().add(s) });
        return protectResponseLayers(got.layers, { code: CODES.CONTENT, options: [], payload: Buffer.from(`s${i}`) });
      });
      assert.deepEqual(responses.map(piv), [undefined, undefined, undefined]);
      const ids = ['a1', 'a2', 'a3'];
      responses.forEach((r, i) => {
        const binding = recipients.get(ids[i]) === client ? out.layers[0].binding : rebindResponses(out.layers[0].binding, recipients.get(ids[i])!);
        const got = unprotectResponseLayers(asResponse(h('06'), r), [{ binding }]);
        assert.equal(got.message.payload.toString(), `s${i}`);
      });
    });

    it('a context literally shared by several servers: the same (key, nonce) twice, and the client admits only one of them', function () {
      const shared = assoc('5f', 'a1');
      const serverA = shared.b;
      const serverB = SecurityContext.derive({ ...shared.base, senderId: h('a1'), recipientId: h('5f') }); // a second copy
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('07') }), [{ context: shared.a, multipleResponses: true }]);
      const ra = protectResponseLayers(removeRequestLayers(wire(out.message), { contexts: serverA }).layers, { code: CODES.CONTENT, options: [], payload: Buffer.from('A') });
      const rb = protectResponseLayers(removeRequestLayers(wire(out.message), { contexts: serverB }).layers, { code: CODES.CONTENT, options: [], payload: Buffer.from('B') });
      // both reused the request nonce under the same key: same keystream, so the ciphertexts XOR to the plaintexts'
      // XOR (plaintext = Code 0x45 | 0xff | payload)
      assert.equal(piv(ra), undefined);
      assert.equal(piv(rb), undefined);
      assert.equal(ra.payload[0], rb.payload[0]);
      assert.equal(ra.payload[2] ^ rb.payload[2], 'A'.charCodeAt(0) ^ 'B'.charCodeAt(0));
      const b = out.layers[0].binding;
      unprotectResponse(b, asResponse(h('07'), ra));
      assert.throws(() => unprotectResponse(b, asResponse(h('07'), rb)), (e: unknown) => (e as { code?: string }).code === 'ERR_OSCORE_REPLAY');
    });
  });

  describe('identities and the server transform', function () {
    it('oscoreClientId: hex Recipient ID, with the ID Context after "@"', function () {
      assert.equal(oscoreClientId(assoc('01', '20').a), '20');
      assert.equal(oscoreClientId(assoc('01', '20', { idContext: h('37cbf3210017a2d3') }).a), '20@37cbf3210017a2d3');
    });

    it('oscoreServerTransform: 4.01 without OSCORE, the decrypted request otherwise, responses protected with its layers', function () {
      const l = assoc('5f', 'a1');
      const t = oscoreServerTransform({ contexts: new ContextRegistry().add(l.b) });
      const remote = { address: '127.0.0.1', port: 5683 };
      const plain = t({ message: createMessage({ code: CODES.GET }), remote, multicast: false });
      assert.ok('reject' in plain && plain.reject!.code === CODES.UNAUTHORIZED);
      const out = protectRequestLayers(createMessage({ code: CODES.GET, token: h('08'), options: [opt(OPT.URI_PATH, 'light')] }), [{ context: l.a }]);
      const ok = t({ message: wire(out.message), remote, multicast: true });
      assert.ok('request' in ok);
      assert.deepEqual(getOptions(ok.request.message, OPT.URI_PATH).map(String), ['light']);
      const res = ok.protect!({ code: CODES.CONTENT, options: [], payload: Buffer.from('on') });
      assert.equal(unprotectResponse(out.layers[0].binding, asResponse(h('08'), res)).message.payload.toString(), 'on');
      const replay = t({ message: wire(out.message), remote, multicast: false });
      assert.ok('reject' in replay && replay.reject!.payload.toString() === 'Replay detected');
    });
  });
});
