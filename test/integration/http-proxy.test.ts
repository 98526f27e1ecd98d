// The HTTP-to-CoAP group cross-proxy (groupcomm-proxy-07 §9, RFC 8075) on real sockets: an HTTP client (node:http,
// curl) -> the HTTP front on 127.0.0.1 -> the group proxy -> 5 lamps on 127.0.0.2-6 by loopback multicast. Also
// Accept and conditional requests (RFC 7252 §10.2.2), and Group OSCORE end to end through the front (RFC 8613 §11),
// with tshark on lo showing that no plaintext crosses the proxy, and the proxy as signature checker (RFC 10021 §7.5).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { decodeReplyFrom } from '../../src/cbor/cri';
import { decode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { OPT, decodeUint, encodeUint } from '../../src/coap/options';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy, GroupProxyOptions, ProxyEvent } from '../../src/proxy/group-proxy';
import { parseBatch, originOf } from '../../src/proxy/http-batch-client';
import { HttpFrontOptions, HttpFrontServer, startHttpFront } from '../../src/proxy/http-front';
import { UdpTransport } from '../../src/transport/udp-transport';
import { createMessage, getOption, getOptions } from '../../src/coap/message';
import { GroupContext, SignatureChecker } from '../../src/oscore';
import { protectRequest, unprotectResponse } from '../../src/oscore/protect';
import { BLOCKWISE_REASON, oscoreOption } from '../../src/proxy/http-mapping';
import { CapturedDatagram, WireCapture, captureUnavailable } from '../support/wire-capture';
import { httpRequest } from '../support/http-client';
import { GroupMaterial, GroupOscoreLamp, groupMaterial, forgerContext, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

interface Setup {
  proxy: GroupProxy;
  upstream: CoapEndpoint;
  http: HttpFrontServer;
  base: string;
  events: ProxyEvent[];
  close(): Promise<void>;
}

async function startHttpProxy(opts: Partial<GroupProxyOptions> = {}, front: HttpFrontOptions = {}): Promise<Setup> {
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
  const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], ...opts });
  const events: ProxyEvent[] = [];
  proxy.on('event', (e: ProxyEvent) => events.push(e));
  let handlerErrors = 0;
  for (const e of [listen, upstream, proxy]) e.on('handler-error', () => handlerErrors++);
  const http = await startHttpFront(proxy, front);
  http.front.on('handler-error', () => handlerErrors++);
  return {
    proxy, http, events, upstream,
    base: `http://127.0.0.1:${http.address.port}/hc`,
    close: async () => {
      await http.close();
      await proxy.close();
      await listen.close();
      await upstream.close();
      assert.equal(handlerErrors, 0, 'handler errors at the proxy');
    },
  };
}

/** Requests the group servers saw, over all lamps. */
const groupRequests = (lamps: Lamp[]) => lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);

