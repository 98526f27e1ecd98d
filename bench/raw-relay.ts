// The physical limit for a group proxy on this machine (issue 12): a raw node:dgram relay that takes a client's
// datagram, sends it unchanged to the group, and sends every datagram that comes back to the last client, with
// nothing parsed; and a raw node:dgram client that drives it (it reads only the token, to count a round's answers).
// The same raw client also drives the real proxy (a forward-proxy request: Proxy-Uri and Multicast-Timeout, its
// address verified once with Echo), so that proxy and raw relay are measured with one client that costs nearly
// nothing. Used by bench/proxy.ts. Loopback only: multicast pinned to 127.0.0.1, TTL 1.

import crypto from 'node:crypto';
import dgram from 'node:dgram';
import { decode, encode } from '../src/coap/codec';
import { CODES } from '../src/coap/codes';
import { CoapOption } from '../src/coap/message';
import { OPT, encodeUint, optionNumber } from '../src/coap/options';
import { literalLookup } from '../src/transport/udp-transport';

export interface RawRelay {
  address: string;
  port: number;
  close(): Promise<void>;
}

async function bound(recvBufferSize = 4 << 20): Promise<dgram.Socket> {
  // the same synchronous lookup of address literals as our transport (udp-transport.ts): the baseline sends as
  // fast as node:dgram can
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize, lookup: literalLookup });
  s.on('error', () => undefined);
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  return s;
}

const closeSocket = (s: dgram.Socket) => new Promise<void>((resolve) => s.close(() => resolve()));

export async function openRawRelay(group: string, groupPort: number): Promise<RawRelay> {
  const front = await bound();
  const upstream = await bound();
  upstream.setMulticastInterface('127.0.0.1');
  upstream.setMulticastTTL(1);
  let client: dgram.RemoteInfo | undefined;
  front.on('message', (m, r) => {
    client = r;
    upstream.send(m, groupPort, group);
  });
  upstream.on('message', (m) => {
    if (client) front.send(m, client.port, client.address);
  });
  const a = front.address();
  return { address: a.address, port: a.port, close: async () => void (await Promise.all([closeSocket(front), closeSocket(upstream)])) };
}

/**
 * What the raw client asks for: `path` of the group behind a raw relay (the request a client would send the group
 * directly), or through a proxy the group URI `proxyUri` with Multicast-Timeout `tPrime` s (groupcomm-proxy-07
 * §5.1.1).
 */
export type RawTarget = { path: string } | { proxyUri: string; tPrime: number };

function targetOptions(t: RawTarget): CoapOption[] {
  if ('path' in t) return [{ number: OPT.URI_PATH, value: Buffer.from(t.path) }];
  return [{ number: OPT.PROXY_URI, value: Buffer.from(t.proxyUri) }, { number: optionNumber('Multicast-Timeout'), value: encodeUint(t.tPrime) }];
}

/** A NON GET with the target's options (in number order) and a fresh 4-byte token. */
function request(options: CoapOption[], mid: number): { token: string; bytes: Buffer } {
  const token = crypto.randomBytes(4);
  const bytes = encode({ type: 'NON', code: CODES.GET, messageId: mid & 0xffff, token, options, payload: Buffer.alloc(0) });
  return { token: token.toString('hex'), bytes };
}

/** The token of a CoAP datagram (RFC 7252 §3: TKL in the low 4 bits of byte 0), as hex; '' if malformed. */
function tokenOf(m: Buffer): string {
  const tkl = m.length > 0 ? m[0] & 0x0f : 0;
  return m.length >= 4 + tkl ? m.toString('hex', 4, 4 + tkl) : '';
}

export interface RawClient {
  /** ms until `n` answers to one request came back through the relay (undefined after `deadline` ms) */
  timeTo(n: number, deadline: number): Promise<number | undefined>;
  /** rounds of `n` answers with `window` requests in flight for `seconds`; completed rounds and answers per second */
  throughput(n: number, seconds: number, window: number): Promise<{ completed: number; relayedPerSecond: number; elapsed: number }>;
  /**
   * RFC 9175 §2.4: a proxy answers an address it has not verified with 4.01 + Echo and forwards nothing; send one
   * request, repeat it with the Echo, and resolve when the repeat is answered (any response: it was forwarded).
   * Rejects after 10 s.
   */
  verifyEcho(): Promise<void>;
  close(): Promise<void>;
}

export async function openRawClient(relay: { address: string; port: number }, target: RawTarget): Promise<RawClient> {
  const s = await bound();
  const waiting = new Map<string, (token: string, m: Buffer) => void>();
  s.on('message', (m) => {
    const t = tokenOf(m);
    waiting.get(t)?.(t, m);
  });
  const options = targetOptions(target);
  let mid = 1;
  const ask = (extra: CoapOption[]) =>
    new Promise<Buffer>((resolve, reject) => {
      const { token, bytes } = request([...options, ...extra].sort((a, b) => a.number - b.number), mid++);
      const timer = setTimeout(() => {
        waiting.delete(token);
        reject(new Error('no answer within 10 s'));
      }, 10_000);
      waiting.set(token, (_t, m) => {
        clearTimeout(timer);
        waiting.delete(token);
        resolve(m);
      });
      s.send(bytes, relay.port, relay.address);
    });
  return {
    async verifyEcho() {
      const first = decode(await ask([]));
      const echo = first.options.find((o) => o.number === OPT.ECHO)?.value;
      if (first.code !== CODES.UNAUTHORIZED || !echo) return; // verified already (or no Echo asked for)
      await ask([{ number: OPT.ECHO, value: echo }]);
    },
    timeTo(n, deadline) {
      const { token, bytes } = request(options, mid++);
      return new Promise((resolve) => {
        const t0 = process.hrtime.bigint();
        let got = 0;
        const timer = setTimeout(() => {
          waiting.delete(token);
          resolve(undefined);
        }, deadline);
        waiting.set(token, () => {
          if (++got === n) {
            clearTimeout(timer);
            waiting.delete(token);
            resolve(Number(process.hrtime.bigint() - t0) / 1e6);
          }
        });
        s.send(bytes, relay.port, relay.address);
      });
    },
    throughput(n, seconds, window) {
      const until = Date.now() + seconds * 1000;
      const t0 = Date.now();
      let completed = 0;
      let inflight = 0;
      return new Promise((resolve) => {
        const finish = () => {
          const elapsed = (Date.now() - t0) / 1000;
          resolve({ completed, relayedPerSecond: (completed * n) / elapsed, elapsed });
        };
        const launch = () => {
          while (inflight < window && Date.now() < until) {
            inflight++;
            const { token, bytes } = request(options, mid++);
            let got = 0;
            const done = () => {
              clearTimeout(timer);
              waiting.delete(token);
              inflight--;
              if (Date.now() < until) launch();
              else if (inflight === 0) finish();
            };
            // a round whose answers were lost ends after 3 s, like the proxied rounds' timeout
            const timer = setTimeout(done, 3000);
            waiting.set(token, () => {
              if (++got === n) {
                completed++;
                done();
              }
            });
            s.send(bytes, relay.port, relay.address);
          }
          if (inflight === 0) finish();
        };
        launch();
      });
    },
    close: () => closeSocket(s),
  };
}
