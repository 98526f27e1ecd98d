// The CoAP message layer (RFC 7252 §4, §5.3) with the group rules of groupcomm-bis §3.1 (RFC 10020):
// CON retransmission with exponential backoff, NON, ACK, RST, duplicate detection by (source, Message ID),
// piggybacked and separate responses, token matching (token + source for unicast, token alone for group requests),
// several responses per token until a deadline, no RST to late responses of our own group requests, and tokens
// not reused before MIN_TOKEN_REUSE_TIME. Malformed input is counted and dropped (or answered with RST / 4.02).
// State a peer can make us keep is bounded: the duplicate cache in entries and bytes, retired tokens in number,
// NON messages awaiting a RST in number; a request handler that throws becomes an empty 5.00, never its message.
//
// Tokens we draw ourselves (8 bytes, the default length) are a 32-bit counter followed by 32 random bits (RFC 7252
// §5.3.1 asks for at least 32 bits of randomness). The counter makes them unique for 2^31 tokens per kind, so the
// groupcomm-bis §3.1.5 rule "no reuse before MIN_TOKEN_REUSE_TIME" holds without remembering each retired token
// (it would take more than 4 million group requests per second to wrap within that time), and a late response to
// one of our group requests is recognised by its counter (even for group tokens, odd for unicast ones, issued
// already, no longer active) instead of by a map entry. Before, a proxy doing 200 group requests/s held 100,000
// retired tokens (15 MB) and reached the cap, refusing requests with 5.03 (docs/BENCHMARKS.md §4c). Shorter tokens
// and tokens chosen by the caller are still retired in the bounded map.

import { randomFillSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { CoapFormatError, decode, encode } from '../coap/codec';
import { CODES, isRequestCode, isResponseCode } from '../coap/codes';
import { CoapMessage, CoapOption, MessageType } from '../coap/message';
import { CoapResponseError, isResponseError, toErrorResponse } from '../coap/errors';
import { isCritical, optionDef } from '../coap/options';
import { Datagram, RemoteAddress, Transport } from '../transport/udp-transport';
import { Deadline, DeadlineQueue } from './deadline-queue';
export { DEDUP_ENTRY_OVERHEAD, DEDUP_SOURCE_OVERHEAD } from './dedup-table';
import { DedupTable } from './dedup-table';
import { ExpiringMap } from './expiring-map';
import { MessageIds } from './message-ids';
import { NonResetTable } from './non-resets';
import { RecentNonResponses } from './recent-non';
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
  /**
   * The datagram `message` was decoded from, as the endpoint passes it on (a holder may keep it and decode again
   * later instead of keeping the message; a response whose message was changed must not carry it).
   */
  data?: Buffer;
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
  /**
   * cap on remembered (source, MID) pairs, default 100,000: an entry is forgotten at the latest when this many newer
   * messages were remembered, oldest first (dedup-table.ts)
   */
  maxDedupEntries?: number;
  /**
   * cap on the bytes the duplicate cache holds: replies kept for retransmitted CONs plus an estimated
   * DEDUP_ENTRY_OVERHEAD (64) per entry and DEDUP_SOURCE_OVERHEAD (320) per source; oldest entries are evicted first
   * (default 64 MiB). Beside it: the slots take at most 40 B × maxDedupEntries, and the chunks of kept replies up to
   * twice the replies' bytes plus 64 KiB before they are compacted (dedup-table.ts)
   */
  maxDedupBytes?: number;
  /**
   * cap on retired tokens (groupcomm-bis §3.1.5) plus active group exchanges and listeners, default 100,000. Only
   * tokens shorter than 8 bytes or chosen by the caller are kept when retired (our 8-byte tokens are counters, see
   * the file header). A retired token is never forgotten early; when the cap is reached, new group requests,
   * listeners and one-shot tokens are refused with ERR_TOO_MANY_TOKENS (a CoapError that becomes 5.03) until old
   * ones expire.
   */
  maxRetiredTokens?: number;
  /** cap on NON messages remembered for RST matching (SendOptions.onReset), default 10,000; oldest go first */
  maxNonResetEntries?: number;
  /**
   * cap on destinations with their own Message ID counter (RFC 7252 §4.4, see message-ids.ts), default 10,000
   * (about 1 MB); the least recently used go first
   */
  maxMessageIdCounters?: number;
  /**
   * cap on sources whose recent NON responses are remembered for duplicate detection (recent-non.ts: the last 32
   * per source, about 700 bytes each, 512 for up to 256 busy sources), default 10,000; the first recorded go first
   */
  maxNonResponseSources?: number;
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

/** A CON we sent and retransmit until it is acknowledged (RFC 7252 §4.2); an entry of the retransmission queue. */
interface PendingCon extends Deadline {
  /** our Message ID: unique per destination until its counter wraps (message-ids.ts) */
  key: number;
  /** another pending CON with the same Message ID to another destination (the map holds one chain per ID) */
  sameId: PendingCon | undefined;
  data: Buffer;
  remote: RemoteAddress;
  timeout: number;
  attempts: number;
  /** told about the ACK, RST or failure (called as methods of this object) */
  listener: SendOptions;
}

/** What waits for responses on one of our tokens. */
interface Exchange {
  /** undefined for group requests: any source matches */
  readonly remote?: RemoteAddress;
  /** several responses (group requests, listeners): the token is retired when it ends */
  readonly multi: boolean;
  onExchangeResponse(res: IncomingResponse): void;
  /** a response to this exchange was rejected (RFC 7252 §5.4.1); a request that waits for one answer ends here */
  onRejectedResponse?(err: CoapError): void;
}

/**
 * A group request's record in the endpoint (groupcomm-bis §3.1). The object that collects the responses (e.g. the
 * group client's GroupExchange) is itself the exchange the endpoint matches tokens to and the entry of the
 * endpoint's one deadline queue, so a pending group request holds no handle, closure or timer of its own
 * (docs/BENCHMARKS.md §6.5).
 */
export interface GroupRequestRecord extends Deadline {
  readonly multi: true;
  readonly remote?: undefined;
  /** every response with the token, from any source, until the deadline */
  onExchangeResponse(res: IncomingResponse): void;
  /** the deadline passed, endGroupRequest() was called or the endpoint closed; the token is retired by then */
  onExchangeEnd(): void;
  /** Written by the endpoint: the token of the request, undefined before it was sent. */
  exchangeToken?: Buffer;
}

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
  private readonly mids: MessageIds;
  /** CONs awaiting ACK by Message ID; CONs to different destinations may share an ID (a chain through sameId) */
  private readonly pendingCons = new Map<number, PendingCon>();
  private readonly exchanges = new Map<string, Exchange>();
  /** retired tokens, not to be reused before MIN_TOKEN_REUSE_TIME */
  private readonly retired = new ExpiringMap<true>();
  /** group and listen exchanges: each retires its token when it ends, so each holds a slot under maxRetired */
  private multiExchanges = 0;
  private readonly dedup: DedupTable;
  /** duplicate detection for NON responses, per source (they need no reply kept) */
  private readonly recentNon: RecentNonResponses;
  /** NON messages we sent with an onReset, by Message ID, for NON_LIFETIME */
  private readonly nonResets: NonResetTable;
  /** one timer each for every CON's retransmission, every request's wait and every group request's deadline */
  private readonly retransmits: DeadlineQueue<PendingCon>;
  private readonly waits: DeadlineQueue<UnicastRequest>;
  private readonly groupDeadlines: DeadlineQueue<GroupRequestRecord>;
  private readonly separateAcks: DeadlineQueue<ServerExchange>;
  private handler?: RequestHandler;
  private closed = false;
  /** close() has begun: what its 'closing' and 'end' listeners start now could not end, so it is refused */
  private closing = false;
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
    this.dedup = new DedupTable(opts.maxDedupEntries ?? 100_000, opts.maxDedupBytes ?? 64 * 1024 * 1024);
    this.maxRetired = opts.maxRetiredTokens ?? 100_000;
    this.nonResets = new NonResetTable(opts.maxNonResetEntries ?? 10_000);
    this.mids = new MessageIds(exchangeLifetime(this.params), opts.maxMessageIdCounters ?? 10_000);
    this.tokenReuseTime = opts.tokenReuseTime ?? minTokenReuseTime(this.params);
    this.exchangeLifetimeMs = exchangeLifetime(this.params);
    this.nonLifetimeMs = nonLifetime(this.params);
    this.recentNon = new RecentNonResponses(this.nonLifetimeMs, opts.maxNonResponseSources ?? 10_000);
    this.retransmits = new DeadlineQueue(this.clock, (p) => this.retransmitDue(p));
    this.waits = new DeadlineQueue(this.clock, (r) => r.timedOut());
    this.groupDeadlines = new DeadlineQueue(this.clock, this.groupDeadlineDue);
    this.separateAcks = new DeadlineQueue(this.clock, (sx) => this.separateAckDue(sx));
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

  // ---------------------------------------------------------------- ids

  /** A new Message ID for a CON or NON to `destination` (RFC 7252 §4.4: one counter per destination). */
  newMessageId(destination: RemoteAddress): number {
    return this.mids.next(destination, this.clock.now());
  }

  /** Destinations that have a Message ID counter, and how many were dropped at the cap while live. */
  get messageIdCounters(): { size: number; evictions: number } {
    return { size: this.mids.size, evictions: this.mids.evictions };
  }

  private tokenPool = Buffer.alloc(0);
  private tokenPoolPos = 0;
  /** counters of the 8-byte tokens we draw: [0] group kind (even values), [1] unicast kind (odd values) */
  private readonly tokenSeqStart = [0, 0];
  private readonly tokenSeq = [0, 0];

  /**
   * A fresh token not in use and not retired (groupcomm-bis §3.1.5). `unicast` marks a token for a request to one
   * server, whose late responses get a RST (RFC 7252 §4.2); every other token (group requests, listeners, relays)
   * is of the group kind, whose late responses are dropped silently.
   */
  newToken(length = this.tokenLength, unicast = false): Buffer {
    if (length === 8) return this.newCounterToken(unicast ? 1 : 0);
    // Short tokens can run out (256 one-byte tokens): give up rather than loop for ever.
    for (let attempt = 0; ; attempt++) {
      if (attempt > 10_000) {
        this.counters.tokensRefused++;
        throw new CoapError('no free token', 'ERR_TOO_MANY_TOKENS', CODES.SERVICE_UNAVAILABLE);
      }
      const t = Buffer.allocUnsafe(length);
      this.fillRandom(t, 0, length);
      const k = tokenKey(t);
      if (!this.exchanges.has(k) && !this.retired.has(k, this.clock.now())) return t;
    }
  }

  /**
   * Copy n random bytes from the pool into `target` at `at`. (A view of the pool, copied by the caller, was one more
   * Buffer object per request.)
   */
  private fillRandom(target: Buffer, at: number, n: number): void {
    if (this.tokenPoolPos + n > this.tokenPool.length) {
      this.tokenPool = randomFillSync(Buffer.allocUnsafe(4096));
      this.tokenPoolPos = 0;
    }
    this.tokenPool.copy(target, at, this.tokenPoolPos, this.tokenPoolPos + n);
    this.tokenPoolPos += n;
  }

  private newCounterToken(kind: 0 | 1): Buffer {
    if (this.tokenSeq[kind] === this.tokenSeqStart[kind]) {
      // first token of this kind: a random start, so that counters say nothing about earlier runs
      const r = Buffer.allocUnsafe(4);
      this.fillRandom(r, 0, 4);
      const start = ((r.readUInt32BE(0) & ~1) | kind) >>> 0;
      this.tokenSeqStart[kind] = start;
      this.tokenSeq[kind] = start;
    }
    for (let attempt = 0; ; attempt++) {
      const t = Buffer.allocUnsafe(8);
      t.writeUInt32BE(this.tokenSeq[kind], 0);
      this.tokenSeq[kind] = (this.tokenSeq[kind] + 2) >>> 0;
      this.fillRandom(t, 4, 4);
      // a caller-chosen token can sit on a counter value; skip it (it cannot repeat within 2^31 tokens)
      const k = tokenKey(t);
      if (!this.exchanges.has(k) && !this.retired.has(k, this.clock.now())) return t;
      if (attempt > 10_000) {
        this.counters.tokensRefused++;
        throw new CoapError('no free token', 'ERR_TOO_MANY_TOKENS', CODES.SERVICE_UNAVAILABLE);
      }
    }
  }

  /** True if `token` is an 8-byte token of `kind` that this endpoint has already drawn. */
  private isOwnCounterToken(token: Buffer, kind: 0 | 1): boolean {
    if (token.length !== 8) return false;
    const c = token.readUInt32BE(0);
    if ((c & 1) !== kind) return false;
    const start = this.tokenSeqStart[kind];
    const issued = (this.tokenSeq[kind] - start) >>> 0;
    return issued !== 0 && ((c - start) >>> 0) < issued;
  }

  /** True while a token may not be used for a new request. */
  isTokenBusy(token: Buffer): boolean {
    const k = tokenKey(token);
    return this.exchanges.has(k) || this.retired.has(k, this.clock.now()) || this.isOwnCounterToken(token, 0);
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
    // our own counter tokens are never drawn again within 2^31 tokens: nothing to remember
    if (this.isOwnCounterToken(token, 0)) return;
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

  /**
   * Send a message as it is; a CON or NON carries a Message ID from newMessageId(remote). CON messages are
   * retransmitted.
   */
  sendMessage(msg: CoapMessage, remote: RemoteAddress, opts: SendOptions = {}): void {
    if (this.closed) {
      opts.onFail?.(new CoapError('endpoint closed', 'ERR_CLOSED'));
      return;
    }
    this.sendEncoded(encode(msg), msg.type, msg.messageId, remote, opts);
  }

  /**
   * sendMessage() for a message already encoded: `data` must be a well-formed message of `type` with `messageId`
   * (e.g. a proxy's relayed response patched from the server's datagram, src/proxy/relay-datagram.ts).
   */
  sendEncoded(data: Buffer, type: MessageType, messageId: number, remote: RemoteAddress, opts: SendOptions = {}): void {
    if (this.closed) {
      opts.onFail?.(new CoapError('endpoint closed', 'ERR_CLOSED'));
      return;
    }
    if (type === 'CON') this.trackCon(data, messageId, remote, opts);
    else if (type === 'NON' && opts.onReset) {
      // RFC 7252 §4.3: a NON may be answered with RST (e.g. an observer that forgot the observation, RFC 7641
      // §3.6). Message ID and destination identify the message for NON_LIFETIME.
      const now = this.clock.now();
      this.nonResets.sweep(now);
      this.nonResets.add(messageId, remote, opts.onReset, now + this.nonLifetimeMs);
    }
    this.transmit(data, remote);
  }

  /** Retransmit a CON until it is acknowledged (RFC 7252 §4.2). */
  private trackCon(data: Buffer, key: number, remote: RemoteAddress, listener: SendOptions): void {
    const old = this.pendingCon(key, remote);
    if (old) {
      // The Message ID wrapped while an old CON to the same destination still waits: that one cannot be told apart
      // any more.
      this.retransmits.remove(old);
      this.untrackCon(old);
      old.listener.onFail?.(new CoapError('Message ID reused before the old message was acknowledged', 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT));
    }
    const p: PendingCon = {
      key, sameId: this.pendingCons.get(key), data, remote, attempts: 0, listener, dueAt: undefined, dueSlot: undefined,
      // RFC 7252 §4.2: ACK_TIMEOUT × a random factor in [1, ACK_RANDOM_FACTOR], in whole 10 ms
      timeout: Math.round((this.params.ACK_TIMEOUT * (1 + Math.random() * (this.params.ACK_RANDOM_FACTOR - 1))) / 10) * 10,
    };
    this.pendingCons.set(key, p);
    this.retransmits.add(p, p.timeout);
  }

  /** The CON we still retransmit with this Message ID to this destination. */
  private pendingCon(key: number, remote: RemoteAddress): PendingCon | undefined {
    for (let p = this.pendingCons.get(key); p; p = p.sameId) if (sameRemote(p.remote, remote)) return p;
    return undefined;
  }

  private untrackCon(p: PendingCon): void {
    let head = this.pendingCons.get(p.key);
    if (head === p) {
      if (p.sameId) this.pendingCons.set(p.key, p.sameId);
      else this.pendingCons.delete(p.key);
    } else {
      while (head && head.sameId !== p) head = head.sameId;
      if (head) head.sameId = p.sameId;
    }
    p.sameId = undefined;
  }

  private transmit(data: Buffer, remote: RemoteAddress): void {
    this.counters.sent++;
    this.transport.send(data, remote);
  }

  private retransmitDue(p: PendingCon): void {
    if (this.closed || this.pendingCon(p.key, p.remote) !== p) return;
    if (p.attempts >= this.params.MAX_RETRANSMIT) {
      this.untrackCon(p);
      this.counters.transmitTimeouts++;
      p.listener.onFail?.(new CoapError(`no ACK from ${p.remote.address}:${p.remote.port} after ${p.attempts} retransmissions`, 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT));
      return;
    }
    p.attempts++;
    p.timeout *= 2;
    this.counters.retransmissions++;
    this.transmit(p.data, p.remote);
    this.retransmits.add(p, p.timeout);
  }

  /** Stop retransmitting a CON we sent (e.g. the exchange was cancelled). */
  cancelMessage(remote: RemoteAddress, messageId: number): void {
    const p = this.pendingCon(messageId, remote);
    if (!p) return;
    this.retransmits.remove(p);
    this.untrackCon(p);
  }

  /**
   * A unicast request with a single response. CON requests are retransmitted; the promise rejects with
   * ERR_TIMEOUT, ERR_RESET or ERR_CLOSED.
   */
  request(req: Partial<CoapMessage> & { code: number }, remote: RemoteAddress, opts: RequestOptions = {}): Promise<IncomingResponse> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new CoapError('endpoint closed', 'ERR_CLOSED'));
      const confirmable = opts.confirmable ?? req.type !== 'NON';
      const token = opts.token ?? req.token ?? this.newToken(this.tokenLength, true);
      const k = tokenKey(token);
      if (this.exchanges.has(k)) return reject(new CoapError('token in use', 'ERR_TOKEN_IN_USE'));
      const messageId = this.newMessageId(remote);
      let data: Buffer;
      try {
        // encode() sorts a copy of unsorted options itself: no message object is built just to be encoded
        data = encode({ type: confirmable ? 'CON' : 'NON', code: req.code, messageId, token, options: req.options ?? NO_OPTIONS, payload: req.payload ?? EMPTY });
      } catch (err) {
        return reject(err);
      }
      const r = new UnicastRequest(this, remote, k, token, messageId, opts.timeout ?? this.exchangeLifetimeMs, resolve, reject);
      this.exchanges.set(k, r);
      if (confirmable) this.trackCon(data, messageId, remote, r);
      else this.waits.add(r, r.waitMs);
      this.transmit(data, remote);
    });
  }

  /** @internal a UnicastRequest is over: stop its timers and forget it */
  settleRequest(r: UnicastRequest): void {
    this.waits.remove(r);
    this.cancelMessage(r.remote, r.messageId);
    this.dropExchange(r.key, r);
  }

  /** @internal an empty ACK (or an ACK for another token) came: wait for the separate response */
  awaitSeparate(r: UnicastRequest): void {
    this.waits.add(r, r.waitMs);
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
    const rec = new CallbackGroupRequest(this, onResponse, onEnd);
    this.startGroupRequest(rec, req, group, deadline, opts);
    return rec;
  }

  /**
   * Send a group request for `rec` (see GroupRequestRecord): a NON to the group; responses go to
   * rec.onExchangeResponse until `deadline` ms have passed or endGroupRequest(rec), then rec.onExchangeEnd runs and
   * the token is retired. Returns the datagram that was sent.
   */
  startGroupRequest(rec: GroupRequestRecord, req: Partial<CoapMessage> & { code: number }, group: RemoteAddress, deadline: number, opts: { token?: Buffer } = {}): Buffer {
    // A group request started while close() runs (from a 'closing' or 'end' listener) would be registered after
    // close() ended the others and dropped with the deadline queue, never ending: refuse it like after close.
    if (this.closed || this.closing) throw new CoapError(this.closed ? 'endpoint closed' : 'endpoint closing', 'ERR_CLOSED');
    this.reserveRetireSlot();
    const token = opts.token ?? this.newToken();
    const k = tokenKey(token);
    if (this.exchanges.has(k)) throw new CoapError('token in use', 'ERR_TOKEN_IN_USE');
    const data = encode({ type: 'NON', code: req.code, messageId: this.newMessageId(group), token, options: req.options ?? NO_OPTIONS, payload: req.payload ?? EMPTY });
    rec.exchangeToken = token;
    this.exchanges.set(k, rec);
    this.multiExchanges++;
    this.groupDeadlines.add(rec, deadline);
    this.transmit(data, group);
    return data;
  }

  /** Stop collecting for a group request now (idempotent): the token is retired and rec.onExchangeEnd runs. */
  endGroupRequest(rec: GroupRequestRecord): void {
    if (!this.groupDeadlines.has(rec)) return;
    this.groupDeadlines.remove(rec);
    this.groupDeadlineDue(rec);
  }

  private readonly groupDeadlineDue = (rec: GroupRequestRecord): void => {
    this.retireToken(rec.exchangeToken!);
    rec.onExchangeEnd();
  };

  /**
   * Register a long-lived multi-response exchange on a token we chose (Observe, proxy relays). The caller
   * sends the request itself and calls the returned function to unregister (the token is then retired). Throws
   * ERR_TOKEN_IN_USE, or ERR_TOO_MANY_TOKENS (5.03) when maxRetiredTokens is reached.
   */
  listen(token: Buffer, onResponse: (res: IncomingResponse) => void, remote?: RemoteAddress): () => void {
    const k = tokenKey(token);
    if (this.exchanges.has(k)) throw new CoapError('token in use', 'ERR_TOKEN_IN_USE');
    this.reserveRetireSlot();
    const ex: Exchange = { remote, multi: true, onExchangeResponse: onResponse };
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
  private sendEmptyAck(remote: RemoteAddress, messageId: number, entry: number): void {
    const ack = encode({ type: 'ACK', code: 0, messageId, token: EMPTY, options: [], payload: EMPTY });
    this.keepReply(entry, ack);
    this.transmit(ack, remote);
  }

  /**
   * Keep a reply in a duplicate entry (the table copies its bytes: a view into Node's shared 8 KiB Buffer pool would
   * keep the whole slab alive for EXCHANGE_LIFETIME, docs/BENCHMARKS.md §4c).
   */
  private keepReply(entry: number, reply: Buffer): void {
    const before = this.dedup.evicted;
    this.dedup.keepReply(entry, reply);
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
      const p = this.pendingCon(msg.messageId, remote);
      if (!p) {
        // A RST to one of our NON messages (e.g. a notification the observer no longer wants, RFC 7641 §3.6).
        if (msg.type === 'RST') {
          this.counters.resetsReceived++;
          this.nonResets.take(msg.messageId, remote, this.clock.now())?.();
          this.emit('reset', remote, msg.messageId);
        } else this.counters.ignoredMessages++;
        return;
      }
      this.retransmits.remove(p);
      this.untrackCon(p);
      if (msg.type === 'RST') {
        this.counters.resetsReceived++;
        p.listener.onReset?.();
        this.emit('reset', remote, msg.messageId);
        return;
      }
      p.listener.onAck?.(msg);
      if (msg.code !== 0) this.handleResponse(msg, dg, false);
      return;
    }
    // CON or NON
    if (msg.code === 0) {
      // RFC 7252 §4.3: "CoAP ping": an Empty CON is answered with RST; an Empty NON is ignored.
      if (msg.type === 'CON' && !dg.multicast) this.sendRst(remote, msg.messageId);
      else this.counters.ignoredMessages++;
      return;
    }
    // Duplicate detection (§4.5). A NON response is checked against its source's recent ones once it matched one of
    // our exchanges (recent-non.ts); everything else against the duplicate cache.
    const now = this.clock.now();
    this.dedup.sweep(now);
    if (msg.type === 'NON' && isResponseCode(msg.code)) {
      this.handleResponse(msg, dg, false, now);
      return;
    }
    const seen = this.dedup.find(remote, msg.messageId, now);
    // A retransmission repeats the message, token included; the same Message ID with another token is a new
    // message from a peer whose IDs wrapped within EXCHANGE_LIFETIME (busy proxies and fast clients do that).
    if (seen >= 0 && this.dedup.sameMessage(seen, msg.token, msg.code)) {
      this.counters.duplicates++;
      const reply = msg.type === 'CON' ? this.dedup.replyOf(seen) : undefined;
      // a copy: the view is into the table's shared chunk, which may be written again before the send completes
      if (reply) this.transmit(Buffer.from(reply), remote);
      return;
    }
    const before = this.dedup.evicted;
    const entry = this.dedup.insert(remote, msg.messageId, msg.token, msg.code, now + (msg.type === 'CON' ? this.exchangeLifetimeMs : this.nonLifetimeMs), now);
    this.counters.dedupEvictions += this.dedup.evicted - before;

    if (isResponseCode(msg.code)) {
      const matched = this.handleResponse(msg, dg, msg.type === 'CON');
      if (msg.type === 'CON' && matched) this.sendEmptyAck(remote, msg.messageId, entry);
      return;
    }
    if (isRequestCode(msg.code)) return this.handleRequest(msg, dg, entry);
    this.countMalformed('unknown-code');
  }

  /**
   * Returns true if the response matched an exchange (else it was rejected / dropped). `nonAt`: a NON response
   * received at that time, to be checked for a duplicate once it matched.
   */
  private handleResponse(msg: CoapMessage, dg: Datagram, confirmable: boolean, nonAt?: number): boolean {
    const { remote, multicast } = dg;
    const k = tokenKey(msg.token);
    const ex = this.exchanges.get(k);
    if (ex && (!ex.remote || (ex.remote.address === remote.address && ex.remote.port === remote.port))) {
      if (nonAt !== undefined && this.recentNon.seen(remote, msg.messageId, msg.token, msg.code, nonAt)) {
        this.counters.duplicates++;
        return true;
      }
      const unknown = this.firstUnknownCritical(msg.options);
      if (unknown !== undefined) {
        // RFC 7252 §5.4.1: a response with an unrecognized critical option is rejected.
        this.counters.unknownCriticalOptions++;
        this.emit('drop', `unknown-critical-option-${unknown}`);
        if (confirmable) this.sendRst(remote, msg.messageId);
        // A piggybacked response leaves no wait armed: without this the request would never end.
        ex.onRejectedResponse?.(new CoapError('response with an unrecognized critical option', 'ERR_BAD_RESPONSE', CODES.BAD_GATEWAY));
        return false;
      }
      ex.onExchangeResponse({ message: msg, remote, data: dg.data });
      return true;
    }
    if (this.retired.has(k, this.clock.now()) || this.isOwnCounterToken(msg.token, 0)) {
      // groupcomm-bis §3.1.5: a late response to our own group request is dropped silently (no RST).
      this.counters.lateGroupResponses++;
      return false;
    }
    if (nonAt !== undefined && this.recentNon.has(remote, msg.messageId, msg.token, msg.code, nonAt)) {
      // §4.5: a copy of a NON response that was delivered (its request has ended since) is ignored, not reset
      this.counters.duplicates++;
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

  private handleRequest(msg: CoapMessage, dg: Datagram, entry: number): void {
    const { remote, multicast } = dg;
    const ctx = new ServerExchange(this, msg, remote, entry, msg.type === 'CON' && !multicast);
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
    // Not answered synchronously: if the answer is slow, acknowledge now and send it separately (§5.2.2).
    if (ctx.confirmable && !ctx.answered) this.separateAcks.add(ctx, this.params.SEPARATE_RESPONSE_AFTER);
  }

  /** @internal ResponseContext.respond of a request we serve */
  respondTo(sx: ServerExchange, partial: Partial<CoapMessage> & { code: number }, opts: RespondOptions | undefined): void {
    if (sx.answered || this.closed) return;
    sx.answered = true;
    this.separateAcks.remove(sx);
    const { request, remote, confirmable } = sx;
    let type: MessageType;
    let messageId: number;
    if (opts?.separate) {
      if (confirmable && !sx.ackSent) {
        sx.ackSent = true;
        this.sendEmptyAck(remote, request.messageId, sx.entry);
      }
      type = 'CON';
      messageId = this.newMessageId(remote);
    } else if (confirmable && !sx.ackSent) {
      type = 'ACK';
      messageId = request.messageId;
    } else {
      // NON request, multicast request (always a NON reply, groupcomm-bis §3.1.1), or separate response.
      type = confirmable ? 'CON' : 'NON';
      messageId = this.newMessageId(remote);
    }
    // encode() sorts a copy of unsorted options itself
    const res: CoapMessage = { type, code: partial.code, messageId, token: request.token, options: partial.options ?? NO_OPTIONS, payload: partial.payload ?? EMPTY };
    if (type === 'CON') return this.sendMessage(res, remote);
    const bytes = encode(res);
    if (type === 'ACK' && opts?.keepReply !== false) this.keepReply(sx.entry, bytes);
    this.transmit(bytes, remote);
  }

  /** @internal ResponseContext.ignore of a request we serve */
  ignoreRequest(sx: ServerExchange): void {
    if (sx.answered) return;
    sx.answered = true;
    this.separateAcks.remove(sx);
    if (sx.confirmable && !sx.ackSent) {
      sx.ackSent = true;
      this.sendEmptyAck(sx.remote, sx.request.messageId, sx.entry);
    }
  }

  private separateAckDue(sx: ServerExchange): void {
    if (sx.answered || this.closed) return;
    sx.ackSent = true;
    this.sendEmptyAck(sx.remote, sx.request.messageId, sx.entry);
  }

  get dedupEntries(): number {
    return this.dedup.size;
  }
  /** Bytes the duplicate cache counts: kept replies, DEDUP_ENTRY_OVERHEAD per entry, DEDUP_SOURCE_OVERHEAD per source. */
  get dedupBytes(): number {
    return this.dedup.bytes;
  }
  /** Drop what expired from the duplicate cache, retired tokens and NON-RST entries now (otherwise done lazily). */
  sweep(): void {
    const now = this.clock.now();
    this.dedup.sweep(now);
    this.retired.sweep(now);
    this.nonResets.sweep(now);
    this.mids.sweep(now);
    this.recentNon.sweep(now);
  }

  /** Sources whose recent NON responses are remembered (recent-non.ts), and how many were dropped at the cap. */
  get nonResponseSources(): { size: number; evictions: number } {
    return { size: this.recentNon.size, evictions: this.recentNon.evicted };
  }

  /** Stop everything: pending exchanges end (promises reject with ERR_CLOSED), timers are cleared. */
  async close(closeTransport = true): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.emit('closing');
    // pending group requests end (their tokens retired), then the unicast requests fail with ERR_CLOSED; a group
    // request their 'end' listeners start now is refused (startGroupRequest throws ERR_CLOSED 'endpoint closing'),
    // a unicast one is in the snapshot below and fails with the others
    for (const rec of this.groupDeadlines.entries()) this.endGroupRequest(rec);
    for (const ex of [...this.exchanges.values()]) if (ex instanceof UnicastRequest) ex.finish(new CoapError('endpoint closed', 'ERR_CLOSED'));
    this.closed = true;
    this.retransmits.clear();
    this.waits.clear();
    this.groupDeadlines.clear();
    this.separateAcks.clear();
    for (const head of [...this.pendingCons.values()]) for (let p: PendingCon | undefined = head; p; p = p.sameId) p.listener.onFail?.(new CoapError('endpoint closed', 'ERR_CLOSED'));
    this.pendingCons.clear();
    this.mids.clear();
    this.exchanges.clear();
    this.multiExchanges = 0;
    this.nonResets.clear();
    this.transport.off('datagram', this.onDatagram);
    if (closeTransport) await this.transport.close();
  }
}

