// RFC 9175 §2.4 item 3: verifying that a client is reachable at its source address with an unprotected Echo option
// before doing work for it (a proxy before its first fan-out, groupcomm-proxy-07 §10; a server before it registers an
// observer of a Deterministic Request, draft-ietf-core-cacheable-oscore §3.1). Shared by both, so there is one Echo
// implementation for address checks.

import { createHmac, randomBytes } from 'node:crypto';
import { CODES } from '../coap/codes';
import { CoapMessage, CoapOption, getOption, sortOptions } from '../coap/message';
import { OPT } from '../coap/options';
import { Clock, systemClock } from './parameters';
import { RemoteAddress, peerKey } from '../transport/udp-transport';

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
    return createHmac('sha256', this.key).update(time).update(peerKey(remote.address, remote.port)).digest().subarray(0, 8);
  }

  /** The Echo value to send to `remote` (12 bytes, within RFC 9175 §2.2.1's 1-40). */
  challenge(remote: RemoteAddress): Buffer {
    const time = Buffer.alloc(4);
    time.writeUInt32BE(Math.floor(this.clock.now() / 1000) >>> 0);
    return Buffer.concat([time, this.mac(time, remote)]);
  }

  /** Has `remote` proved reachability within the interval? A valid, fresh `echo` from it proves it now. */
  check(remote: RemoteAddress, echo: Buffer | undefined): boolean {
    const k = peerKey(remote.address, remote.port);
    const now = this.clock.now();
    const at = this.verified.get(k);
    if (at !== undefined && now - at < this.interval) return true;
    if (echo === undefined || echo.length !== 12) return false;
    const time = echo.subarray(0, 4);
    const age = now - time.readUInt32BE(0) * 1000;
    if (age < -1000 || age > this.lifetime || !this.mac(time, remote).equals(echo.subarray(4))) return false;
    this.verified.delete(k);
    this.verified.set(k, now);
    if (this.verified.size > this.maxVerified) this.verified.delete(this.verified.keys().next().value!);
    return true;
  }
}

/** Most repeats of one registration answering Echo challenges (per group exchange, per shared observation). */
export const MAX_ECHO_ANSWERS = 16;
/**
 * ms, beyond the Leisure, after the registration went out within which a challenge is answered: a server answers a
 * group request within its Leisure (RFC 7252 §8.2); this covers the round trip and a busy host. A server whose
 * Leisure is longer than ours is not answered.
 */
export const ECHO_ANSWER_GRACE = 5000;
/**
 * ms before a registration sent again (a proxy's stale join) gets its budget of repeats back: EchoVerifier's default
 * interval, after which an honest server asks again; so joins cannot refill it faster.
 */
export const ECHO_ANSWER_REFILL = 600_000;

/** An unprotected 4.01 with an Echo option: a server asking this hop to prove its address (RFC 9175 §2.4 item 3). */
export function isEchoChallenge(msg: CoapMessage): boolean {
  return msg.code === CODES.UNAUTHORIZED && getOption(msg, OPT.OSCORE) === undefined && getOption(msg, OPT.ECHO) !== undefined;
}

/**
 * The other side of RFC 9175 §2.4 item 3 for a request sent to several servers at once (a group registration): each
 * server that answers with an unprotected 4.01 + Echo gets the same request again, to it alone and on the same
 * token, with its Echo added (an outer option: for that hop, outside any OSCORE protection, RFC 9175 §2.2.1).
 * Anyone who saw the token can forge such a challenge from a spoofed source, and the repeat is larger than the
 * challenge, so answers are bounded: once per server until sent(), at most `max` repeats per ECHO_ANSWER_REFILL
 * (sent() cannot refill it sooner), only an Echo of 1-40 bytes (RFC 9175 §2.2.1), and only within `window` ms of the
 * registration going out. Everything else is refused and counted.
 */
export class EchoAnswers {
  private answered = new Set<string>();
  private used = 0;
  private budgetAt: number;
  private sentAt: number;
  private readonly max: number;
  private readonly refill: number;
  /** challenges answered with a repeat */
  repeats = 0;
  /** challenges refused (bad Echo length, too late, server already answered, over the cap) */
  refused = 0;

  constructor(
    private readonly now: () => number,
    private readonly window: number,
    opts: { sentAt?: number; max?: number; refill?: number } = {},
  ) {
    this.sentAt = this.budgetAt = opts.sentAt ?? now();
    this.max = opts.max ?? MAX_ECHO_ANSWERS;
    this.refill = opts.refill ?? ECHO_ANSWER_REFILL;
  }

  /** The request to send again to `from`, or undefined when `challenge` is refused (see the class). */
  repeat(request: CoapMessage, challenge: CoapMessage, from: RemoteAddress): { code: number; token: Buffer; options: CoapOption[]; payload: Buffer } | undefined {
    if (!isEchoChallenge(challenge)) return undefined;
    const echo = getOption(challenge, OPT.ECHO)!;
    const server = peerKey(from.address, from.port);
    // RFC 9175 §2.2.1: an Echo value is 1 to 40 bytes
    if (echo.length < 1 || echo.length > 40 || this.now() - this.sentAt > this.window || this.answered.has(server) || this.used >= this.max) {
      this.refused++;
      return undefined;
    }
    this.answered.add(server);
    this.used++;
    this.repeats++;
    const options = sortOptions([...request.options.filter((o) => o.number !== OPT.ECHO), { number: OPT.ECHO, value: echo }]);
    return { code: request.code, token: request.token, options, payload: request.payload };
  }

  /** The request went to all servers again: each may challenge once more; the budget comes back once per refill. */
  sent(): void {
    const now = this.now();
    this.answered.clear();
    this.sentAt = now;
    if (now - this.budgetAt >= this.refill) {
      this.budgetAt = now;
      this.used = 0;
    }
  }
}
