// The HTTP-to-CoAP group cross-proxy (groupcomm-proxy-07 §9, RFC 8075) on real sockets: an HTTP client (node:http,
// curl) -> the HTTP front on 127.0.0.1 -> the group proxy -> 5 lamps on 127.0.0.2-6 by loopback multicast.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { decodeReplyFrom } from '../../src/cbor/cri';
import { CODES } from '../../src/coap/codes';
import { OPT, encodeUint } from '../../src/coap/options';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy, GroupProxyOptions, ProxyEvent } from '../../src/proxy/group-proxy';
import { parseBatch, originOf } from '../../src/proxy/http-batch-client';
import { HttpFrontOptions, HttpFrontServer, startHttpFront } from '../../src/proxy/http-front';
import { UdpTransport } from '../../src/transport/udp-transport';
import { createMessage } from '../../src/coap/message';
import { protectRequest, unprotectResponse } from '../../src/oscore/protect';
import { httpRequest } from '../support/http-client';
import { GroupMaterial, GroupOscoreLamp, groupMaterial, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

interface Setup {
  proxy: GroupProxy;
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
    proxy, http, events,
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
    it('unparseable target: 400', async () => refused(`${p.base}?target_uri=${encodeURIComponent('coap://[<script>')}`, 400));
    it('unknown scheme: 400', async () => refused(`${p.base}?target_uri=${encodeURIComponent(`gopher://${GROUP_V4}:${port}/light`)}`, 400));
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

  before(async function () {
    port = await freeGroupPort();
    material = groupMaterial(['5f', ...serverIds(5)]);
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material });
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });

  it('POST application/oscore with the OSCORE header: 5 parts, each 200 application/oscore with OSCORE and Reply-From; each verified with that server\'s credential to its 2.05 (RFC 10021 §8.4)', async function () {
    const p = await startHttpProxy();
    try {
      const client = memberContext(material, '5f');
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
        const protectedResponse = createMessage({ code: CODES.CHANGED, options: [{ number: OPT.OSCORE, value: Buffer.from(part.headers.oscore[0], 'base64url') }], payload: part.body });
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
});