/** A group request with callbacks (the form groupRequest() takes); it is also its handle. */
class CallbackGroupRequest implements GroupRequestRecord, GroupRequestHandle {
  exchangeToken?: Buffer = undefined;
  dueAt?: number = undefined;
  dueSlot?: number = undefined;
  constructor(
    private readonly endpoint: CoapEndpoint,
    readonly onExchangeResponse: (res: IncomingResponse) => void,
    readonly onExchangeEnd: () => void,
  ) {}
  get multi(): true {
    return true;
  }
  get token(): Buffer {
    return this.exchangeToken!;
  }
  cancel(): void {
    this.endpoint.endGroupRequest(this);
  }
}

/** A request we serve (RFC 7252 §5.2): the ResponseContext its handler gets, and its entry in the separate-ACK queue. */
class ServerExchange implements ResponseContext, Deadline {
  dueAt?: number = undefined;
  dueSlot?: number = undefined;
  answered = false;
  ackSent = false;

  constructor(
    private readonly endpoint: CoapEndpoint,
    readonly request: CoapMessage,
    readonly remote: RemoteAddress,
    /** the request's duplicate-cache entry (its sequence number in DedupTable) */
    readonly entry: number,
    /** a CON that came by unicast: it gets an ACK */
    readonly confirmable: boolean,
  ) {}

