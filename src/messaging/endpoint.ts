// The CoAP message layer (RFC 7252 §4, §5.3) with the group rules of groupcomm-bis §3.1 (RFC 10020):
// CON retransmission with exponential backoff, NON, ACK, RST, duplicate detection by (source, Message ID),
// piggybacked and separate responses, token matching (token + source for unicast, token alone for group requests),
// several responses per token until a deadline, no RST to late responses of our own group requests, and tokens
// retired for MIN_TOKEN_REUSE_TIME. Malformed input is counted and dropped (or answered with RST / 4.02).
// State a peer can make us keep is bounded: the duplicate cache in entries and bytes, retired tokens in number,
// NON messages awaiting a RST in number; a request handler that throws becomes an empty 5.00, never its message.

import { randomFillSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { CoapFormatError, decode, encode } from '../coap/codec';
import { CODES, isRequestCode, isResponseCode } from '../coap/codes';
import { CoapMessage, CoapOption, MessageType, createMessage } from '../coap/message';
import { CoapResponseError, isResponseError, toErrorResponse } from '../coap/errors';
import { isCritical, optionDef } from '../coap/options';
import { Datagram, RemoteAddress, Transport } from '../transport/udp-transport';
import { ExpiringMap } from './expiring-map';
import { Clock, DEFAULT_PARAMS, TransmissionParams, exchangeLifetime, minTokenReuseTime, nonLifetime, systemClock } from './parameters';

export interface IncomingRequest {
  message: CoapMessage;
  remote: RemoteAddress;
  /** arrived on a group receiver */
  multicast: boolean;
  group?: string;
}

export interface IncomingResponse {
  message: CoapMessage;
  remote: RemoteAddress;
}

/** What a request handler gets: reply once (or not at all, e.g. suppression of a group response). */
export interface RespondOptions {
  /**
   * A CON request gets an empty ACK first and the response follows as a confirmable message of its own (also for a
   * NON request), as observe-multicast-notifications-15 §4.2 requires of informative responses.
   */
  separate?: boolean;
  /**
   * false: the duplicate cache does not keep the reply's bytes (default true). A retransmission of the request is
   * then recognised as a duplicate and dropped without an answer, so a source that never proves it is reachable
   * (e.g. an unidentified proxy client) cannot make us hold large replies for EXCHANGE_LIFETIME.
   */
  keepReply?: boolean;
}

export interface ResponseContext {
  /**
   * Send the response; for a CON request it is piggybacked in the ACK if it comes soon enough (see RespondOptions).
   */
  respond(response: Partial<CoapMessage> & { code: number }, opts?: RespondOptions): void;
  /** Decide not to answer (group response suppression); an unanswered CON request still gets its empty ACK. */
  ignore(): void;
}

export type RequestHandler = (req: IncomingRequest, ctx: ResponseContext) => void;

/**
 * An error of the message layer (ERR_TIMEOUT, ERR_RESET, ERR_CLOSED, ERR_TOKEN_IN_USE, ERR_TOO_MANY_TOKENS). When
 * it becomes a response (e.g. a proxy's next hop timed out) it is `responseCode` (default 5.00) with no diagnostic:
 * `message` may name addresses and stays in logs.
 */
export class CoapError extends CoapResponseError {
  override name = 'CoapError';
  constructor(message: string, code: string, responseCode: number = CODES.INTERNAL_SERVER_ERROR) {
    super({ responseCode, code }, message);
  }
}

export interface EndpointOptions {
  params?: Partial<TransmissionParams>;
  clock?: Clock;
  /** token length for our requests (1..8, default 8) */
  tokenLength?: number;
  /** option numbers the application understands beyond the option table */
  understoodOptions?: number[];
  /** cap on remembered (source, MID) pairs; oldest are evicted first (default 100,000) */
  maxDedupEntries?: number;
  /**
   * cap on the bytes the duplicate cache holds: replies kept for retransmitted CONs plus an estimated
   * DEDUP_ENTRY_OVERHEAD per entry; oldest entries are evicted first (default 64 MiB: 100,000 entries take about
   * 40 MB, the rest holds kept replies)
   */
  maxDedupBytes?: number;
  /**
   * cap on retired tokens (groupcomm-bis §3.1.5), default 100,000. A retired token is never forgotten early; when
   * the cap is reached, new group requests, listeners and one-shot tokens are refused with ERR_TOO_MANY_TOKENS
   * (a CoapError that becomes 5.03) until old ones expire.
   */
  maxRetiredTokens?: number;
  /** cap on NON messages remembered for RST matching (SendOptions.onReset), default 10,000; oldest go first */
  maxNonResetEntries?: number;
  /** override MIN_TOKEN_REUSE_TIME (ms) */
  tokenReuseTime?: number;
}

export interface EndpointCounters {
  received: number;
  sent: number;
  malformed: Record<string, number>;
  duplicates: number;
  retransmissions: number;
  transmitTimeouts: number;
  resetsSent: number;
  resetsReceived: number;
  unmatchedResponses: number;
  lateGroupResponses: number;
  unknownCriticalOptions: number;
  handlerErrors: number;
  ignoredMessages: number;
  /** duplicate-cache entries evicted before EXCHANGE_LIFETIME because a cap (entries or bytes) was reached */
  dedupEvictions: number;
  /** group requests, listeners or one-shot tokens refused because maxRetiredTokens was reached */
  tokensRefused: number;
}

interface PendingCon {
  /** our Message ID: unique per endpoint (one counter for every peer) until it wraps */
  key: number;
  data: Buffer;
  remote: RemoteAddress;
  timeout: number;
  attempts: number;
  timer: unknown;
  onAck?: (msg: CoapMessage) => void;
  onReset?: () => void;
  onFail?: (err: CoapError) => void;
}

interface Exchange {
  token: Buffer;
  /** undefined for group requests: any source matches */
  remote?: RemoteAddress;
  multi: boolean;
  onResponse(res: IncomingResponse): void;
}

interface DedupEntry {
  key: string;
  /** the token as a latin1 string (cheaper to keep than a Buffer) */
  token: string;
  code: number;
  /** bytes of our reply, to repeat for a duplicate CON */
  reply?: Buffer;
}

interface NonAwaitingReset {
  remote: RemoteAddress;
  onReset: () => void;
}

/**
 * Memory of one duplicate-cache entry without its reply: the Map slot, the entry object, its key
 * ("address|port|mid") and token strings and the expiry queue slot. Measured on Node 20 (V8 heap after a GC,
 * 200,000 entries with IPv4 keys and 8-byte tokens): about 400 bytes. Used to bound the cache in bytes.
 */
export const DEDUP_ENTRY_OVERHEAD = 400;

export interface SendOptions {
  /** for CON: called with the ACK */
  onAck?: (msg: CoapMessage) => void;
  /**
   * A RST matching the message's Message ID and destination arrived. For a CON while it is retransmitted; for a NON
   * within NON_LIFETIME (RFC 7252 §4.3: a NON may be rejected with RST), as long as it is among the last
   * `maxNonResetEntries` NON messages sent with an onReset.
   */
  onReset?: () => void;
  onFail?: (err: CoapError) => void;
}

export interface RequestOptions {
  confirmable?: boolean;
  token?: Buffer;
  /** ms to wait for a NON request's response (CON uses the retransmission span, then this) */
  timeout?: number;
}

export interface GroupRequestHandle {
  token: Buffer;
  /** stop collecting now (the token stays retired) */
  cancel(): void;
}

// latin1 maps each byte to one char: a cheaper map key than hex, and just as unique
const tokenKey = (t: Buffer): string => t.toString('latin1');
const sameRemote = (a: RemoteAddress, b: RemoteAddress): boolean => a.port === b.port && a.address === b.address;

export class CoapEndpoint extends EventEmitter {
  readonly params: TransmissionParams;
  readonly counters: EndpointCounters = {
    received: 0, sent: 0, malformed: {}, duplicates: 0, retransmissions: 0, transmitTimeouts: 0, resetsSent: 0,
    resetsReceived: 0, unmatchedResponses: 0, lateGroupResponses: 0, unknownCriticalOptions: 0, handlerErrors: 0,
    ignoredMessages: 0, dedupEvictions: 0, tokensRefused: 0,
  };
  /** the clock every timer of this endpoint runs on; users of the endpoint default to it too */
  readonly clock: Clock;
  private readonly tokenLength: number;
  private readonly understood: Set<number>;
  private readonly maxRetired: number;
  private readonly tokenReuseTime: number;
  private readonly exchangeLifetimeMs: number;
  private readonly nonLifetimeMs: number;
  private nextMid = Math.floor(Math.random() * 0x10000);
  private readonly pendingCons = new Map<number, PendingCon>();
  private readonly exchanges = new Map<string, Exchange>();
  /** retired tokens, not to be reused before MIN_TOKEN_REUSE_TIME */
  private readonly retired = new ExpiringMap<true>();
  /** group and listen exchanges: each retires its token when it ends, so each holds a slot under maxRetired */
  private multiExchanges = 0;
  private readonly dedup: ExpiringMap<DedupEntry>;
  /** NON messages we sent with an onReset, by Message ID, for NON_LIFETIME */
  private readonly nonResets: ExpiringMap<NonAwaitingReset>;
  private readonly timers = new Set<unknown>();
  private handler?: RequestHandler;
  /** what pending requests and group exchanges do when the endpoint closes */
  private readonly closers = new Set<() => void>();
  private closed = false;
  private readonly onDatagram = (dg: Datagram) => this.receive(dg);

  constructor(
    readonly transport: Transport,
    opts: EndpointOptions = {},
  ) {
    super();
    this.params = { ...DEFAULT_PARAMS, ...opts.params };
    this.clock = opts.clock ?? systemClock;
    this.tokenLength = opts.tokenLength ?? 8;
    if (this.tokenLength < 1 || this.tokenLength > 8) throw new RangeError('tokenLength must be 1..8');
    this.understood = new Set(opts.understoodOptions ?? []);
    this.dedup = new ExpiringMap<DedupEntry>(opts.maxDedupEntries ?? 100_000, opts.maxDedupBytes ?? 64 * 1024 * 1024);
    this.maxRetired = opts.maxRetiredTokens ?? 100_000;
    this.nonResets = new ExpiringMap<NonAwaitingReset>(opts.maxNonResetEntries ?? 10_000);
    this.tokenReuseTime = opts.tokenReuseTime ?? minTokenReuseTime(this.params);
    this.exchangeLifetimeMs = exchangeLifetime(this.params);
    this.nonLifetimeMs = nonLifetime(this.params);
    transport.on('datagram', this.onDatagram);
  }

  /**
   * Count and report an unexpected exception of code that serves this endpoint (also asynchronous handlers of the
   * layers above): counters.handlerErrors and a 'handler-error' event. Tests assert that the count stays 0.
   */
  reportHandlerError(err: unknown): void {
    this.counters.handlerErrors++;
    this.emit('handler-error', err);
  }

  /** Serve requests (a server role); one handler per endpoint. */
  setRequestHandler(handler: RequestHandler | undefined): void {
    this.handler = handler;
  }

  // ---------------------------------------------------------------- timers

  private after(ms: number, fn: () => void): unknown {
    const h = this.clock.setTimeout(() => {
      this.timers.delete(h);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(h);
    return h;
  }

  private cancelTimer(h: unknown): void {
    if (h === undefined) return;
    this.clock.clearTimeout(h);
    this.timers.delete(h);
  }

  // ---------------------------------------------------------------- ids

  newMessageId(): number {
    const id = this.nextMid;
    this.nextMid = (this.nextMid + 1) & 0xffff;
    return id;
  }

  private tokenPool = Buffer.alloc(0);
  private tokenPoolPos = 0;

  /** A fresh random token not in use and not retired (groupcomm-bis §3.1.5). */
  newToken(length = this.tokenLength): Buffer {
    // Short tokens can run out (256 one-byte tokens): give up rather than loop for ever.
    for (let attempt = 0; ; attempt++) {
      if (attempt > 10_000) {
        this.counters.tokensRefused++;
        throw new CoapError('no free token', 'ERR_TOO_MANY_TOKENS', CODES.SERVICE_UNAVAILABLE);
      }
      if (this.tokenPoolPos + length > this.tokenPool.length) {
        this.tokenPool = randomFillSync(Buffer.allocUnsafe(4096));
        this.tokenPoolPos = 0;
      }
      const t = Buffer.from(this.tokenPool.subarray(this.tokenPoolPos, this.tokenPoolPos + length));
      this.tokenPoolPos += length;
      const k = tokenKey(t);
      if (!this.exchanges.has(k) && !this.retired.has(k, this.clock.now())) return t;
    }
  }

  /** True while a token may not be used for a new request. */
  isTokenBusy(token: Buffer): boolean {
    const k = tokenKey(token);
    return this.exchanges.has(k) || this.retired.has(k, this.clock.now());
  }

  /**
   * Retire a token (it must not be reused before MIN_TOKEN_REUSE_TIME). A retired token is never dropped early, so
   * this always records it; the cap is kept by refusing *new* tokens that will be retired (see newOneShotToken,
   * groupRequest, listen). A caller that retires a token drawn with newToken() bypasses that check: use
   * newOneShotToken() for a group message whose responses nobody waits for.
   */
  retireToken(token: Buffer): void {
    const k = tokenKey(token);
    const ex = this.exchanges.get(k);
    if (ex) this.dropExchange(k, ex);
    const now = this.clock.now();
    this.retired.sweep(now);
    this.retired.set(k, true, now + this.tokenReuseTime);
  }

  /** True if one more token may be retired without exceeding maxRetiredTokens. */
  canRetireToken(): boolean {
    this.retired.sweep(this.clock.now());
    return this.retired.size + this.multiExchanges < this.maxRetired;
  }

  private reserveRetireSlot(): void {
    if (this.canRetireToken()) return;
    this.counters.tokensRefused++;
    throw new CoapError('retired-token cap reached', 'ERR_TOO_MANY_TOKENS', CODES.SERVICE_UNAVAILABLE);
  }

  /**
   * A fresh token that is retired at once, for a group message sent once whose responses nobody waits for (e.g. a
   * proxy's T' = 0 forward, an Observe cancellation): groupcomm-bis §3.1.5 forbids reusing it before
   * MIN_TOKEN_REUSE_TIME, and retiring it before it is sent is the safe side of that. Throws ERR_TOO_MANY_TOKENS
   * (5.03) when maxRetiredTokens is reached.
   */
  newOneShotToken(length = this.tokenLength): Buffer {
    this.reserveRetireSlot();
    const token = this.newToken(length);
    this.retireToken(token);
    return token;
  }

  private dropExchange(k: string, ex: Exchange): void {
    if (this.exchanges.get(k) !== ex) return;
    this.exchanges.delete(k);
    if (ex.multi) this.multiExchanges--;
  }

  get activeExchanges(): number {
    return this.exchanges.size;
  }
  get retiredTokens(): number {
    this.retired.sweep(this.clock.now());
    return this.retired.size;
  }
  /** NON messages currently remembered for RST matching. */
  get nonResetEntries(): number {
    this.nonResets.sweep(this.clock.now());
    return this.nonResets.size;
  }

  // ---------------------------------------------------------------- sending

  /** Send a message as it is (a MID is assigned if 0 and not an ACK/RST). CON messages are retransmitted. */
  sendMessage(msg: CoapMessage, remote: RemoteAddress, opts: SendOptions = {}): void {
    if (this.closed) {
      opts.onFail?.(new CoapError('endpoint closed', 'ERR_CLOSED'));
      return;
    }
    const data = encode(msg);
    if (msg.type === 'CON') {
      const key = msg.messageId;
      const old = this.pendingCons.get(key);
      if (old) {
        // The Message ID wrapped while an old CON still waits: that one cannot be told apart any more.
        this.cancelTimer(old.timer);
        old.onFail?.(new CoapError('Message ID reused before the old message was acknowledged', 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT));
      }
      const p: PendingCon = {
        key, data, remote, attempts: 0, timer: undefined,
        // multiples of 10 ms: Node keeps one timer list per distinct duration
        timeout: Math.round((this.params.ACK_TIMEOUT * (1 + Math.random() * (this.params.ACK_RANDOM_FACTOR - 1))) / 10) * 10,
        onAck: opts.onAck, onReset: opts.onReset, onFail: opts.onFail,
      };
      this.pendingCons.set(key, p);
      this.armRetransmit(p);
    } else if (msg.type === 'NON' && opts.onReset) {
      // RFC 7252 §4.3: a NON may be answered with RST (e.g. an observer that forgot the observation, RFC 7641
      // §3.6). The Message ID is unique per endpoint until it wraps, so it identifies the message for NON_LIFETIME.
      const now = this.clock.now();
      this.nonResets.sweep(now);
      this.nonResets.set(String(msg.messageId), { remote: { address: remote.address, port: remote.port }, onReset: opts.onReset }, now + this.nonLifetimeMs);
    }
    this.transmit(data, remote);
  }

  private transmit(data: Buffer, remote: RemoteAddress): void {
    this.counters.sent++;
    this.transport.send(data, remote);
  }

  private armRetransmit(p: PendingCon): void {
    p.timer = this.after(p.timeout, () => {
      if (this.pendingCons.get(p.key) !== p) return;
      if (p.attempts >= this.params.MAX_RETRANSMIT) {
        this.pendingCons.delete(p.key);
        this.counters.transmitTimeouts++;
        p.onFail?.(new CoapError(`no ACK from ${p.remote.address}:${p.remote.port} after ${p.attempts} retransmissions`, 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT));
        return;
      }
      p.attempts++;
      p.timeout *= 2;
      this.counters.retransmissions++;
      this.transmit(p.data, p.remote);
      this.armRetransmit(p);
    });
  }

  /** Stop retransmitting a CON we sent (e.g. the exchange was cancelled). */
  cancelMessage(remote: RemoteAddress, messageId: number): void {
    const p = this.pendingCons.get(messageId);
    if (!p || !sameRemote(p.remote, remote)) return;
    this.cancelTimer(p.timer);
    this.pendingCons.delete(p.key);
  }

  /**
   * A unicast request with a single response. CON requests are retransmitted; the promise rejects with
   * ERR_TIMEOUT, ERR_RESET or ERR_CLOSED.
   */
  request(req: Partial<CoapMessage> & { code: number }, remote: RemoteAddress, opts: RequestOptions = {}): Promise<IncomingResponse> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new CoapError('endpoint closed', 'ERR_CLOSED'));
      const confirmable = opts.confirmable ?? req.type !== 'NON';
      const token = opts.token ?? req.token ?? this.newToken();
      const k = tokenKey(token);
      if (this.exchanges.has(k)) return reject(new CoapError('token in use', 'ERR_TOKEN_IN_USE'));
      const msg = createMessage({ ...req, type: confirmable ? 'CON' : 'NON', token, messageId: this.newMessageId() });
      let timer: unknown;
      let settled = false;
      const finish = (err?: Error, res?: IncomingResponse) => {
        if (settled) return;
        settled = true;
        this.cancelTimer(timer);
        this.cancelMessage(remote, msg.messageId);
        this.dropExchange(k, ex);
        this.closers.delete(onClose);
        if (err) reject(err);
        else resolve(res!);
      };
      const onClose = () => finish(new CoapError('endpoint closed', 'ERR_CLOSED'));
      this.closers.add(onClose);
      const ex: Exchange = {
        token, remote, multi: false,
        onResponse: (res) => {
          if (isEmptyAckOnly(res.message)) return;
          finish(undefined, res);
        },
      };
      this.exchanges.set(k, ex);
      const waitMs = opts.timeout ?? exchangeLifetime(this.params);
      const armWait = () => {
        timer = this.after(waitMs, () => finish(new CoapError(`no response from ${remote.address}:${remote.port}`, 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT)));
      };
      try {
        this.sendMessage(msg, remote, {
          onAck: (ack) => {
            // Piggybacked responses arrive through receive(). An empty ACK means a separate response follows; so
            // may an ACK carrying another token (e.g. a server's cached reply to an earlier use of this Message
            // ID): either way the exchange keeps a timer, so it can never hang.
            if (ack.code === 0 || !ack.token.equals(token)) armWait();
          },
          onReset: () => finish(new CoapError(`${remote.address}:${remote.port} answered with RST`, 'ERR_RESET')),
          onFail: (err) => finish(err),
        });
      } catch (err) {
        return finish(err as Error);
      }
      if (!confirmable) armWait();
    });
  }

  /**
   * A group request (groupcomm-bis §3.1): always NON, sent to a multicast address; every response with the token,
   * from any source, goes to `onResponse` until `deadline` ms, then `onEnd`, and the token is retired.
   */
  groupRequest(
    req: Partial<CoapMessage> & { code: number },
    group: RemoteAddress,
    deadline: number,
    onResponse: (res: IncomingResponse) => void,
    onEnd: () => void,
    opts: { token?: Buffer } = {},
  ): GroupRequestHandle {
    if (this.closed) throw new CoapError('endpoint closed', 'ERR_CLOSED');
    this.reserveRetireSlot();
    const token = opts.token ?? this.newToken();
    const k = tokenKey(token);
    if (this.exchanges.has(k)) throw new CoapError('token in use', 'ERR_TOKEN_IN_USE');
    const msg = createMessage({ ...req, type: 'NON', token, messageId: this.newMessageId() });
    let timer: unknown;
    // One closure per exchange: it is the deadline's callback, the close hook and the handle's cancel. It is
    // registered in `closers` (close() runs it, which clears the timer), so it needs no `after()` wrapper.
    const end = () => {
      if (timer === null) return;
      this.clock.clearTimeout(timer);
      timer = null;
      this.closers.delete(end);
      this.retireToken(token);
      onEnd();
    };
    const ex: Exchange = { token, multi: true, onResponse };
    this.exchanges.set(k, ex);
    this.multiExchanges++;
    timer = this.clock.setTimeout(end, deadline);
    this.closers.add(end);
    this.sendMessage(msg, group);
    return { token, cancel: end };
  }

  /**
   * Register a long-lived multi-response exchange on a token we chose (Observe, proxy relays). The caller
   * sends the request itself and calls the returned function to unregister (the token is then retired). Throws
   * ERR_TOKEN_IN_USE, or ERR_TOO_MANY_TOKENS (5.03) when maxRetiredTokens is reached.
   */
  listen(token: Buffer, onResponse: (res: IncomingResponse) => void, remote?: RemoteAddress): () => void {
    const k = tokenKey(token);
    if (this.exchanges.has(k)) throw new CoapError('token in use', 'ERR_TOKEN_IN_USE');
    this.reserveRetireSlot();
    const ex: Exchange = { token, remote, multi: true, onResponse };
    this.exchanges.set(k, ex);
    this.multiExchanges++;
    return () => {
      if (this.exchanges.get(k) === ex) this.retireToken(token);
    };
  }

  // ---------------------------------------------------------------- receiving

  private countMalformed(reason: string): void {
    this.counters.malformed[reason] = (this.counters.malformed[reason] ?? 0) + 1;
    this.emit('drop', reason);
  }

  /**
   * The one place an empty ACK is built (RFC 7252 §4.2): it acknowledges a CON whose response is separate or absent.
   * It is kept in the duplicate entry, so a retransmitted CON gets it again.
   */
  private sendEmptyAck(remote: RemoteAddress, messageId: number, entry: DedupEntry): void {
    const ack = encode({ type: 'ACK', code: 0, messageId, token: EMPTY, options: [], payload: EMPTY });
    this.keepReply(entry, ack);
    this.transmit(ack, remote);
  }

  /** Keep a reply in a duplicate entry, accounting for its bytes (the cache is bounded in bytes). */
  private keepReply(entry: DedupEntry, reply: Buffer): void {
    const before = this.dedup.evicted;
    this.dedup.addWeight(entry.key, reply.length - (entry.reply?.length ?? 0));
    entry.reply = reply;
    this.counters.dedupEvictions += this.dedup.evicted - before;
  }

  private sendRst(remote: RemoteAddress, messageId: number): void {
    this.counters.resetsSent++;
    this.transmit(encode({ type: 'RST', code: 0, messageId, token: EMPTY, options: [], payload: EMPTY }), remote);
  }

  private receive(dg: Datagram): void {
    if (this.closed) return;
    this.counters.received++;
    let msg: CoapMessage;
    try {
      msg = decode(dg.data);
    } catch (err) {
      if (err instanceof CoapFormatError) {
        this.countMalformed(err.reason);
        // RFC 7252 §4.2: a CON with a format error is rejected with RST; others are silently ignored.
        if (err.type === 'CON' && err.messageId !== undefined && !dg.multicast) this.sendRst(dg.remote, err.messageId);
      } else this.countMalformed('decode-failure');
      return;
    }
    try {
      this.dispatch(msg, dg);
    } catch (err) {
      this.reportHandlerError(err);
    }
  }

  private dispatch(msg: CoapMessage, dg: Datagram): void {
    const { remote } = dg;
    if (msg.type === 'ACK' || msg.type === 'RST') {
      if (msg.type === 'RST' && msg.code !== 0) return this.countMalformed('non-empty-reset');
      if (msg.type === 'ACK' && isRequestCode(msg.code)) return this.countMalformed('ack-with-request');
      if (dg.multicast) return this.countMalformed('ack-or-reset-to-group');
      const key = msg.messageId;
      const found = this.pendingCons.get(key);
      const p = found && sameRemote(found.remote, remote) ? found : undefined;
      if (!p) {
        // A RST to one of our NON messages (e.g. a notification the observer no longer wants, RFC 7641 §3.6).
        if (msg.type === 'RST') {
          this.counters.resetsReceived++;
          const nk = String(msg.messageId);
          const non = this.nonResets.get(nk, this.clock.now());
          if (non && sameRemote(non.remote, remote)) {
            this.nonResets.delete(nk);
            non.onReset();
          }
          this.emit('reset', remote, msg.messageId);
        } else this.counters.ignoredMessages++;
        return;
      }
      this.cancelTimer(p.timer);
      this.pendingCons.delete(key);
      if (msg.type === 'RST') {
        this.counters.resetsReceived++;
        p.onReset?.();
        this.emit('reset', remote, msg.messageId);
        return;
      }
      p.onAck?.(msg);
      if (msg.code !== 0) this.handleResponse(msg, remote, false);
      return;
    }
    // CON or NON
    if (msg.code === 0) {
      // RFC 7252 §4.3: "CoAP ping": an Empty CON is answered with RST; an Empty NON is ignored.
      if (msg.type === 'CON' && !dg.multicast) this.sendRst(remote, msg.messageId);
      else this.counters.ignoredMessages++;
      return;
    }
    // Duplicate detection (§4.5).
    const dkey = `${remote.address}|${remote.port}|${msg.messageId}`;
    const now = this.clock.now();
    this.dedup.sweep(now);
    const seen = this.dedup.get(dkey, now);
    // A retransmission repeats the message, token included; the same Message ID with another token is a new
    // message from a peer whose IDs wrapped within EXCHANGE_LIFETIME (busy proxies and fast clients do that).
    const token = tokenKey(msg.token); // a copy of the token bytes, not a view into the whole datagram
    if (seen && seen.token === token && seen.code === msg.code) {
      this.counters.duplicates++;
      if (msg.type === 'CON' && seen.reply) this.transmit(seen.reply, remote);
      return;
    }
    const entry: DedupEntry = { key: dkey, token, code: msg.code };
    const before = this.dedup.evicted;
    this.dedup.set(dkey, entry, now + (msg.type === 'CON' ? this.exchangeLifetimeMs : this.nonLifetimeMs), DEDUP_ENTRY_OVERHEAD);
    this.counters.dedupEvictions += this.dedup.evicted - before;

    if (isResponseCode(msg.code)) {
      const matched = this.handleResponse(msg, remote, msg.type === 'CON', dg.multicast);
      if (msg.type === 'CON' && matched) this.sendEmptyAck(remote, msg.messageId, entry);
      return;
    }
    if (isRequestCode(msg.code)) return this.handleRequest(msg, dg, entry);
    this.countMalformed('unknown-code');
  }

  /** Returns true if the response matched an exchange (else it was rejected / dropped). */
  private handleResponse(msg: CoapMessage, remote: RemoteAddress, confirmable: boolean, multicast = false): boolean {
    const k = tokenKey(msg.token);
    const ex = this.exchanges.get(k);
    if (ex && (!ex.remote || (ex.remote.address === remote.address && ex.remote.port === remote.port))) {
      const unknown = this.firstUnknownCritical(msg.options);
      if (unknown !== undefined) {
        // RFC 7252 §5.4.1: a response with an unrecognized critical option is rejected.
        this.counters.unknownCriticalOptions++;
        this.emit('drop', `unknown-critical-option-${unknown}`);
        if (confirmable) this.sendRst(remote, msg.messageId);
        return false;
      }
      ex.onResponse({ message: msg, remote });
      return true;
    }
    if (this.retired.has(k, this.clock.now())) {
      // groupcomm-bis §3.1.5: a late response to our own group request is dropped silently (no RST).
      this.counters.lateGroupResponses++;
      return false;
    }
    this.counters.unmatchedResponses++;
    // RFC 7252 §4.2 / §4.3: reject an unexpected CON (MUST) or NON (MAY) response with RST; a response that came
    // by multicast (a notification for an observation we do not hold) is dropped, so that N listeners do not
    // answer one datagram with N resets.
    if (!multicast) this.sendRst(remote, msg.messageId);
    return false;
  }

  private firstUnknownCritical(options: CoapOption[]): number | undefined {
    for (const o of options) if (isCritical(o.number) && !optionDef(o.number) && !this.understood.has(o.number)) return o.number;
    return undefined;
  }

  private handleRequest(msg: CoapMessage, dg: Datagram, entry: DedupEntry): void {
    const { remote, multicast } = dg;
    let answered = false;
    let ackSent = false;
    let sepTimer: unknown;
    const confirmable = msg.type === 'CON' && !multicast;
    const sendReply = (res: CoapMessage, keep: boolean) => {
      if (res.type === 'CON') return this.sendMessage(res, remote);
      const bytes = encode(res);
      if (res.type === 'ACK' && keep) this.keepReply(entry, bytes);
      this.transmit(bytes, remote);
    };
    const ctx: ResponseContext = {
      respond: (partial, opts) => {
        if (answered || this.closed) return;
        answered = true;
        this.cancelTimer(sepTimer);
        let type: MessageType;
        let messageId: number;
        if (opts?.separate) {
          if (confirmable && !ackSent) {
            ackSent = true;
            this.sendEmptyAck(remote, msg.messageId, entry);
          }
          type = 'CON';
          messageId = this.newMessageId();
        } else if (confirmable && !ackSent) {
          type = 'ACK';
          messageId = msg.messageId;
        } else {
          // NON request, multicast request (always a NON reply, groupcomm-bis §3.1.1), or separate response.
          type = confirmable ? 'CON' : 'NON';
          messageId = this.newMessageId();
        }
        sendReply(createMessage({ ...partial, type, messageId, token: msg.token }), opts?.keepReply !== false);
      },
      ignore: () => {
        if (answered) return;
        answered = true;
        this.cancelTimer(sepTimer);
        if (confirmable && !ackSent) {
          ackSent = true;
          this.sendEmptyAck(remote, msg.messageId, entry);
        }
      },
    };
    const unknown = this.firstUnknownCritical(msg.options);
    if (unknown !== undefined) {
      this.counters.unknownCriticalOptions++;
      this.emit('drop', `unknown-critical-option-${unknown}`);
      // RFC 7252 §5.4.1: 4.02 with a diagnostic; groupcomm-bis §3.1.2: suppressed for group requests.
      if (multicast) return;
      // a fixed text: diagnostics never echo what a client sent
      ctx.respond({ code: CODES.BAD_OPTION, payload: Buffer.from('unrecognized critical option') });
      return;
    }
    if (!this.handler) {
      if (!multicast) ctx.respond({ code: CODES.NOT_FOUND });
      return;
    }
    try {
      this.handler({ message: msg, remote, multicast, group: dg.group }, ctx);
    } catch (err) {
      // A CoapResponseError becomes its response; anything else (or a noResponse one) an empty 5.00 plus 'handler-error' (its message
      // stays internal). groupcomm-bis §3.1.2: error responses to group requests are suppressed.
      if (!isResponseError(err)) this.reportHandlerError(err);
      if (!multicast) ctx.respond(toErrorResponse(err));
      else ctx.ignore();
    }
    if (confirmable && !answered) {
      // Not answered synchronously: if the answer is slow, acknowledge now and send it separately (§5.2.2).
      sepTimer = this.after(this.params.SEPARATE_RESPONSE_AFTER, () => {
        if (answered) return;
        ackSent = true;
        this.sendEmptyAck(remote, msg.messageId, entry);
      });
    }
  }

  get dedupEntries(): number {
    return this.dedup.size;
  }
  /** Bytes the duplicate cache accounts for (kept replies plus DEDUP_ENTRY_OVERHEAD per entry). */
  get dedupBytes(): number {
    return this.dedup.weight;
  }
  /** Drop what expired from the duplicate cache, retired tokens and NON-RST entries now (otherwise done lazily). */
  sweep(): void {
    const now = this.clock.now();
    this.dedup.sweep(now);
    this.retired.sweep(now);
    this.nonResets.sweep(now);
  }

  /** Stop everything: pending exchanges end (promises reject with ERR_CLOSED), timers are cleared. */
  async close(closeTransport = true): Promise<void> {
    if (this.closed) return;
    this.emit('closing');
    for (const c of [...this.closers]) c();
    this.closers.clear();
    this.closed = true;
    for (const h of this.timers) this.clock.clearTimeout(h);
    this.timers.clear();
    for (const p of this.pendingCons.values()) p.onFail?.(new CoapError('endpoint closed', 'ERR_CLOSED'));
    this.pendingCons.clear();
    this.exchanges.clear();
    this.multiExchanges = 0;
    this.nonResets.clear();
    this.transport.off('datagram', this.onDatagram);
    if (closeTransport) await this.transport.close();
  }
}

function isEmptyAckOnly(msg: CoapMessage): boolean {
  return msg.type === 'ACK' && msg.code === 0;
}

const EMPTY = Buffer.alloc(0);
