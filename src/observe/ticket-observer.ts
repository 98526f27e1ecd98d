// A client observing a group resource through a proxy with end-to-end security (multicast-notifications-proxy-02 §4,
// observe-multicast-notifications-15 §9): the protected registration crosses the proxy, which cannot read the
// protected informative response and relays it; the client verifies it and ph_req (§9.3.1), and hands the proxy the
// ticket request (observe/ticket-request.ts), so that the proxy listens to the group and relays the protected
// notifications, which only the client can verify. The states are one machine: idle, registering, ticket,
// listening, ended.

import { EventEmitter } from 'node:events';
import { INFORMATIVE_RESPONSE_CONTENT_FORMAT, InformativeResponse, decodeInformativeResponse } from '../cbor/informative-response';
import { decodeCodeOptionsPayload } from '../coap/codec';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapMessage, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { CoapUri, formatUri, originUri, parseUri, socketAddress } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { Clock } from '../messaging/parameters';
import { RemoteAddress } from '../transport/udp-transport';
import { Notification, answerCountingPoll, isFresher } from './multicast-observer';
import type { MulticastObserverSecurity, ResponseVerifier } from './observe-security';
import { ECHO_ANSWER_WAIT_MS, RelayedNotification, TicketClient, TicketError } from './ticket-request';
import { answeringEcho } from '../proxy/proxy-client';

export type TicketObserverState = 'idle' | 'registering' | 'ticket' | 'listening' | 'ended';

/** A verified notification: rebuilt from last_notif, or relayed by the proxy on the ticket's token. */
export type TicketNotification = Omit<Notification, 'via'> & { via: 'last_notif' | 'proxy' };

export interface TicketObserverOptions {
  /** the resource on the server, e.g. coap://127.0.0.2:5683/alarm */
  uri: string | CoapUri;
  /** the forward proxy next to the server (the last proxy before it, MNP-02 §4) */
  proxy: RemoteAddress;
  /** end-to-end protection (Group OSCORE: multicastObserverSecurity of observe/group-oscore.ts) */
  security: MulticastObserverSecurity;
  /** ms to wait for the answer to the registration (default 30000) */
  timeout?: number;
  /** leisure before answering a Feedback-Divider poll, ms (RFC 7252 DEFAULT_LEISURE 5 s) */
  leisure?: number;
  /** timers and time (default: the endpoint's clock) */
  clock?: Clock;
}

/** What refused the observation, with the CoAP code that said so when there is one. */
export class TicketObserverError extends Error {
  constructor(
    message: string,
    readonly code: 'ERR_REGISTRATION' | 'ERR_NOT_GROUP_OBSERVATION' | 'ERR_INFORMATIVE' | 'ERR_TICKET_REFUSED' | 'ERR_ENDED',
    /** the response code of the server or proxy, e.g. "4.01" */
    readonly responseCode?: string,
  ) {
    super(message);
  }
}

/**
 * Events: 'state' (TicketObserverState), 'informative' (InformativeResponse), 'notification' (Notification with via
 * 'last_notif' or 'proxy'), 'rejected' (Error: a relayed message that did not verify; counted and dropped),
 * 'feedback' ({divider, answered}), 'cancelled' (the server ended the group observation), 'error' (Error).
 */
export class TicketObserver extends EventEmitter {
  state: TicketObserverState = 'idle';
  informative?: InformativeResponse;
  readonly counters = { received: 0, rejected: 0 };
  private readonly uri: CoapUri;
  private readonly server: RemoteAddress;
  private readonly clock: Clock;
  private ticket?: TicketClient;
  private last?: { seq: number; at: number };
  private readonly timers = new Set<unknown>();

  constructor(
    readonly endpoint: CoapEndpoint,
    private readonly o: TicketObserverOptions,
  ) {
    super();
    this.uri = typeof o.uri === 'string' ? parseUri(o.uri) : o.uri;
    this.server = { address: socketAddress(this.uri), port: this.uri.port };
    this.clock = o.clock ?? endpoint.clock;
  }

