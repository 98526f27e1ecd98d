// Client side of multicast notifications (observe-multicast-notifications-15 §5, §8.2): register with GET +
// Observe 0; on a 5.03 informative response join GRP_ADDR:GRP_PORT, take token T, rebuild last_notif and accept
// notifications from SRV_ADDR:SRV_PORT in Observe order (RFC 7641 §3.4); answer the Feedback-Divider poll; free T
// on the multicast 5.03. An ordinary 2.xx answer means a traditional unicast observation, which works the same.
// With `security` (§9.3) the requests are protected, ph_req is verified and every notification is verified through
// it before anything else looks at it; what does not verify is counted and dropped.

import { EventEmitter } from 'node:events';
import { CborStructureError } from '../cbor/cri';
import { INFORMATIVE_RESPONSE_CONTENT_FORMAT, InformativeResponse, decodeInformativeResponse } from '../cbor/informative-response';
import { decodeCodeOptionsPayload } from '../coap/codec';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { CoapUri, formatUri, originUri, parseUri, socketAddress, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { Clock, unrefTimer } from '../messaging/parameters';
import { RemoteAddress, canJoinGroups } from '../transport/udp-transport';
import type { MulticastObserverSecurity, ResponseVerifier } from './observe-security';

export interface Notification {
  message: CoapMessage;
  /** the server (SRV_ADDR:SRV_PORT) */
  origin: { address: string; port: number; uri: string };
  /** Observe value */
  sequence: number;
  /** how it arrived: the group, a unicast notification, or rebuilt from last_notif */
  via: 'multicast' | 'unicast' | 'last_notif';
}

export interface MulticastObserverOptions {
  /** the resource on the server, e.g. coap://127.0.0.2:5683/alarm */
  uri: string | CoapUri;
  /** interface for joining the group (IPv4 address or ::%if); default 127.0.0.1 */
  groupInterface?: string;
  /** leisure before answering a Feedback-Divider poll, ms (RFC 7252 DEFAULT_LEISURE 5 s) */
  leisure?: number;
  /** extra options for the registration */
  options?: CoapOption[];
  /** ms to wait for the answer to the registration (default 30000) */
  timeout?: number;
  /**
   * register through this forward proxy (Proxy-Uri); the proxy observes once for all its clients and relays
   * every notification on this client's token (multicast-notifications-proxy-02 §3)
   */
  proxy?: RemoteAddress;
  /** clock for the registration timeout, the poll leisure and Observe freshness (default: the endpoint's) */
  clock?: Clock;
  /** §9.3: protect the requests and verify what comes back (Group OSCORE: observe/group-oscore.ts) */
  security?: MulticastObserverSecurity;
}

/**
 * Observers of one group observation share its token T (§4.2.1.1: the server chose it for the whole group), so
 * several observers on one endpoint cannot each claim T with endpoint.listen. They share one listener per
 * endpoint and token, which hands every notification to each of them once; the last one to leave retires T.
 */
interface SharedGroupListener {
  remote: RemoteAddress;
  handlers: Set<(res: IncomingResponse) => void>;
  stop: () => void;
}
const groupListeners = new WeakMap<CoapEndpoint, Map<string, SharedGroupListener>>();

function listenGroup(endpoint: CoapEndpoint, token: Buffer, remote: RemoteAddress, handler: (res: IncomingResponse) => void): () => void {
  let byToken = groupListeners.get(endpoint);
  if (!byToken) groupListeners.set(endpoint, (byToken = new Map()));
  const key = token.toString('hex');
  let shared = byToken.get(key);
  if (shared && (shared.remote.address !== remote.address || shared.remote.port !== remote.port)) {
    throw new Error(`token ${key} is already used for the notifications of ${shared.remote.address}:${shared.remote.port}`);
  }
  if (!shared) {
    const handlers = new Set<(res: IncomingResponse) => void>();
    const stop = endpoint.listen(token, (res) => {
      for (const h of [...handlers]) h(res);
    }, remote);
    shared = { remote, handlers, stop };
    byToken.set(key, shared);
  }
  const entry = shared;
  entry.handlers.add(handler);
  return () => {
    if (!entry.handlers.delete(handler) || entry.handlers.size > 0) return;
    if (byToken.get(key) === entry) byToken.delete(key);
    entry.stop();
  };
}

/** RFC 7641 §3.4: is V2 (arriving at t2) fresher than V1 (at t1)? */
export function isFresher(v1: number, t1: number, v2: number, t2: number): boolean {
  return (v1 < v2 && v2 - v1 < 1 << 23) || (v1 > v2 && v1 - v2 > 1 << 23) || t2 > t1 + 128_000;
}

/**
 * observe-multicast-notifications-15 §8.2, a client polled with Feedback-Divider Q: answer with probability 2^-Q,
 * after a random part of the leisure (RFC 7252 DEFAULT_LEISURE 5 s). Emits 'feedback' ({divider, answered}) on
 * `observer`; when answering, `send` runs on a timer of `clock` kept in `timers` until it fires, so the observer's
 * end clears it. Shared by MulticastObserver and TicketObserver.
 */
export function answerCountingPoll(q: number, observer: { emit(event: 'feedback', info: { divider: number; answered: boolean }): boolean; clock: Clock; timers: Set<unknown>; leisure?: number }, send: () => void): void {
  const respond = Math.floor(Math.random() * 2 ** Math.min(q, 30)) === 0;
  observer.emit('feedback', { divider: q, answered: respond });
  if (!respond) return;
  const t = observer.clock.setTimeout(() => {
    observer.timers.delete(t);
    send();
  }, Math.random() * (observer.leisure ?? 5000));
  observer.timers.add(t);
}

/**
 * Events: 'informative' (InformativeResponse), 'notification' (Notification), 'cancelled', 'error' (Error),
 * 'feedback' ({divider, answered}).
 */
export class MulticastObserver extends EventEmitter {
  mode: 'pending' | 'multicast' | 'unicast' | 'ended' = 'pending';
  informative?: InformativeResponse;
  private readonly uri: CoapUri;
  private readonly server: RemoteAddress;
  private regToken?: Buffer;
  /** the registration went again with the proxy's Echo (RFC 9175 §2.4) */
  private echoed = false;
  private stopReg?: () => void;
  private stopGroup?: () => void;
  private groupAddress?: string;
  private groupPort?: number;
  private last?: { seq: number; at: number };
  private readonly timers = new Set<unknown>();
  private readonly clock: Clock;
  /** with security: messages that did not verify (dropped), by where they came */
  readonly counters = { rejectedUnicast: 0, rejectedMulticast: 0 };
  private unicastVerifier?: ResponseVerifier;
  private notificationVerifier?: ResponseVerifier;

  constructor(
    readonly endpoint: CoapEndpoint,
    private readonly o: MulticastObserverOptions,
  ) {
    super();
    this.clock = o.clock ?? endpoint.clock;
    this.uri = typeof o.uri === 'string' ? parseUri(o.uri) : o.uri;
    this.server = { address: socketAddress(this.uri), port: this.uri.port };
    this.peer = o.proxy ?? this.server;
  }

  /** where the registration goes: the server, or the proxy */
  private readonly peer: RemoteAddress;

  private targetOptions(): CoapOption[] {
    return this.o.proxy ? [{ number: OPT.PROXY_URI, value: Buffer.from(formatUri(this.uri), 'utf8') }] : uriToOptions(this.uri);
  }

  /** Send the registration (CON GET, Observe 0). Resolves with the resulting mode. */
  start(): Promise<'multicast' | 'unicast'> {
    return new Promise((resolve, reject) => {
      // a unicast registration: a notification after we forgot it gets a RST (RFC 7641 §3.6), so a unicast-kind token
      const token = this.endpoint.newToken(undefined, true);
      this.regToken = token;
      // An empty ACK promises a separate response: if none comes, do not wait for ever.
      const timer = this.clock.setTimeout(() => this.mode === 'pending' && this.fail(new Error(`no answer to the registration within ${this.o.timeout ?? 30_000} ms`)), this.o.timeout ?? 30_000);
      unrefTimer(timer); // never what keeps a process alive
      const settle = (mode: 'multicast' | 'unicast') => {
        this.clock.clearTimeout(timer);
        this.off('error', fail);
        resolve(mode);
      };
      const fail = (err: Error) => {
        this.clock.clearTimeout(timer);
        this.off('mode', settle);
        reject(err);
      };
      this.once('error', fail);
      this.once('mode', settle);
      this.stopReg = this.endpoint.listen(token, (res) => this.onUnicast(res), this.peer);
      try {
        this.register(token);
      } catch (err) {
        this.stopReg();
        return fail(err as Error);
      }
    });
  }

  /** The registration; again with the proxy's Echo (RFC 9175 §2.4). Throws when the security hook cannot protect it. */
  private register(token: Buffer, echo?: Buffer): void {
    let msg = createMessage({
      type: 'CON', code: CODES.GET, token, messageId: this.endpoint.newMessageId(this.peer),
      options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...this.targetOptions(), ...(this.o.options ?? [])],
    });
    msg = this.protect(msg, (v) => (this.unicastVerifier = v));
    // The proxy's Echo is for the proxy, outside any end-to-end protection (RFC 9175 §2.2.1: Echo is per hop).
    if (echo) msg = { ...msg, options: sortOptions([...msg.options, { number: OPT.ECHO, value: echo }]) };
    this.endpoint.sendMessage(msg, this.peer, {
      onFail: (err) => this.fail(err),
      onReset: () => this.fail(new Error('the server answered the registration with RST')),
    });
  }

  private origin(): Notification['origin'] {
    return { address: this.server.address, port: this.server.port, uri: originUri(this.server.address, this.server.port) };
  }

  /** §9: the security hook's request protection (identity without security). */
  private protect(msg: CoapMessage, keep?: (v: ResponseVerifier) => void): CoapMessage {
    if (!this.o.security) return msg;
    const p = this.o.security.protectRequest(msg);
    keep?.(p.responses);
    return p.message;
  }

  private onUnicast(res: IncomingResponse): void {
    let m = res.message;
    if (this.echoChallenge(m)) return;
    if (this.unicastVerifier) {
      try {
        m = this.unicastVerifier.verify(m);
      } catch (err) {
        // RFC 8613 §8.4: an unverifiable response is dropped; the registration may still be answered properly.
        this.counters.rejectedUnicast++;
        this.report(err as Error);
        return;
      }
    }
    const cf = getOption(m, OPT.CONTENT_FORMAT);
    if (m.code === CODES.SERVICE_UNAVAILABLE && cf !== undefined && decodeUint(cf) === INFORMATIVE_RESPONSE_CONTENT_FORMAT) {
      this.onInformative(m, res.remote).catch((err: Error) => this.fail(err));
      return;
    }
    if (codeClass(m.code) === 2 && getOption(m, OPT.OBSERVE) !== undefined) {
      if (this.mode === 'pending') {
        this.mode = 'unicast';
        this.emit('mode', 'unicast');
      }
      this.deliver(m, 'unicast');
      return;
    }
    if (this.mode === 'pending') {
      this.fail(new Error(`registration answered ${codeToString(m.code)}${m.payload.length ? ': ' + m.payload.toString() : ''}`));
    } else if (codeClass(m.code) !== 2) {
      // RFC 7641 §3.2: a non-2.xx notification ends the observation.
      this.deliver(m, 'unicast');
      this.end(true);
    }
  }

  /**
   * RFC 9175 §2.4: the proxy verifies this address before it relays; the registration goes again with its Echo,
   * once. The proxy's own 4.01 is not end-to-end protected, so it is recognized before any verification.
   */
  private echoChallenge(m: CoapMessage): boolean {
    const echo = getOption(m, OPT.ECHO);
    if (!(this.mode === 'pending' && this.o.proxy && m.code === CODES.UNAUTHORIZED && echo !== undefined && getOption(m, OPT.OSCORE) === undefined && !this.echoed && this.regToken)) return false;
    this.echoed = true;
    try {
      this.register(this.regToken, echo);
    } catch (err) {
      this.fail(err as Error);
    }
    return true;
  }

    private async onInformative(m: CoapMessage, remote: RemoteAddress): Promise<void> {
    let ir: InformativeResponse;
    try {
      ir = decodeInformativeResponse(m.payload);
      if (!ir.tpInfo) throw new CborStructureError('tp_info missing');
      // §4.2.1.1: tpi_server MUST equal the source of the informative response.
      const s = ir.tpInfo.server;
      if (s.host !== remote.address.split('%')[0] || s.port !== remote.port) throw new CborStructureError(`tpi_server ${s.host}:${s.port} is not the responder ${remote.address}:${remote.port}`);
      if (ir.phReq) {
        const ph = decodeCodeOptionsPayload(ir.phReq);
        if (ph.code !== CODES.GET && ph.code !== CODES.FETCH) throw new CborStructureError('ph_req is not a GET/FETCH');
        // §9.3.1: verify the phantom request (no replay check) and keep what every notification is bound to.
        if (this.o.security) this.notificationVerifier = this.o.security.verifyPhantom({ code: ph.code, options: ph.options, payload: Buffer.from(ph.payload) }, remote);
      } else if (this.o.security) {
        throw new CborStructureError('protected notifications need ph_req in the informative response (§9.3.1)');
      }
    } catch (err) {
      // §5.2: invalid fields: withdraw.
      return this.fail(err as Error);
    }
    this.informative = ir;
    this.emit('informative', ir);
    if (this.mode === 'multicast') return; // a repeated informative response (e.g. after re-registration)
    const t = ir.tpInfo!;
    const transport = this.endpoint.transport;
    try {
      if (!canJoinGroups(transport)) throw new Error('this transport cannot join groups');
      await transport.joinGroup({ address: t.client.host, port: t.client.port, interfaces: [this.o.groupInterface ?? (t.client.host.includes(':') ? '::%lo' : '127.0.0.1')] });
      // The membership is counted per transport: only one that was joined is left again (by end()).
      if (this.mode === 'ended') return void transport.leaveGroup(t.client.host, t.client.port); // cancelled meanwhile
      this.groupAddress = t.client.host;
      this.groupPort = t.client.port;
      // The client MUST use T as its local token for this observation.
      this.stopGroup = listenGroup(this.endpoint, t.token, { address: t.server.host, port: t.server.port }, (res) => this.onMulticast(res));
    } catch (err) {
      return this.fail(err as Error);
    }
    this.stopReg?.();
    this.stopReg = undefined;
    this.mode = 'multicast';
    this.emit('mode', 'multicast');
    if (ir.lastNotif) {
      // §5.2 step 2.5-2.6: rebuild the latest notification; its Observe value is the baseline. Feedback-Divider
      // in a rebuilt notification is ignored (§8.2). A malformed one is reported, and the observation goes on.
      try {
        const d = decodeCodeOptionsPayload(ir.lastNotif);
        let last: CoapMessage = { type: 'NON', code: d.code, messageId: 0, token: t.token, options: d.options, payload: Buffer.from(d.payload) };
        // §9.3.1: last_notif is verified like any notification.
        if (this.notificationVerifier) last = this.notificationVerifier.verify(last);
        this.deliver(last, 'last_notif');
      } catch (err) {
        this.report(err as Error);
      }
    }
  }

  private onMulticast(res: IncomingResponse): void {
    let m = res.message;
    if (this.notificationVerifier) {
      try {
        m = this.notificationVerifier.verify(m);
      } catch (err) {
        // Forged, replayed or from another context: dropped before anything (even a cancellation) is acted on.
        this.counters.rejectedMulticast++;
        this.report(err as Error);
        return;
      }
    }
    if (m.code === CODES.SERVICE_UNAVAILABLE && getOption(m, OPT.OBSERVE) === undefined) {
      // §5.3: the group observation was cancelled.
      this.end(true);
      return;
    }
    this.deliver(m, 'multicast');
    const fd = getOption(m, optionNumber('Feedback-Divider'));
    if (fd !== undefined && codeClass(m.code) === 2) this.answerPoll(decodeUint(fd));
  }

  private deliver(m: CoapMessage, via: Notification['via']): void {
    const obs = getOption(m, OPT.OBSERVE);
    const seq = obs === undefined ? -1 : decodeUint(obs);
    const now = this.clock.now();
    if (obs !== undefined && this.last && via !== 'last_notif' && !isFresher(this.last.seq, this.last.at, seq, now)) return; // stale, reordered
    if (obs !== undefined) this.last = { seq, at: now };
    this.emit('notification', { message: m, origin: this.origin(), sequence: seq, via } satisfies Notification);
  }

  /** §8.2 client: with probability 2^-Q, after a random part of the leisure, confirm interest. */
  private answerPoll(q: number): void {
    answerCountingPoll(q, { emit: (e, info) => this.emit(e, info), clock: this.clock, timers: this.timers, leisure: this.o.leisure }, () => {
      if (this.mode !== 'multicast') return;
      let token: Buffer;
      try {
        // nothing is expected back: the token is retired at once (groupcomm-bis §3.1.5)
        token = this.endpoint.newOneShotToken();
      } catch (err) {
        return this.report(err as Error); // the retired-token cap is reached: skip this confirmation
      }
      const plain = createMessage({
        type: 'NON', code: CODES.GET, token, messageId: this.endpoint.newMessageId(this.peer),
        options: [
          { number: OPT.OBSERVE, value: Buffer.alloc(0) },
          ...this.targetOptions(),
          { number: OPT.NO_RESPONSE, value: encodeUint(26) },
          { number: optionNumber('Feedback-Divider'), value: Buffer.alloc(0) },
        ],
      });
      let msg: CoapMessage;
      try {
        msg = this.protect(plain);
      } catch (err) {
        return this.report(err as Error);
      }
      // §8.2: to the same destination as the original registration (the proxy, if it went through one)
      this.endpoint.sendMessage(msg, this.peer);
    });
  }

  /** 'error' without throwing when nobody listens (a library user may not have attached a listener). */
  private report(err: Error): void {
    if (this.listenerCount('error')) this.emit('error', err);
  }

  private fail(err: Error): void {
    this.report(err);
    this.end(false);
  }

  private end(cancelled: boolean): void {
    if (this.mode === 'ended') return;
    this.mode = 'ended';
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    this.stopReg?.();
    this.stopGroup?.();
    this.stopReg = this.stopGroup = undefined;
    if (this.groupAddress) void this.endpoint.transport.leaveGroup?.(this.groupAddress, this.groupPort);
    if (cancelled) this.emit('cancelled');
  }

  /** Forget the observation (§5.3: no message needed for a group observation; RFC 7641 §3.6 for unicast). */
  cancel(): void {
    if (this.mode === 'unicast' && this.regToken) {
      const msg = createMessage({ type: 'NON', code: CODES.GET, token: this.regToken, messageId: this.endpoint.newMessageId(this.peer), options: [{ number: OPT.OBSERVE, value: encodeUint(1) }, ...this.targetOptions()] });
      try {
        this.endpoint.sendMessage(this.protect(msg), this.peer);
      } catch (err) {
        this.report(err as Error);
      }
    }
    this.end(false);
  }
}
