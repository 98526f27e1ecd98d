// Group rules of RFC 10020 §3.8 on real sockets: a group request carrying Q-Block2 is ignored by the servers
// (RFC 9177 §4), and Block2 follow-ups through a reverse proxy (groupcomm-proxy-07 §6.2 case 1) name an IPv6
// server in Uri-Host as an IP-literal in brackets (RFC 7252 §6.4, RFC 3986 §3.2.2).

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { encodeReplyFrom } from '../../src/cbor/cri';
import { decodeBlock, encodeBlock } from '../../src/coap/block';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT, optionNumber } from '../../src/coap/options';
import { optionsToUri, uriHostValue } from '../../src/coap/uri';
import { GroupClient } from '../../src/group/group-client';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { closeChecked } from '../support/endpoints';
import { GROUP_V4, freeGroupPort } from '../support/lamps';

describe('RFC 10020 §3.8: Q-Block2 in group requests', function () {
  let port: number;
  let servers: GroupServer[];
  let client: CoapEndpoint;
  before(async function () {
    port = await freeGroupPort();
    servers = await Promise.all(
      ['127.0.0.2', '127.0.0.3'].map((address) => GroupServer.open({ address, port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 })),
    );
    for (const s of servers) s.addResource('/r', () => ({ payload: 'x' }));
    client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
  });
  after(async function () {
    await closeChecked(client, servers);
  });

  it('servers ignore a group request with Q-Block2 and answer the same request without it', async function () {
    const qblock2 = { number: optionNumber('Q-Block2'), value: encodeBlock({ num: 0, more: false, szx: 6 }) };
    const ignored = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/r`, timeout: 60_000, options: [qblock2] });
    // The servers handle datagrams in arrival order: once both answered the second request, both saw the first.
    const answered = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/r`, timeout: 60_000 });
    const got: string[] = [];
    for await (const r of answered) {
      got.push(r.origin.address);
      if (got.length === 2) answered.cancel();
    }
    ignored.cancel();
    assert.deepEqual(got.sort(), ['127.0.0.2', '127.0.0.3']);
    assert.equal((await ignored.summary).responses, 0);
    assert.deepEqual(servers.map((s) => s.counters.ignoredQBlock2), [1, 1]);
  });

  it('a unicast request with Q-Block2 is not affected by the group rule', async function () {
    const qblock2 = { number: optionNumber('Q-Block2'), value: encodeBlock({ num: 0, more: false, szx: 6 }) };
    const res = await client.request({ code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('r') }, qblock2] }, servers[0].address());
    assert.equal(res.message.code, CODES.CONTENT);
    assert.equal(servers[0].counters.ignoredQBlock2, 1);
  });
});

describe('RFC 7252 §6.4: IPv6 literals in Uri-Host', function () {
  it('uriHostValue brackets IPv6 (with its zone) and optionsToUri reads it back', function () {
    assert.equal(uriHostValue('2001:db8::1').toString(), '[2001:db8::1]');
    assert.equal(uriHostValue('fe80::1%veth0').toString(), '[fe80::1%veth0]');
    assert.equal(uriHostValue('127.0.0.2').toString(), '127.0.0.2');
    assert.equal(uriHostValue('example.org').toString(), 'example.org');
    const u = optionsToUri([{ number: OPT.URI_HOST, value: uriHostValue('fe80::1%veth0') }], 'coap', '::1', 5683);
    assert.deepEqual([u.host, u.zone, u.family], ['fe80::1', 'veth0', 6]);
  });

  it('a Block2 follow-up through a reverse proxy (groupcomm-proxy-07 §6.2 case 1) carries Uri-Host "[::1]"', async function () {
    // A hand-made reverse proxy on ::1: it relays one block-0 response whose Reply-From names the proxy and, as
    // element 2, the server //[::1]:5999; then it answers the follow-up with the last block.
    const proxy = dgram.createSocket('udp6');
    proxy.on('error', () => undefined);
    await new Promise<void>((r) => proxy.bind(0, '::1', () => r()));
    const proxyPort = proxy.address().port;
    const client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '::1' }));
    try {
      const ex = requestViaProxy(client, { proxy: { address: '::1', port: proxyPort }, uri: 'coap://[ff02::fd]/r', multicastTimeout: 5, timeout: 30_000 });
      const [reqData, rinfo] = (await once(proxy, 'message')) as [Buffer, dgram.RemoteInfo];
      const req = decode(reqData);
      proxy.send(encode({ type: 'ACK', code: 0, messageId: req.messageId, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) }), rinfo.port, rinfo.address);
      const replyFrom = encodeReplyFrom({ scheme: 'coap', host: '::1', port: proxyPort }, { scheme: null, host: '::1', port: 5999 });
      proxy.send(
        encode(createMessage({ type: 'NON', code: CODES.CONTENT, messageId: 100, token: req.token, options: [{ number: OPT.BLOCK2, value: encodeBlock({ num: 0, more: true, szx: 0 }) }, { number: optionNumber('Reply-From'), value: replyFrom }], payload: Buffer.alloc(16, 0x61) })),
        rinfo.port,
        rinfo.address,
      );
      const [followData] = (await once(proxy, 'message')) as [Buffer, dgram.RemoteInfo];
      const follow = decode(followData);
      assert.equal(getOption(follow, OPT.URI_HOST)?.toString(), '[::1]');
      assert.equal(getOption(follow, OPT.URI_PORT)?.readUIntBE(0, 2), 5999);
      assert.equal(decodeBlock(getOption(follow, OPT.BLOCK2)!).num, 1);
      proxy.send(
        encode(createMessage({ type: 'ACK', code: CODES.CONTENT, messageId: follow.messageId, token: follow.token, options: [{ number: OPT.BLOCK2, value: encodeBlock({ num: 1, more: false, szx: 0 }) }], payload: Buffer.from('end') })),
        rinfo.port,
        rinfo.address,
      );
      const [whole] = (await once(ex, 'response')) as [{ message: { payload: Buffer } }];
      assert.equal(whole.message.payload.toString(), 'a'.repeat(16) + 'end');
      ex.cancel();
      await ex.summary;
    } finally {
      await closeChecked(client);
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });
});