  /** cancelled, refused or ended by the server (a method: the state changes while start() awaits) */
  get ended(): boolean {
    return this.state === 'ended';
  }

  /** The ticket's token at the proxy (the proxy relays on it), once the ticket is sent. */
  get token(): Buffer | undefined {
    return this.ticket?.token;
  }

  private setState(s: TicketObserverState): void {
    if (this.state === s || this.state === 'ended') return;
    this.state = s;
    this.emit('state', s);
  }

  /** Register, verify, send the ticket. Resolves once the proxy accepted the ticket; rejects with what refused it. */
  async start(): Promise<void> {
    if (this.state !== 'idle') throw new Error(`already ${this.state}`);
    try {
      this.setState('registering');
      const { ir, notifications } = await this.register();
      if (this.ended) return;
      this.informative = ir;
      this.emit('informative', ir);
      this.setState('ticket');
      const lastNotif = this.rebuildLastNotif(ir);
      if (lastNotif) {
        try {
          // §9.3.1: verified like any notification; its Observe value is the baseline of the order (§5.2 step 2.6)
          lastNotif.verifiedAs = notifications.verify(lastNotif.message);
          this.last = this.observeOf(lastNotif.verifiedAs);
        } catch (err) {
          this.reject(err as Error); // the observation goes on
        }
      }
      // The proxy answers a ticket with the latest notification it knows: that is last_notif again, already delivered
      // (its Partial IV is used up), so the same ciphertext is recognized and skipped, not refused as a replay.
      const seen = lastNotif?.verifiedAs;
      const verifier: ResponseVerifier = {
        verify: (m) => {
          const same = seen && lastNotif && sameProtected(m, lastNotif.message);
          return same ? seen : notifications.verify(m);
        },
      };
      const tc = new TicketClient(this.endpoint, { proxy: this.o.proxy, target: formatUri(this.uri), informative: ir, verifier });
      this.ticket = tc;
      tc.on('notification', (n: RelayedNotification) => this.onRelayed(n.message));
      tc.on('rejected', (err: Error) => this.reject(err));
      tc.on('cancelled', () => this.end(true));
      tc.on('error', (err: Error) => {
        this.report(err);
        this.end(false);
      });
      try {
        await tc.start();
      } catch (err) {
        const e = err as Error;
        const code = e instanceof TicketError && e.code === 'ERR_REJECTED' ? codeToString(e.responseCode) : undefined;
        throw new TicketObserverError(code ? `the proxy refused the ticket (${code})` : `the ticket request failed: ${e.message}`, 'ERR_TICKET_REFUSED', code);
      }
      if (this.ended) return;
      this.setState('listening');
      // last_notif goes out once the proxy relays, so that the first output means "listening"; unless a newer
      // notification overtook it (then it is stale)
      const baseline = lastNotif?.verifiedAs && this.observeOf(lastNotif.verifiedAs);
      if (baseline && this.last?.seq === baseline.seq) this.emitNotification(lastNotif!.verifiedAs!, baseline.seq, 'last_notif');
    } catch (err) {
      this.end(false);
      throw err;
    }
  }

