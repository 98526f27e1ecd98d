// Observations of one Deterministic Request shared at the proxy (draft-ietf-core-cacheable-oscore-02 §3.1): every
// member of a group protects the same safe request into the same bytes, so when several clients observe it through
// the proxy, the proxy holds one upstream observation for all of them (as an RFC 7641 §5 proxy does for a plain
// request), relays each notification to every client on its own exchange, and answers a client that joins later with
// the latest fresh notification of each server. The proxy never reads the plaintext: the key is the request's
// Cache-Key (ciphertext and Request-Hash, groupcomm-proxy-07 §7.4).

import { codeClass } from '../coap/codes';
import { CoapMessage, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, encodeUint } from '../coap/options';
import { ECHO_ANSWER_GRACE, EchoAnswers, isEchoChallenge } from '../messaging/echo-verifier';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { RemoteAddress, peerKey } from '../transport/udp-transport';
import { maxAgeOf } from './cache';

/** Servers whose latest notification is kept per shared observation (a group larger than this gets no replay for the rest). */
const MAX_LATEST = 1024;

interface Shared<M> {
  key: string;
  request: CoapMessage;
  dest: RemoteAddress;
  members: Set<M>;
  /** the latest notification of each server ("addr|port") and when it came */
  latest: Map<string, { res: IncomingResponse; at: number }>;
  /** servers whose Echo challenge to the registration was answered since it last went to the group */
  echoAnswers: EchoAnswers;
  stop: () => void;
}

export interface SharedObservationHooks<M> {
  /** relay one upstream response to one member's client (the member's own exchange decides what to send) */
  relay(member: M, res: IncomingResponse): void;
  /** every upstream response, once, before it is relayed (e.g. to refresh the cache) */
  received?(key: string, res: IncomingResponse, anyMember: M): void;
}

/** A copy of `res` with its (outer) Max-Age set to `seconds`; without the datagram, which no longer matches. */
function withMaxAge(res: IncomingResponse, seconds: number): IncomingResponse {
  const options = sortOptions([...res.message.options.filter((o) => o.number !== OPT.MAX_AGE), { number: OPT.MAX_AGE, value: encodeUint(seconds) }]);
  return { message: { ...res.message, options }, remote: res.remote };
}

export class SharedObservations<M extends object> {
  private readonly byKey = new Map<string, Shared<M>>();
  private readonly byMember = new Map<M, Shared<M>>();

  constructor(
    private readonly upstream: CoapEndpoint,
    private readonly hooks: SharedObservationHooks<M>,
    private readonly now: () => number,
  ) {}

  /** Upstream observations held. */
  get count(): number {
    return this.byKey.size;
  }

  /** Echo challenges to the observation under `key` answered with a repeat, and refused (see EchoAnswers). */
  echoChallenges(key: string): { repeats: number; refused: number } | undefined {
    const a = this.byKey.get(key)?.echoAnswers;
    return a && { repeats: a.repeats, refused: a.refused };
  }

  /** Clients sharing the observation under `key`. */
  memberCount(key: string): number {
    return this.byKey.get(key)?.members.size ?? 0;
  }