describe('HTTP-to-CoAP group proxy (groupcomm-proxy-07 §9)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: Lamp[];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 50, firstHost: 60 });
    for (const l of lamps) l.server.addResource('/etag', () => ({ code: CODES.CONTENT, payload: `${l.name} etag`, options: [{ number: OPT.MAX_AGE, value: encodeUint(30) }] }));
    // /fmt serves JSON, or CBOR when the Accept option asks for it; any other Accept: 4.06 (RFC 7252 §5.10.4)
    for (const l of lamps) {
      l.server.addResource(
        '/fmt',
        (req) => {
          const accept = getOption(req.message, OPT.ACCEPT);
          const cf = accept === undefined ? 50 : decodeUint(accept);
          if (cf === 50) return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: l.name }) };
          if (cf === 60) return { code: CODES.CONTENT, contentFormat: 60, payload: Buffer.concat([Buffer.from([0xa1, 0x64]), Buffer.from('name'), Buffer.from([0x60 + l.name.length]), Buffer.from(l.name)]) };
          return { code: CODES.NOT_ACCEPTABLE };
        },
        { answerGroupErrors: true },
      );
    }
    // /cond has an ETag per lamp (RFC 7252 §5.10.6) and honours If-Match / If-None-Match on PUT (§5.10.8)
    for (const l of lamps) {
      const etag = Buffer.from(`e${l.address.split('.')[3]}`);
      l.server.addResource(
        '/cond',
        (req) => {
          if (req.message.code === CODES.GET) return { code: CODES.CONTENT, payload: `${l.name} cond`, etag };
          const ifMatch = getOptions(req.message, OPT.IF_MATCH);
          const ifNoneMatch = getOption(req.message, OPT.IF_NONE_MATCH) !== undefined;
          if (ifNoneMatch || (ifMatch.length && !ifMatch.some((v) => v.length === 0 || v.equals(etag)))) return { code: CODES.PRECONDITION_FAILED };
          return { code: CODES.CHANGED };
        },
        { answerGroupErrors: true },
      );
    }
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });

  it('GET ?target_uri= to 5 members: one 200 multipart/mixed, 5 application/http parts, each Reply-From a distinct member', async function () {
    const p = await startHttpProxy();
    try {
      const target = encodeURIComponent(`coap://${GROUP_V4}:${port}/light`);
      const r = await httpRequest(`${p.base}?target_uri=${target}`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type']!, /^multipart\/mixed; boundary=/);
      // the raw parts: each is application/http carrying its own status line
      const boundary = /boundary=(.*)$/.exec(r.headers['content-type']!)![1];
      const raw = r.body.toString('latin1');
      assert.equal(raw.split(`--${boundary}\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\n`).length - 1, 5);
      assert.ok(raw.endsWith(`--${boundary}--\r\n`));
      const parts = parseBatch(r.headers['content-type'], r.body);
      assert.equal(parts.length, 5);
      for (const part of parts) {
        // RFC 9651 §3.3.5: standard base64 between colons
        assert.match(part.headers['reply-from'][0], /^:[A-Za-z0-9+/]+=*:$/);
        const rf = decodeReplyFrom(Buffer.from(part.headers['reply-from'][0].slice(1, -1), 'base64'));
        const lamp = lamps.find((l) => l.address === rf.target.host)!;
        assert.ok(lamp, `Reply-From names a member: ${rf.target.host}`);
        assert.equal(rf.target.port, lamp.server.address().port);
        assert.equal(part.origin!.address, lamp.address);
        assert.equal(part.headers['content-type'][0], 'application/json');
        assert.equal(JSON.parse(part.body.toString()).name, lamp.name);
      }
      assert.deepEqual(new Set(parts.map((x) => x.origin!.address)), new Set(lamps.map((l) => l.address)));
      assert.equal(p.http.front.pending, 0);
      assert.equal(p.proxy.activeExchanges, 0);
    } finally {
      await p.close();
    }
  });

  it('curl with the path form of the Hosting URI (RFC 8075 §5.4) and a body: PUT mapped to CoAP, 5 x 2.04 -> 5 parts of 204', async function () {
    const p = await startHttpProxy();
    try {
      const url = `${p.base}/coap://${GROUP_V4}:${port}/light`;
      const out = await new Promise<string>((resolve, reject) =>
        execFile('curl', ['-s', '-i', '-X', 'PUT', '-H', 'Multicast-Timeout: 1', '-H', 'Content-Type: text/plain', '--data-binary', 'on', url], (err, stdout) => (err ? reject(err) : resolve(stdout))),
      );
      const head = out.slice(0, out.indexOf('\r\n\r\n'));
      assert.match(head, /^HTTP\/1\.1 200 OK/);
      const ct = /content-type: (.*)\r?$/im.exec(head)![1].trim();
      const parts = parseBatch(ct, Buffer.from(out.slice(out.indexOf('\r\n\r\n') + 4), 'latin1'));
      assert.equal(parts.length, 5);
      assert.ok(parts.every((x) => x.status === 204));
      assert.equal(new Set(parts.map((x) => x.origin!.address)).size, 5);
      assert.ok(lamps.every((l) => l.state.on === true));
    } finally {
      await p.close();
    }
  });

  it('Multicast-Timeout: 0 (and an empty field, which means 0) gets 204 right after forwarding; the members still get the request', async function () {
    const p = await startHttpProxy();
    try {
      for (const value of ['0', '']) {
        const before = groupRequests(lamps);
        const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': value } });
        assert.equal(r.status, 204);
        assert.equal(r.body.length, 0);
        await waitFor(() => groupRequests(lamps) >= before + 5, 'the members to get the request');
      }
    } finally {
      await p.close();
    }
  });

  it('no member answers before T\': 204', async function () {
    const p = await startHttpProxy();
    try {
      const silent = await freeGroupPort();
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${silent}/light`)}`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(r.status, 204);
      assert.ok(r.headAt >= 900, `204 came at T' (${r.headAt.toFixed(0)} ms)`);
    } finally {
      await p.close();
    }
  });

  it('Group-ETag: the cached set carries one; offering it gets 304 with exactly one Group-ETag (§9.3), nothing sent to the group', async function () {
    const members = { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) };
    const p = await startHttpProxy({ cache: true, members });
    try {
      const url = `${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/etag`)}`;
      const first = await httpRequest(url, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(parseBatch(first.headers['content-type'], first.body).length, 5);
      const second = await httpRequest(url, { headers: { 'Multicast-Timeout': '1' } });
      const parts = parseBatch(second.headers['content-type'], second.body);
      assert.equal(parts.length, 5);
      const tag = parts[0].headers['group-etag'][0];
      assert.match(tag, /^:[A-Za-z0-9+/]+=*:$/);
      assert.ok(parts.every((x) => x.headers['group-etag'][0] === tag));
      const before = groupRequests(lamps);
      const third = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', 'Group-ETag': `:AAAAAAAAAAA=:, ${tag}` } });
      assert.equal(third.status, 304);
      assert.equal(third.headers['group-etag'], tag);
      assert.equal(third.body.length, 0);
      assert.equal(groupRequests(lamps), before, 'nothing was sent to the group');
      // §9.2-§9.3: a malformed Group-ETag field is ignored: the full batch again
      const fourth = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', 'Group-ETag': `${tag.slice(1, -1)}` } });
      assert.equal(fourth.status, 200);
      assert.equal(parseBatch(fourth.headers['content-type'], fourth.body).length, 5);
    } finally {
      await p.close();
    }
  });

  it('a malformed Reply-From field in a request is ignored (§9.2): the request is served as without it', async function () {
    const p = await startHttpProxy();
    try {
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': '1', 'Reply-From': ':not base64!:, 12' } });
      assert.equal(r.status, 200);
      assert.equal(parseBatch(r.headers['content-type'], r.body).length, 5);
      // and a client reading a malformed Reply-From gets no origin rather than a wrong one
      assert.equal(originOf(':AAAA:, :AAAA:, :AAAA:'), undefined);
      assert.equal(originOf('gibberish'), undefined);
    } finally {
      await p.close();
    }
  });

  it('streamed (Prefer: stream): the head and the first part arrive long before T\', the body closes at T\'', async function () {
    const p = await startHttpProxy();
    try {
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': '2', Prefer: 'stream' } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['preference-applied'], 'stream');
      assert.equal(r.headers['transfer-encoding'], 'chunked');
      assert.ok(r.firstByteAt! < 1000, `first part at ${r.firstByteAt!.toFixed(0)} ms, T' = 2000 ms`);
      const last = r.chunks[r.chunks.length - 1].at;
      assert.ok(last >= 1900, `the body closed at T' (${last.toFixed(0)} ms)`);
      const parts = parseBatch(r.headers['content-type'], r.body);
      assert.equal(new Set(parts.map((x) => x.origin!.address)).size, 5);
    } finally {
      await p.close();
    }
  });

  it('a unicast target: the one server\'s response as a plain HTTP response (RFC 8075), no multipart', async function () {
    const p = await startHttpProxy();
    try {
      const lamp = lamps[2];
      const r = await httpRequest(`${p.base}/coap://${lamp.address}:${lamp.server.address().port}/light`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(JSON.parse(r.body.toString()).name, lamp.name);
    } finally {
      await p.close();
    }
  });

  it('the HTTP client goes away before T\': the exchange ends at once and its slot goes back', async function () {
    const p = await startHttpProxy();
    try {
      const http = await import('node:http');
      const req = http.request(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': '30' }, agent: false });
      req.on('error', () => undefined);
      req.end();
      await waitFor(() => p.proxy.activeExchanges === 1, 'the exchange to start');
      req.destroy();
      await waitFor(() => p.proxy.activeExchanges === 0 && p.http.front.pending === 0, 'the exchange to end');
      assert.ok(p.events.some((e) => e.kind === 'end' && e.reason === 'HTTP client closed the connection'));
    } finally {
      await p.close();
    }
  });

  it('HTTP authentication on a front of its own: 401 with WWW-Authenticate and nothing sent without it, the batch with it', async function () {
    const good = `Basic ${Buffer.from('lamps:example').toString('base64')}`;
    const p = await startHttpProxy({}, { authenticate: (req) => req.headers.authorization === good });
    try {
      const url = `${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`;
      const before = groupRequests(lamps);
      const denied = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Authorization: 'Basic bm9ib2R5Onh4' } });
      assert.equal(denied.status, 401);
      assert.match(denied.headers['www-authenticate']!, /^Basic /);
      assert.equal(groupRequests(lamps), before);
      const ok = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Authorization: good } });
      assert.equal(ok.status, 200);
      assert.equal(parseBatch(ok.headers['content-type'], ok.body).length, 5);
    } finally {
      await p.close();
    }
  });

  it('Accept (RFC 7252 §10.2.2, RFC 8075 §6.1): the most-preferred type becomes the Accept option; one without a Content-Format (a browser\'s HTML) is ignored; */* is no Accept', async function () {
    const p = await startHttpProxy();
    try {
      const url = `${p.base}?target_uri=coap://${GROUP_V4}:${port}/fmt`;
      const batch = async (accept: string) => {
        const r = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Accept: accept } });
        assert.equal(r.status, 200, accept);
        const parts = parseBatch(r.headers['content-type'], r.body);
        assert.equal(new Set(parts.map((x) => x.origin!.address)).size, 5, accept);
        return parts;
      };
      // the members saw Accept 60 and answered CBOR
      for (const part of await batch('application/json;q=0.5, application/cbor')) {
        assert.equal(part.headers['content-type'][0], 'application/cbor');
        assert.equal(part.body.subarray(7).toString(), lamps.find((l) => l.address === part.origin!.address)!.name);
      }
      // no Content-Format for image/png (or a browser's text/html): forwarded without Accept, the members' default JSON
      for (const accept of ['image/png', '*/*', 'text/*', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8']) {
        for (const part of await batch(accept)) assert.equal(part.headers['content-type'][0], 'application/json', accept);
      }
      // a type the members do not serve: each answers 4.06, a 406 part each
      assert.ok((await batch('application/link-format')).every((x) => x.status === 406));
      // RFC 8075 §6.2: application/coap-payload is not forwarded
      const before = groupRequests(lamps);
      const refused = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Accept: 'application/coap-payload;cf=60' } });
      assert.equal(refused.status, 406);
      assert.equal(groupRequests(lamps), before);
    } finally {
      await p.close();
    }
  });

  it('conditional GET (If-None-Match with entity-tags -> ETag options, RFC 7252 §5.10.6.2): each member whose tag is offered answers 2.03, a 304 part with its ETag', async function () {
    const p = await startHttpProxy();
    try {
      const url = `${p.base}?target_uri=coap://${GROUP_V4}:${port}/cond`;
      const first = await httpRequest(url, { headers: { 'Multicast-Timeout': '1' } });
      const parts = parseBatch(first.headers['content-type'], first.body);
      assert.equal(parts.length, 5);
      const tags = new Map(parts.map((x) => [x.origin!.address, x.headers.etag[0]]));
      assert.equal(new Set(tags.values()).size, 5, 'one ETag per member');
      // offer the tags of three members: those three validate (304, no body), the other two send their representation
      const offered = lamps.slice(0, 3).map((l) => tags.get(l.address)!);
      const second = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', 'If-None-Match': offered.join(', ') } });
      const again = parseBatch(second.headers['content-type'], second.body);
      assert.equal(again.length, 5);
      for (const part of again) {
        const validated = lamps.slice(0, 3).some((l) => l.address === part.origin!.address);
        assert.equal(part.status, validated ? 304 : 200, part.origin!.address);
        assert.equal(part.headers.etag[0], tags.get(part.origin!.address));
        const lamp = lamps.find((l) => l.address === part.origin!.address)!;
        assert.equal(part.body.toString(), validated ? '' : `${lamp.name} cond`);
      }
    } finally {
      await p.close();
    }
  });

  it('conditional PUT: If-Match with one member\'s tag -> that member 2.04 (204), the others 4.12 (412); If-None-Match: * -> 412 from each; tags CoAP cannot carry -> 400, nothing sent', async function () {
    const p = await startHttpProxy();
    try {
      const url = `${p.base}?target_uri=coap://${GROUP_V4}:${port}/cond`;
      const tagOf = (l: Lamp) => `"${Buffer.from(`e${l.address.split('.')[3]}`).toString('hex')}"`;
      const put = async (headers: Record<string, string>) => {
        const r = await httpRequest(url, { method: 'PUT', body: 'on', headers: { 'Multicast-Timeout': '1', 'Content-Type': 'text/plain', ...headers } });
        assert.equal(r.status, 200);
        return new Map(parseBatch(r.headers['content-type'], r.body).map((x) => [x.origin!.address, x.status]));
      };
      const one = await put({ 'If-Match': tagOf(lamps[1]) });
      assert.deepEqual([...one.entries()].sort(), lamps.map((l) => [l.address, l === lamps[1] ? 204 : 412]).sort());
      const any = await put({ 'If-Match': '*' });
      assert.deepEqual([...any.values()], Array(5).fill(204));
      const none = await put({ 'If-None-Match': '*' });
      assert.deepEqual([...none.values()], Array(5).fill(412));
      const unmappable: Record<string, string>[] = [{ 'If-None-Match': tagOf(lamps[0]) }, { 'If-Match': 'W/"6532"' }, { 'If-Match': '"not-hex"' }];
      for (const headers of unmappable) {
        const before = groupRequests(lamps);
        const r = await httpRequest(url, { method: 'PUT', body: 'on', headers: { 'Multicast-Timeout': '1', 'Content-Type': 'text/plain', ...headers } });
        assert.equal(r.status, 400, JSON.stringify(headers));
        assert.equal(groupRequests(lamps), before);
      }
    } finally {
      await p.close();
    }
  });

  it('HEAD (RFC 7252 §10.2.3): a GET to the group; the 200 multipart/mixed head without a body', async function () {
    const p = await startHttpProxy();
    try {
      const before = groupRequests(lamps);
      const r = await httpRequest(`${p.base}?target_uri=coap://${GROUP_V4}:${port}/light`, { method: 'HEAD', headers: { 'Multicast-Timeout': '1' } });
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type']!, /^multipart\/mixed; boundary=/);
      assert.equal(r.body.length, 0);
      assert.ok(Number(r.headers['content-length']) > 0, 'the length the GET would have had');
      assert.equal(groupRequests(lamps), before + 5);
    } finally {
      await p.close();
    }
  });

  it('a member answering block-wise (Block2 M=1, RFC 7959): its part and a unicast response are 502 with a fixed reason, never the first block as a complete 200', async function () {
    const big = Buffer.alloc(3000, 'x');
    for (const l of lamps) l.server.addResource('/big', () => ({ code: CODES.CONTENT, contentFormat: 0, payload: Buffer.concat([Buffer.from(l.name), big]) }));
    const p = await startHttpProxy();
    try {
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/big`)}`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(r.status, 200);
      const parts = parseBatch(r.headers['content-type'], r.body);
      assert.equal(parts.length, 5);
      for (const part of parts) {
        assert.equal(part.status, 502);
        assert.equal(part.reason, BLOCKWISE_REASON);
        assert.ok(!part.body.includes('xxxx'), 'no block of the representation');
        assert.ok(lamps.some((l) => l.address === part.origin!.address), 'Reply-From still names the member');
      }
      const lamp = lamps[1];
      const u = await httpRequest(`${p.base}/coap://${lamp.address}:${lamp.server.address().port}/big`);
      assert.equal(u.status, 502);
      assert.ok(!u.body.includes('xxxx'));
    } finally {
      await p.close();
      for (const l of lamps) l.server.removeResource('/big');
    }
  });

  describe('bad input: the status RFC 8075 gives, nothing sent to the group', function () {
    let p: Setup;
    before(async function () {
      p = await startHttpProxy({}, { maxBodyBytes: 64 });
    });
    after(async function () {
      await p.close();
    });

    async function refused(url: string, status: number, o: Parameters<typeof httpRequest>[1] = {}): Promise<void> {
      const before = groupRequests(lamps);
      const r = await httpRequest(url, { ...o, headers: { 'Multicast-Timeout': '1', ...o.headers } });
      assert.equal(r.status, status, url);
      assert.ok(!r.body.toString('latin1').includes('<script>'), 'no client bytes echoed');
      assert.equal(groupRequests(lamps), before, 'nothing sent to the group');
    }

    it('missing target: 400', async () => refused(`${p.base}`, 400));
    it('a target URI longer than a Proxy-Uri option can carry (1034 bytes, RFC 7252 §5.10.2): 414', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/${'<script>'.repeat(130)}`)}`, 414));

    it('unparseable target: 400', async () => refused(`${p.base}?target_uri=${encodeURIComponent('coap://[<script>')}`, 400));
    it('unknown scheme: 400', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`gopher://${GROUP_V4}:${port}/light`)}`, 400));
    it('a coaps target (no DTLS here): 501 (RFC 7252 §10.2)', async () => refused(`${p.base}?target_uri=coaps://${GROUP_V4}:${port}/light`, 501));
    it('Content-Encoding other than identity: 415 (RFC 8075 §6.1)', async () => refused(`${p.base}?target_uri=coap://${GROUP_V4}:${port}/light`, 415, { method: 'POST', body: 'x', headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' } }));
    it('an OSCORE header on GET, or application/oscore without the header: 400 (RFC 8613 §11.1)', async function () {
      await refused(`${p.base}?target_uri=coap://${GROUP_V4}:${port}`, 400, { headers: { OSCORE: 'CSU' } });
      await refused(`${p.base}?target_uri=coap://${GROUP_V4}:${port}`, 400, { method: 'POST', body: 'x', headers: { 'Content-Type': 'application/oscore' } });
    });
    it('not under the base path: 404', async () => refused(`http://127.0.0.1:${p.http.address.port}/other?target_uri=x`, 404));
    it('oversized body: 413', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, 413, { method: 'POST', body: Buffer.alloc(65, 0x61) }));
    it('a method CoAP does not have: 501', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, 501, { method: 'OPTIONS' }));
    it('an unmapped media type: 415', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, 415, { method: 'POST', body: 'x', headers: { 'Content-Type': 'image/x-<script>' } }));
    it('Multicast-Timeout missing: 400 with an empty Multicast-Timeout (§5.2.1 step 3)', async function () {
      const before = groupRequests(lamps);
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`);
      assert.equal(r.status, 400);
      assert.equal(r.headers['multicast-timeout'], '');
      assert.equal(groupRequests(lamps), before);
    });
    it('a client not on the allow-list: 403, before anything about the target', async function () {
      const q = await startHttpProxy({ allow: [{ address: '127.0.0.9' }] });
      try {
        const before = groupRequests(lamps);
        for (const url of [`${q.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, `${q.base}?target_uri=gopher://x`]) {
          const r = await httpRequest(url, { headers: { 'Multicast-Timeout': '1' } });
          assert.equal(r.status, 403);
        }
        assert.equal(groupRequests(lamps), before);
      } finally {
        await q.close();
      }
    });
  });
});