  /** The protected registration through the proxy (CON GET, Observe 0, Proxy-Uri), once more with the proxy's Echo. */
  private async register(): Promise<{ ir: InformativeResponse; notifications: ResponseVerifier }> {
    const plain = createMessage({
      type: 'CON', code: CODES.GET, token: Buffer.alloc(0), messageId: 0,
      options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.PROXY_URI, value: Buffer.from(formatUri(this.uri), 'utf8') }],
    });
    const reg = this.o.security.protectRequest(plain);
    const send = (echo?: Buffer) => {
      // RFC 9175 §2.2.1: the proxy's Echo is for this hop, outside the end-to-end protection.
      const options = echo ? sortOptions([...reg.message.options, { number: OPT.ECHO, value: echo }]) : reg.message.options;
      return this.endpoint.request({ code: reg.message.code, options, payload: reg.message.payload }, this.o.proxy, { timeout: this.o.timeout ?? 30_000 });
    };
    let res: IncomingResponse = await send();
    const challenge = getOption(res.message, OPT.ECHO);
    if (res.message.code === CODES.UNAUTHORIZED && challenge !== undefined && getOption(res.message, OPT.OSCORE) === undefined) res = await send(challenge);
    if (getOption(res.message, OPT.OSCORE) === undefined) {
      // not end to end: the proxy's own refusal (or a server that does not protect: not accepted either)
      throw new TicketObserverError(`the registration was answered ${codeToString(res.message.code)} without end-to-end protection`, 'ERR_REGISTRATION', codeToString(res.message.code));
    }
    let inner: CoapMessage;
    try {
      inner = reg.responses.verify(res.message);
    } catch (err) {
      throw new TicketObserverError(`the answer to the registration does not verify: ${(err as Error).message}`, 'ERR_REGISTRATION');
    }
    const cf = getOption(inner, OPT.CONTENT_FORMAT);
    if (inner.code !== CODES.SERVICE_UNAVAILABLE || cf === undefined || decodeUint(cf) !== INFORMATIVE_RESPONSE_CONTENT_FORMAT) {
      // A traditional observation (the server's threshold not reached) or a refusal: not served through a ticket.
      throw new TicketObserverError(`the server answered ${codeToString(inner.code)}, not with an informative response (no group observation to listen to)`, inner.code === CODES.CONTENT ? 'ERR_NOT_GROUP_OBSERVATION' : 'ERR_REGISTRATION', codeToString(inner.code));
    }
    let ir: InformativeResponse;
    let notifications: ResponseVerifier;
    try {
      ir = decodeInformativeResponse(inner.payload);
      if (!ir.tpInfo) throw new Error('tp_info missing');
      // OMN-15 §4.2.1.1: tpi_server is the source of the notifications; through the proxy it must be the target.
      const s = ir.tpInfo.server;
      if (s.host !== this.server.address.split('%')[0] || s.port !== this.server.port) throw new Error(`tpi_server ${s.host}:${s.port} is not the server ${this.server.address}:${this.server.port}`);
      // §9.3.1: ph_req is needed to verify notifications, and the proxy rebuilds it from the ticket.
      if (!ir.phReq) throw new Error('no ph_req (needed to verify the notifications, §9.3.1)');
      const ph = decodeCodeOptionsPayload(ir.phReq);
      notifications = this.o.security.verifyPhantom({ code: ph.code, options: ph.options, payload: Buffer.from(ph.payload) }, this.server);
    } catch (err) {
      // OMN-15 §5.2: invalid fields: withdraw.
      throw new TicketObserverError(`the informative response is not usable: ${(err as Error).message}`, 'ERR_INFORMATIVE');
    }
    return { ir, notifications };
  }

  private rebuildLastNotif(ir: InformativeResponse): { message: CoapMessage; verifiedAs?: CoapMessage } | undefined {
    if (!ir.lastNotif) return undefined;
    try {
      const d = decodeCodeOptionsPayload(ir.lastNotif);
      return { message: { type: 'NON', code: d.code, messageId: 0, token: ir.tpInfo!.token, options: d.options, payload: Buffer.from(d.payload) } };
    } catch (err) {
      this.report(err as Error);
      return undefined;
    }
  }

  /** A relayed message, already verified by the ticket client's verifier. */
  private onRelayed(m: CoapMessage): void {
    if (this.state === 'ended') return;
    if (m.code === CODES.SERVICE_UNAVAILABLE && getOption(m, OPT.OBSERVE) === undefined) return this.end(true);
    this.deliver(m, 'proxy');
    const fd = getOption(m, optionNumber('Feedback-Divider'));
    // OMN-15 §8.2; MNP-02 §5: protected end to end, the poll is invisible to the proxy: the client answers it.
    if (fd !== undefined && fd.length <= 1 && codeClass(m.code) === 2) this.answerPoll(decodeUint(fd));
  }

  private observeOf(m: CoapMessage): { seq: number; at: number } | undefined {
    const obs = getOption(m, OPT.OBSERVE);
    return obs === undefined ? undefined : { seq: decodeUint(obs), at: this.clock.now() };
  }

  /** A relayed notification, in Observe order (RFC 7641 §3.4). */
  private deliver(m: CoapMessage, via: 'proxy'): void {
    const o = this.observeOf(m);
    // on the verified Observe value (the Partial IV, RFC 8613 §7.4.1); the proxy's repeat of last_notif has the
    // baseline's value and stops here
    if (o && this.last && !isFresher(this.last.seq, this.last.at, o.seq, o.at)) return;
    if (o) this.last = o;
    this.emitNotification(m, o ? o.seq : -1, via);
  }

  private emitNotification(m: CoapMessage, seq: number, via: 'last_notif' | 'proxy'): void {
    this.counters.received++;
    const origin = { address: this.server.address, port: this.server.port, uri: originUri(this.server.address, this.server.port) };
    this.emit('notification', { message: m, origin, sequence: seq, via } satisfies TicketNotification);
  }

  /** OMN-15 §8.2 client: with probability 2^-Q, after a random part of the leisure, a protected confirmation. */
  private answerPoll(q: number): void {
    answerCountingPoll(q, { emit: (e, info) => this.emit(e, info), clock: this.clock, timers: this.timers, leisure: this.o.leisure }, () => {
      if (this.state !== 'listening') return;
      try {
        const token = this.endpoint.newOneShotToken();
        const plain = createMessage({
          // endpoint.request() below sends it with an ID of its own
          type: 'NON', code: CODES.GET, token, messageId: 0,
          options: [
            { number: OPT.OBSERVE, value: Buffer.alloc(0) },
            { number: OPT.PROXY_URI, value: Buffer.from(formatUri(this.uri), 'utf8') },
            { number: OPT.NO_RESPONSE, value: encodeUint(26) },
            { number: optionNumber('Feedback-Divider'), value: Buffer.alloc(0) },
          ],
        });
        const { message } = this.o.security.protectRequest(plain);
        // §8.2: to the same destination as the registration: the proxy, which forwards what it cannot read. Once
        // its Echo interval has passed it verifies this address again first (RFC 9175 §2.4): the 4.01 + Echo is
        // answered once, with the Echo outside the end-to-end protection (§2.2.1), as in register(); nothing else
        // is awaited (No-Response 26), and the wait is bounded by ECHO_ANSWER_WAIT_MS.
        answeringEcho((echo) => {
          if (echo.length && this.state !== 'listening') return Promise.reject(new Error('ended'));
          return this.endpoint.request({ type: 'NON', code: message.code, options: sortOptions([...message.options, ...echo]), payload: message.payload }, this.o.proxy, { confirmable: false, token, timeout: ECHO_ANSWER_WAIT_MS });
        }).catch(() => undefined);
      } catch (err) {
        this.report(err as Error);
      }
    });
  }

  private reject(err: Error): void {
    this.counters.rejected++;
    if (this.listenerCount('rejected')) this.emit('rejected', err);
  }

  /** 'error' without throwing when nobody listens. */
  private report(err: Error): void {
    if (this.listenerCount('error')) this.emit('error', err);
  }

  private end(cancelled: boolean): void {
    if (this.state === 'ended') return;
    this.setState('ended');
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    // the proxy forgets this client (a ticket client that already ended sends nothing)
    this.ticket?.cancel('deregister');
    if (cancelled) this.emit('cancelled');
  }

  /** Leave: the ticket is deregistered at the proxy (RFC 7641 §3.6 on its token); nothing goes to the server. */
  cancel(): void {
    this.end(false);
  }
}

/** The same protected message (its OSCORE option carries its own Partial IV, its payload the ciphertext). */
function sameProtected(a: CoapMessage, b: CoapMessage): boolean {
  const oa = getOption(a, OPT.OSCORE);
  const ob = getOption(b, OPT.OSCORE);
  return oa !== undefined && ob !== undefined && oa.equals(ob) && a.payload.equals(b.payload);
}
