// Fuzzing the group proxy on real sockets: mutated proxy requests (flipped bytes, cut datagrams, random option
// values) from a source that is not allow-listed and from an allow-listed one that has answered Echo. Nothing may
// crash or throw in a handler; nothing from the source that is not allow-listed reaches the group; towards it the
// proxy never sends more than 3x what it got (RFC 9000 §8.1); the proxy's state stays within its limits.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { createMessage } from '../../src/coap/message';
import { OPT, encodeUint, optionNumber } from '../../src/coap/options';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy } from '../../src/proxy/group-proxy';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { GROUP_V4, lampsForSuite } from '../support/lamps';
import { waitFor } from '../support/wait';

/** A small deterministic PRNG (xorshift32), so a failing run can be repeated with its seed. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

describe('group proxy fuzzing (real sockets)', function () {
  this.timeout(60000);
  const group = lampsForSuite(3, { leisure: 10, firstHost: 60 });

  /** Mutations of valid proxy requests: byte flips, truncation, random options, random lengths. */
  function fuzzed(rand: () => number, n: number, echo?: Buffer): Buffer[] {
    const mt = optionNumber('Multicast-Timeout');
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const options = [
        { number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${group.port}/light`) },
        { number: mt, value: encodeUint(Math.floor(rand() * 3)) },
        ...(echo ? [{ number: OPT.ECHO, value: echo }] : []),
      ];
      const extra = Math.floor(rand() * 4);
      for (let k = 0; k < extra; k++) options.push({ number: [OPT.URI_PATH, OPT.URI_HOST, OPT.OBSERVE, OPT.HOP_LIMIT, OPT.NO_RESPONSE, 65001, 2049, mt][Math.floor(rand() * 8)], value: Buffer.from(Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256))) });
      let data: Buffer;
      try {
        data = encode(createMessage({ type: rand() < 0.5 ? 'CON' : 'NON', code: [CODES.GET, CODES.POST, CODES.PUT, CODES.FETCH, 0x07][Math.floor(rand() * 5)], messageId: i, token: Buffer.from([i & 0xff, i >> 8]), options: options.sort((a, b) => a.number - b.number) }));
      } catch {
        continue; // an option value the encoder refuses: not a datagram
      }
      const m = Math.floor(rand() * 4);
      if (m === 1) data[4 + Math.floor(rand() * (data.length - 4))] ^= 1 << Math.floor(rand() * 8);
      else if (m === 2) data = data.subarray(0, 1 + Math.floor(rand() * (data.length - 1)));
      else if (m === 3) data[0] = (data[0] & 0xf0) | Math.floor(rand() * 16); // token length nibble
      out.push(Buffer.from(data));
    }
    return out;
  }

  async function run(allowed: boolean, seed: number): Promise<void> {
    const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
    const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: allowed ? '127.0.0.1' : '127.0.0.9' }] });
    let handlerErrors = 0;
    const causes = new Set<string>();
    for (const e of [listen, upstream, proxy]) e.on('handler-error', (err: Error) => (handlerErrors++, causes.add(String(err?.stack ?? err).split('\n').slice(0, 3).join(' | '))));
    // The fuzzer's socket is a CoAP endpoint too, so that it can answer the proxy's Echo first when allow-listed.
    const client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    let bytesIn = 0;
    let bytesOut = 0;
    sock.on('message', (m) => (bytesOut += m.length));
    const dest = listen.transport.address();
    const groupBefore = group.groupRequests();
    try {
      let echo: Buffer | undefined;
      if (allowed) {
        // answer Echo from the fuzzer's own address: send one valid request, take the Echo value the proxy gives
        const probe = createMessage({ type: 'CON', code: CODES.GET, messageId: 1, token: Buffer.from('e'), options: [{ number: optionNumber('Multicast-Timeout'), value: encodeUint(0) }, { number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${group.port}/light`) }] });
        const got = new Promise<Buffer>((resolve) => sock.once('message', (m) => resolve(m)));
        sock.send(encode(probe), dest.port, dest.address);
        const answer = await got;
        const { decode } = await import('../../src/coap/codec');
        echo = decode(answer).options.find((o) => o.number === OPT.ECHO)?.value;
        assert.ok(echo, 'the proxy asked the allow-listed address for Echo');
        bytesOut = 0;
        // a well-behaved client on another port still gets served while the fuzzing goes on
        await requestViaProxy(client, { proxy: dest, uri: `coap://${GROUP_V4}:${group.port}/light`, multicastTimeout: 0, timeout: 1000 }).summary;
      }
      const rand = prng(seed);
      const datagrams = fuzzed(rand, 3000, echo);
      for (let i = 0; i < datagrams.length; i += 200) {
        for (const d of datagrams.slice(i, i + 200)) {
          sock.send(d, dest.port, dest.address);
          bytesIn += d.length;
        }
        await waitFor(() => listen.counters.received >= i + Math.min(200, datagrams.length - i), 'the proxy read the batch', 15000);
      }
      assert.equal(handlerErrors, 0, `no handler threw: ${[...causes].join('; ')}`);
      assert.ok(proxy.activeExchanges <= 16, `at most 16 pending exchanges for the one host (${proxy.activeExchanges})`);
      if (!allowed) {
        assert.equal(group.groupRequests(), groupBefore, 'nothing from a source not allow-listed reached the group');
        assert.equal(upstream.counters.sent, 0);
        assert.ok(bytesOut <= 3 * bytesIn, `bytes out ${bytesOut} <= 3 x ${bytesIn}`);
      } else {
        assert.ok(group.groupRequests() > groupBefore, 'well-formed requests from the verified address were forwarded');
      }
    } finally {
      await proxy.close();
      await listen.close();
      await upstream.close();
      await client.close();
      await new Promise<void>((r) => sock.close(() => r()));
    }
    assert.equal(handlerErrors, 0);
  }

  it('3,000 mutated proxy requests from a source that is not allow-listed: no crash, nothing to the group, at most 3x back', async function () {
    await run(false, 0x5eed1 + Number(process.env.FUZZ_SEED ?? 0));
  });

  it('3,000 mutated proxy requests from an allow-listed address that answered Echo: no crash, state within the per-host limits', async function () {
    await run(true, 0x5eed2 + Number(process.env.FUZZ_SEED ?? 0));
  });
});