describe('HTTP front with Group OSCORE end to end (RFC 8613 §11 mapping, RFC 10021 group mode; the proxy never sees the plaintext)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let client: GroupContext;

  before(async function () {
    port = await freeGroupPort();
    material = groupMaterial(['5f', ...serverIds(5)]);
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material });
    // one client context for the whole describe: the members' replay windows remember its sequence numbers
    client = memberContext(material, '5f');
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });

  it('POST application/oscore with the OSCORE header: 5 parts, each 200 application/oscore with OSCORE and Reply-From; each verified with that server\'s credential to its 2.05 (RFC 10021 §8.4)', async function () {
    const p = await startHttpProxy();
    try {
      // the inner request: GET /light, Uri-Path encrypted (class E); outer POST (RFC 8613 §4.2), group mode
      const { message, binding } = protectRequest(client.groupRequests(), { code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }, { multipleResponses: true });
      const oscore = message.options!.find((o) => o.number === OPT.OSCORE)!.value;
      // RFC 8613 §11.1: the header is the option value in base64url; the body is the ciphertext
      const r = await httpRequest(`${p.base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}`)}`, {
        method: 'POST',
        headers: { 'Multicast-Timeout': '1', OSCORE: oscore.toString('base64url'), 'Content-Type': 'application/oscore' },
        body: message.payload,
      });
      assert.equal(r.status, 200);
      const parts = parseBatch(r.headers['content-type'], r.body);
      assert.equal(parts.length, 5);
      const names = new Set<string>();
      for (const part of parts) {
        assert.equal(part.status, 200);
        assert.equal(part.headers['content-type'][0], 'application/oscore');
        assert.ok(!part.body.toString('latin1').includes('lamp-'), 'the proxy relays ciphertext only');
        // RFC 8613 §11.3: the header back to the option (base64url, "AA" for the empty option)
        const protectedResponse = createMessage({ code: CODES.CHANGED, options: [oscoreOption(part.headers.oscore[0])!], payload: part.body });
        // one binding for the group request: each response names its member by kid, verified with its credential
        const verified = unprotectResponse(binding, protectedResponse);
        const inner = verified.message;
        assert.equal(inner.code, CODES.CONTENT);
        const name = JSON.parse(inner.payload.toString()).name;
        const lamp = lamps.find((l) => l.address === part.origin!.address)!;
        assert.equal(name, lamp.name);
        assert.equal(verified.responder.recipientId.toString('hex'), lamp.kid);
        names.add(name);
      }
      assert.equal(names.size, 5);
      assert.ok(lamps.every((l) => l.seen.some((s) => s.path === '/light' || s.path === 'light')));
    } finally {
      await p.close();
    }
  });

  /** A group-mode GET /light protected by `ctx`, sent through the front as RFC 8613 §11.1 says. */
  async function protectedGet(p: Setup, ctx: GroupContext) {
    const { message, binding } = protectRequest(ctx.groupRequests(), { code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }, { multipleResponses: true });
    const oscore = message.options!.find((o) => o.number === OPT.OSCORE)!.value;
    const r = await httpRequest(`${p.base}?target_uri=coap://${GROUP_V4}:${port}`, {
      method: 'POST',
      headers: { 'Multicast-Timeout': '1', OSCORE: oscore.toString('base64url'), 'Content-Type': 'application/oscore' },
      body: message.payload,
    });
    return { r, binding, body: message.payload };
  }

  const PLAINTEXT = ['light', 'lamp-', '"name"', '"on"'];
  const plaintextIn = (b: Buffer) => PLAINTEXT.find((w) => b.includes(Buffer.from(w)));

  it('on the wire (tshark on lo): the proxy sends one group-mode request, outer POST without Uri-Path, and nothing it sends or receives carries plaintext; neither does the HTTP exchange', async function () {
    const unavailable = captureUnavailable();
    if (unavailable) this.skip();
    const p = await startHttpProxy();
    const up = p.upstream.transport.address().port;
    const wire = await WireCapture.start([up, port, ...lamps.map((l) => l.server.address().port)]);
    let captured: CapturedDatagram[];
    let got;
    try {
      got = await protectedGet(p, client);
    } finally {
      captured = await wire.stop();
      await p.close();
    }
    const { r, binding, body } = got;
    assert.equal(r.status, 200);
    const parts = parseBatch(r.headers['content-type'], r.body);
    assert.equal(parts.length, 5);
    for (const part of parts) {
      const verified = unprotectResponse(binding, createMessage({ code: CODES.CHANGED, options: [oscoreOption(part.headers.oscore[0])!], payload: part.body }));
      assert.equal(JSON.parse(verified.message.payload.toString()).name, lamps.find((l) => l.address === part.origin!.address)!.name);
    }
    // the HTTP leg: the request body and the whole response (every part) are ciphertext
    assert.equal(plaintextIn(body), undefined);
    assert.equal(plaintextIn(r.body), undefined, 'plaintext in the HTTP response');
    // the CoAP leg
    const proxyTraffic = captured.filter((d) => d.srcPort === up || d.dstPort === up);
    assert.ok(proxyTraffic.length >= 1 + 5, `captured ${proxyTraffic.length} datagrams of the proxy`);
    for (const d of proxyTraffic) assert.equal(plaintextIn(d.payload), undefined, `plaintext in ${d.src}:${d.srcPort} -> ${d.dst}:${d.dstPort}`);
    const toGroup = captured.filter((d) => d.dst === GROUP_V4 && d.dstPort === port).map((d) => decode(d.payload));
    assert.equal(toGroup.length, 1);
    assert.equal(toGroup[0].code, CODES.POST, 'outer code POST (RFC 8613 §4.2)');
    assert.ok(!toGroup[0].options.some((o) => o.number === OPT.URI_PATH), 'the path is inside the ciphertext');
    assert.ok(!toGroup[0].options.some((o) => o.number === OPT.CONTENT_FORMAT), 'RFC 8613 §11.3: no Content-Format');
    const fromLamps = captured.filter((d) => d.dstPort === up && lamps.some((l) => l.address === d.src));
    assert.equal(fromLamps.length, 5);
  });

  it('the proxy as external signature checker (RFC 10021 §7.5) behind the HTTP front: a genuine request gets its 5 parts; a forged one gets 400 and is never fanned out', async function () {
    // the checker can verify countersignatures, not decrypt (here built from one member's context)
    const p = await startHttpProxy({ signatureCheckers: [SignatureChecker.forGroup(memberContext(material, lamps[0].kid))] });
    try {
      const genuine = await protectedGet(p, client);
      assert.equal(genuine.r.status, 200);
      assert.equal(new Set(parseBatch(genuine.r.headers['content-type'], genuine.r.body).map((x) => x.origin!.address)).size, 5);
      assert.equal(p.proxy.counters.groupRequests, 1);
      // 0x5f signing with a key that is not the one its listed credential names: the signature cannot verify
      const forger = forgerContext(material, '5f', lamps.map((l) => l.kid));
      const sentUpstream = p.upstream.transport.counters.sent;
      const seen = lamps.reduce((a, l) => a + l.seen.length + l.refused.length, 0);
      const forged = await protectedGet(p, forger);
      assert.equal(forged.r.status, 400, 'RFC 8075 Table 2: the proxy\'s 4.00 -> 400');
      assert.equal(forged.r.body.toString(), 'Group OSCORE signature check failed');
      assert.equal(p.proxy.counters.signatureRejected, 1);
      assert.equal(p.proxy.counters.groupRequests, 1);
      assert.equal(p.upstream.transport.counters.sent, sentUpstream, 'nothing went upstream');
      assert.equal(lamps.reduce((a, l) => a + l.seen.length + l.refused.length, 0), seen, 'no member saw it');
    } finally {
      await p.close();
    }
  });
});
