// RFC 9175 §2.4 item 3: verifying that a client is reachable at its source address with an unprotected Echo option
// before doing work for it (a proxy before its first fan-out, groupcomm-proxy-07 §10; a server before it registers an
// observer of a Deterministic Request, draft-ietf-core-cacheable-oscore §3.1). Shared by both, so there is one Echo
// implementation for address checks.

import { createHmac, randomBytes } from 'node:crypto';
import { CODES } from '../coap/codes';
import { CoapMessage, CoapOption, getOption, sortOptions } from '../coap/message';
import { OPT } from '../coap/options';
import { Clock, systemClock } from './parameters';
import { RemoteAddress } from '../transport/udp-transport';

export interface EchoOptions {
  /** ms after which an address must prove reachability again (default 10 min) */
  interval?: number;
  /** ms an Echo value stays acceptable after it was issued (default 60 s) */
  lifetime?: number;
  /** most verified addresses remembered (default 10,000; the oldest is forgotten first) */
  maxVerified?: number;
  clock?: Clock;
}

/**
 * RFC 9175 §2.4 item 3: address verification with Echo. The value is stateless (issue time + a MAC over time,
 * address and port under a key that never leaves its owner), so challenging a flood costs no memory; only
 * addresses that answered are remembered, bounded in number (`maxVerified` entries of an "address|port" key, at most
 * 53 characters, and a number: about 100 bytes each, 1 MB at the default).
 */
export class EchoVerifier {
  private readonly key = randomBytes(32);
  private readonly verified = new Map<string, number>();
  private readonly clock: Clock;
  readonly interval: number;
  readonly lifetime: number;
  private readonly maxVerified: number;

  constructor(o: EchoOptions = {}) {
    this.clock = o.clock ?? systemClock;
    this.interval = o.interval ?? 600_000;
    this.lifetime = o.lifetime ?? 60_000;
    this.maxVerified = o.maxVerified ?? 10_000;
  }

  get size(): number {
    return this.verified.size;
  }

  private mac(time: Buffer, remote: RemoteAddress): Buffer {
    return createHmac('sha256', this.key).update(time).update(`${remote.address}|${remote.port}`).digest().subarray(0, 8);
  }

  /** The Echo value to send to `remote` (12 bytes, within RFC 9175 §2.2.1's 1-40). */
  challenge(remote: RemoteAddress): Buffer {
    const time = Buffer.alloc(4);
    time.writeUInt32BE(Math.floor(this.clock.now() / 1000) >>> 0);
    return Buffer.concat([time, this.mac(time, remote)]);
  }

  /**
   * Is `echo` a value this verifier issued to `remote` within the lifetime? This datagram's own proof, whatever was
   * verified before (for an action a verified address alone must not allow). Keeps no state.
   */
  proves(remote: RemoteAddress, echo: Buffer | undefined): boolean {
    if (echo === undefined || echo.length !== 12) return false;
    const time = echo.subarray(0, 4);
    const age = this.clock.now() - time.readUInt32BE(0) * 1000;
    if (age < -1000 || age > this.lifetime) return false;
    return this.mac(time, remote).equals(echo.subarray(4));
  }

  /** Has `remote` proved reachability within the interval? A valid, fresh `echo` from it proves it now. */
  check(remote: RemoteAddress, echo: Buffer | undefined): boolean {
    const k = `${remote.address}|${remote.port}`;
    const now = this.clock.now();
    const at = this.verified.get(k);
    if (at !== undefined && now - at < this.interval) return true;
    if (!this.proves(remote, echo)) return false;
    this.verified.delete(k);
    this.verified.set(k, now);
    if (this.verified.size > this.maxVerified) this.verified.delete(this.verified.keys().next().value!);
    return true;
  }
}

/**
 * The other side of RFC 9175 §2.4 item 3 for a request sent to several servers at once (a group registration): each
 * server that answers with an unprotected 4.01 + Echo gets the same request again, to it alone and on the same
 * token, with its Echo added (an outer option: for that hop, outside any OSCORE protection, RFC 9175 §2.2.1), once
 * per server until reset(); at most `max` servers, so a flood of forged challenges costs at most that many datagrams.
 */
export class EchoAnswers {
  private answered = new Set<string>();

  constructor(private readonly max: number) {}

  /** The request to send again to `from`, or undefined when `challenge` is not one to answer (then it is an error). */
  repeat(request: CoapMessage, challenge: CoapMessage, from: RemoteAddress): { code: number; token: Buffer; options: CoapOption[]; payload: Buffer } | undefined {
    if (challenge.code !== CODES.UNAUTHORIZED || getOption(challenge, OPT.OSCORE) !== undefined) return undefined;
    const echo = getOption(challenge, OPT.ECHO);
    const server = `${from.address}|${from.port}`;
    if (echo === undefined || this.answered.has(server) || this.answered.size >= this.max) return undefined;
    this.answered.add(server);
    const options = sortOptions([...request.options.filter((o) => o.number !== OPT.ECHO), { number: OPT.ECHO, value: echo }]);
    return { code: request.code, token: request.token, options, payload: request.payload };
  }

  /** The request went to all servers again: each may challenge again. */
  reset(): void {
    this.answered.clear();
  }
}