  respond(response: Partial<CoapMessage> & { code: number }, opts?: RespondOptions): void {
    this.endpoint.respondTo(this, response, opts);
  }

  ignore(): void {
    this.endpoint.ignoreRequest(this);
  }
}

/**
 * One unicast request (RFC 7252 §5.2): the exchange the endpoint matches its token to, the listener of its CON and the
 * entry of the wait queue in one object, instead of a closure for each of those roles.
 */
class UnicastRequest implements Exchange, Deadline, SendOptions {
  dueAt?: number = undefined;
  dueSlot?: number = undefined;
  private settled = false;

  constructor(
    private readonly endpoint: CoapEndpoint,
    readonly remote: RemoteAddress,
    readonly key: string,
    private readonly token: Buffer,
    readonly messageId: number,
    readonly waitMs: number,
    private readonly resolve: (res: IncomingResponse) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  get multi(): false {
    return false;
  }

  onExchangeResponse(res: IncomingResponse): void {
    if (!isEmptyAckOnly(res.message)) this.finish(undefined, res);
  }

  onAck(ack: CoapMessage): void {
    // Piggybacked responses arrive through receive(). An empty ACK means a separate response follows; so may an ACK
    // carrying another token (e.g. a server's cached reply to an earlier use of this Message ID): either way the
    // exchange keeps a timer, so it can never hang.
    if (ack.code === 0 || !ack.token.equals(this.token)) this.endpoint.awaitSeparate(this);
  }

  onReset(): void {
    this.finish(new CoapError(`${this.remote.address}:${this.remote.port} answered with RST`, 'ERR_RESET'));
  }

  onRejectedResponse(err: CoapError): void {
    this.finish(err);
  }

  onFail(err: CoapError): void {
    this.finish(err);
  }

  timedOut(): void {
    this.finish(new CoapError(`no response from ${this.remote.address}:${this.remote.port}`, 'ERR_TIMEOUT', CODES.GATEWAY_TIMEOUT));
  }

  finish(err?: Error, res?: IncomingResponse): void {
    if (this.settled) return;
    this.settled = true;
    this.endpoint.settleRequest(this);
    if (err) this.reject(err);
    else this.resolve(res!);
  }
}

function isEmptyAckOnly(msg: CoapMessage): boolean {
  return msg.type === 'ACK' && msg.code === 0;
}

const EMPTY = Buffer.alloc(0);
const NO_OPTIONS: CoapOption[] = [];