  /**
   * `member` observes the request under `key`. The first one registers upstream: `request` (code, options with
   * Observe 0, payload) goes to `dest` on a token of the proxy's. A later one joins and is sent, through the relay
   * hook, the latest notification of every server whose Max-Age has not passed. Returns whether it joined.
   */
  join(key: string, member: M, request: { code: number; options: CoapMessage['options']; payload: Buffer }, dest: RemoteAddress): boolean {
    let s = this.byKey.get(key);
    if (s) {
      s.members.add(member);
      this.byMember.set(member, s);
      const now = this.now();
      let stale = s.latest.size === 0;
      for (const { res, at } of [...s.latest.values()]) {
        // RFC 7252 §5.7.1: a response served from here must not extend the Max-Age the server set: the rest of it
        const left = Math.floor(maxAgeOf(res.message) - (now - at) / 1000);
        if (left > 0) this.hooks.relay(member, withMaxAge(res, left));
        else stale = true;
      }
      if (stale) {
        // A server whose latest notification is no longer fresh (or none yet): register again on the shared token, so
        // that every server sends its current state (RFC 7641 §3.3.1, RFC 10020 §3.7); the other members get it too.
        s.echoAnswers.sent();
        try {
          this.upstream.sendMessage(createMessage({ ...s.request, messageId: this.upstream.newMessageId(s.dest) }), s.dest);
        } catch {
          // the endpoint is closing
        }
      }
      return true;
    }
    const token = this.upstream.newToken();
    const message = createMessage({ type: 'NON', code: request.code, token, messageId: this.upstream.newMessageId(dest), options: request.options, payload: request.payload });
    const created: Shared<M> = { key, request: message, dest, members: new Set([member]), latest: new Map(), echoAnswers: new EchoAnswers(this.now, this.upstream.params.DEFAULT_LEISURE + ECHO_ANSWER_GRACE), stop: () => undefined };
    s = created;
    this.byKey.set(key, s);
    this.byMember.set(member, s);
    created.stop = this.upstream.listen(token, (res) => this.received(created, res));
    try {
      this.upstream.sendMessage(message, dest, { onFail: () => this.end(created) });
    } catch {
      // cannot reach the group (e.g. the endpoint is closing): no observation; the member's exchange ends at its T'
      this.end(created);
    }
    return false;
  }

  private received(s: Shared<M>, res: IncomingResponse): void {
    if (this.byKey.get(s.key) !== s || s.members.size === 0) return;
    // draft-ietf-core-cacheable-oscore §3.1, RFC 9175 §2.4 item 3: a server verifies this proxy's address before it
    // registers it as an observer; the registration goes again to that server alone with its Echo, as a CON so that
    // the message layer retransmits it (bounded by EchoAnswers: once per server and registration, MAX_ECHO_ANSWERS
    // per ECHO_ANSWER_REFILL). The challenge is for this hop: no member ever sees one, answered or refused (a second
    // challenge, a forged one, one over the cap), and it does not end that server's latest notification.
    if (isEchoChallenge(res.message)) {
      const again = s.echoAnswers.repeat(s.request, res.message, res.remote);
      if (!again) return;
      try {
        this.upstream.sendMessage(createMessage({ ...again, type: 'CON', messageId: this.upstream.newMessageId(res.remote) }), res.remote);
      } catch {
        // the endpoint is closing
      }
      return;
    }
    const server = peerKey(res.remote.address, res.remote.port);
    // RFC 7641 §3.2: a 2.xx with Observe is a notification; anything else ends that server's observation.
    if (codeClass(res.message.code) === 2 && getOption(res.message, OPT.OBSERVE) !== undefined) {
      if (s.latest.has(server) || s.latest.size < MAX_LATEST) s.latest.set(server, { res, at: this.now() });
    } else s.latest.delete(server);
    try {
      this.hooks.received?.(s.key, res, s.members.values().next().value!);
    } catch (err) {
      // a hook's failure must not keep the notification from the members
      this.upstream.reportHandlerError(err);
    }
    for (const m of [...s.members]) this.hooks.relay(m, res);
  }

  /** The member's exchange ended (or deregistered): the last one to leave cancels the upstream observation. */
  leave(member: M): void {
    const s = this.byMember.get(member);
    if (!s) return;
    this.byMember.delete(member);
    s.members.delete(member);
    if (s.members.size === 0) this.end(s);
  }

  private end(s: Shared<M>): void {
    if (this.byKey.get(s.key) !== s) return;
    this.byKey.delete(s.key);
    for (const m of s.members) this.byMember.delete(m);
    s.members.clear();
    // RFC 7641 §3.6 / RFC 10020 §3.7: deregister on the same token, then stop listening to it.
    const dereg = createMessage({ ...s.request, messageId: this.upstream.newMessageId(s.dest), options: [...s.request.options.filter((o) => o.number !== OPT.OBSERVE), { number: OPT.OBSERVE, value: encodeUint(1) }].sort((a, b) => a.number - b.number) });
    try {
      this.upstream.sendMessage(dereg, s.dest);
    } catch {
      // the endpoint is closing: nothing to deregister on
    }
    s.stop();
  }
}
