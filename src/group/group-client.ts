// Group client (groupcomm-bis §3.1, §3.8 / RFC 10020): one NON request to a group URI yields a stream of
// responses until a deadline, each tagged with the server it came from; servers that answered with Block2 M=1
// are asked for the remaining blocks by unicast (§3.8), and the exchange completes when the deadline has passed
// and every follow-up has finished. Also the follow-up unicast request to one origin. With `oscore`, the request
// is protected once (Group OSCORE group mode, RFC 10021 §8.1) and every response is verified with the credential
// of the member it names and attributed to it (§8.4); what does not verify is counted and dropped.

import { EventEmitter } from 'node:events';
import { blockSize, decodeBlock, encodeBlock } from '../coap/block';
import { CODES, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption } from '../coap/message';
import { OPT, decodeUint } from '../coap/options';
import { CoapUri, UriError, isGroupUri, originUri, parseUri, socketAddress, uriToOptions } from '../coap/uri';
import { decode } from '../coap/codec';
import { ECHO_ANSWER_GRACE, EchoAnswers, isEchoChallenge } from '../messaging/echo-verifier';
import { CoapEndpoint, GroupRequestRecord, IncomingResponse } from '../messaging/endpoint';
import { isDeterministicRequest } from '../oscore/group/deterministic';
import type { ProtectionMode, RequestContext } from '../oscore/capabilities';
import { protectRequest, unprotectResponse } from '../oscore/protect';
import { RemoteAddress, peerKey } from '../transport/udp-transport';
import { ResponseLimitEvent, ResponseLimitKind, ResponseLimits, responseLimits } from './response-limits';

export { DEFAULT_RESPONSE_LIMITS, responseLimits } from './response-limits';
export type { ResponseLimitEvent, ResponseLimitKind, ResponseLimits } from './response-limits';

export interface Origin {
  address: string;
  port: number;
  uri: string;
  /** reverse proxy standing in for servers (groupcomm-proxy-07 §6 case 1): where follow-ups go, with Uri-Host */
  via?: { address: string; port: number; uri: string };
  /** the origin came from the datagram's source because a relayed response had no Reply-From */
  unverified?: boolean;
  /** the OSCORE sender the response verified as: its Sender ID (hex) and mode (RFC 10021 §8.4, §9.5 of -28) */
  oscore?: OscoreSender;
}

export interface OscoreSender {
  kid: string;
  mode: ProtectionMode;
}

/** A response after end-to-end verification, with who protected it. */
export type VerifiedIncoming = IncomingResponse & { oscore?: OscoreSender };

export interface GroupResponse {
  message: CoapMessage;
  /** where the datagram came from */
  remote: RemoteAddress;
  /** the server that produced the response (== remote for direct group requests) */
  origin: Origin;
  /** 1-based arrival index within the exchange */
  index: number;
  /** true if the payload was reassembled from several Block2 blocks */
  reassembled?: boolean;
}

export interface GroupSummary {
  token: Buffer;
  responses: number;
  responders: Origin[];
  /** follow-ups (Block2) that failed, per origin URI */
  errors: { origin: string; error: string; code?: string }[];
  cancelled: boolean;
  /** set when a ResponseLimits cap was reached: how many responses were dropped, and which caps they hit */
  limited?: { dropped: number; kinds: ResponseLimitKind[] };
}

/**
 * A response's server as the caps see it, worked out once per response and passed along: its key (peerKey()) and
 * whether the response is a later notification of an observation from a server whose first answer is already in
 * (ResponseStream.laterNotification()), which the caps do not count.
 */
export interface CapSubject {
  key: string;
  notification: boolean;
}

/** The bytes a response holds, as ResponseLimits.maxBytes counts them. */
function heldBytes(m: CoapMessage): number {
  let n = m.payload.length;
  for (const o of m.options) n += o.value.length;
  return n;
}

export interface GroupRequestOptions {
  method?: number;
  uri: string | CoapUri;
  options?: CoapOption[];
  payload?: Buffer;
  /** ms to collect responses (default 8000: above RFC 7252 DEFAULT_LEISURE of 5 s plus a round trip) */
  timeout?: number;
  /** fetch the remaining Block2 blocks of every server that sent block 0 with M=1 (default true) */
  followBlocks?: boolean;
  /** request this block size (Block2 with num 0) from the servers */
  block2Size?: number;
  /** cap on the reassembled body of one server, in bytes */
  maxBodySize?: number;
  /** what the exchange keeps (default DEFAULT_RESPONSE_LIMITS); what goes over is counted and dropped */
  limits?: Partial<ResponseLimits>;
  /**
   * End-to-end protection for the whole group: the Group OSCORE group-mode sender (GroupContext.groupRequests()),
   * or any RequestContext. Block2 follow-ups are then not fetched.
   */
  oscore?: { context: RequestContext };
}

export const DEFAULT_GROUP_TIMEOUT = 8000;

const URI = Symbol('uri');

/**
 * The origin of a direct response: the datagram's source. The URI string is built when first read, since an
 * exchange may hold a thousand responses whose URIs nobody asks for; `toJSON` shows it like a plain Origin. The cache
 * sits under a symbol so that copies (Node-RED clones messages) list only address, port and uri.
 */
class SourceOrigin implements Origin {
  [URI]?: string;
  oscore?: OscoreSender;
  constructor(
    readonly address: string,
    readonly port: number,
  ) {}

  get uri(): string {
    return (this[URI] ??= originUri(this.address, this.port));
  }

  toJSON(): { address: string; port: number; uri: string; oscore?: OscoreSender } {
    return { address: this.address, port: this.port, uri: this.uri, ...(this.oscore ? { oscore: this.oscore } : {}) };
  }
}

/**
 * A direct response held as the bytes of its datagram (RFC 7252 §3), copied into a slab its exchange shares among its
 * responses; its message is decoded from there when first read and kept from then on. A received datagram is its own
 * ArrayBuffer with a backing store (about 255 B besides its bytes on Node 20), and the endpoint's decoded message
 * holds it through its views: decoding again from the slab (well under a microsecond) lets the datagram go, whether
 * the message is read or not (docs/BENCHMARKS.md §6.5). Its origin is also its `remote`.
 */
class HeldResponse implements GroupResponse {
  private msg?: CoapMessage = undefined;

  constructor(
    private readonly slab: Buffer,
    private readonly start: number,
    private readonly end: number,
    private readonly token: Buffer,
    readonly origin: SourceOrigin,
    readonly index: number,
  ) {}

  get message(): CoapMessage {
    if (this.msg) return this.msg;
    const m = decode(this.slab.subarray(this.start, this.end));
    // the token equals the request's (the endpoint matched it): share that Buffer
    this.msg = { type: m.type, code: m.code, messageId: m.messageId, token: this.token, options: m.options.slice(), payload: m.payload };
    return this.msg;
  }

  get remote(): RemoteAddress {
    return this.origin;
  }

  toJSON(): GroupResponse {
    return { message: this.message, remote: this.origin, origin: this.origin, index: this.index };
  }
}

/**
 * The stream of responses of one exchange. Events: 'response' (GroupResponse), 'error' (Error, for a follow-up or
 * an answer of a proxy itself), 'limit' (ResponseLimitEvent, once per ResponseLimits cap reached: what goes over a
 * cap is counted in `dropped` and not delivered), 'end' (GroupSummary). Also an async iterator over the responses.
 * Subclasses decide how the request goes out, where an origin comes from and how block follow-ups travel.
 */
export abstract class ResponseStream extends EventEmitter implements AsyncIterable<GroupResponse> {
  /**
   * The responses kept, in arrival order. For an observation (a request with Observe 0), each server's first answer;
   * its later notifications are 'response' events only, so a long observation holds nothing per notification.
   */
  readonly responses: GroupResponse[] = [];
  /** responses that failed end-to-end verification (forged, replayed, from a non-member): dropped, not delivered */
  rejected = 0;
  /** responses dropped because a ResponseLimits cap was reached */
  dropped = 0;
  protected readonly limits: ResponseLimits;
  /** bytes the kept responses hold (ResponseLimits.maxBytes) */
  private keptBytes = 0;
  /** responses kept (or being reassembled) per origin "address|port"; made on the first response */
  private perServer?: Map<string, number>;
  /** the caps reached, in the order they were */
  private limitKinds?: ResponseLimitKind[];
  /** responses delivered so far (the 1-based index of the last one) */
  protected arrivals = 0;
  /** whether the request registers an observation (RFC 7641 §3.1), decided on the first response */
  private observation?: boolean;
  /** for an observation: the origins whose first response is kept; their notifications are delivered, not kept */
  private kept?: Set<string>;
  /** origins whose response is being fetched block-wise */
  private followingUp?: Set<string>;
  protected pendingFollowUps = 0;
  protected collecting = true;
  protected ended = false;
  protected cancelled = false;
  /** made on the first error: most exchanges have none */
  protected errors?: { origin: string; error: string; code?: string }[];
  // The summary promise is made on first use: most exchanges are consumed through events and never ask for it, and a
  // promise with its resolver is a good part of what a pending exchange holds.
  private summaryPromise?: Promise<GroupSummary>;
  private resolveSummary?: (s: GroupSummary) => void;
  private finalSummary?: GroupSummary;
  // The request, as a message or as the datagram that went out (decoded again only for a Block2 follow-up).
  private requestMessage?: CoapMessage;
  private requestBytes?: Buffer;

  constructor(
    protected readonly endpoint: CoapEndpoint,
    request: CoapMessage,
    protected readonly streamOpts: { followBlocks: boolean; maxBodySize: number; limits?: Partial<ResponseLimits> },
  ) {
    super();
    this.requestMessage = request;
    this.limits = responseLimits(streamOpts.limits);
  }

  protected get request(): CoapMessage {
    return (this.requestMessage ??= decode(this.requestBytes!));
  }

  protected set request(m: CoapMessage) {
    this.requestMessage = m;
    this.requestBytes = undefined;
  }

  /** Hold the request as the datagram that was sent: one Buffer instead of a message, its options and values. */
  protected keepRequestEncoded(bytes: Buffer): void {
    this.requestBytes = bytes;
    this.requestMessage = undefined;
  }

  /** Resolves with the summary when the exchange ends ('end'). */
  get summary(): Promise<GroupSummary> {
    if (!this.summaryPromise) {
      this.summaryPromise = this.finalSummary ? Promise.resolve(this.finalSummary) : new Promise((r) => (this.resolveSummary = r));
    }
    return this.summaryPromise;
  }

  abstract get token(): Buffer;

  /** Where a response came from. */
  protected abstract originOf(res: IncomingResponse): Origin;

  /** Send one Block2 follow-up for the server that sent `first`. */
  protected abstract fetchBlock(first: IncomingResponse, origin: Origin, options: CoapOption[]): Promise<IncomingResponse>;

  /**
   * A response that arrived (and verified, where the exchange verifies). `subject`: what overCap() already worked out
   * for it before verification, when its origin was known then; otherwise it is worked out here.
   */
  protected onResponse(res: IncomingResponse, subject?: CapSubject): void {
    if (!this.collecting || this.cancelled) return;
    const origin = this.originOf(res);
    // (no CapSubject made on this path: an exchange may take a thousand responses)
    const key = subject?.key ?? peerKey(origin.address, origin.port);
    const notification = subject?.notification ?? this.laterNotification(key);
    if (!notification && !this.admit(origin, key, heldBytes(res.message))) return;
    const b2 = getOption(res.message, OPT.BLOCK2);
    if (b2 && this.streamOpts.followBlocks) {
      const block = decodeBlock(b2);
      if (block.more && block.num === 0) {
        if (this.followingUp?.has(key)) {
          // a notification while the previous one from this server is still fetched block-wise: one follow-up per
          // server at a time, so that a source let in once cannot start any number of them
          this.reportError(origin.uri, new Error('notification dropped: the previous one is still being fetched block-wise'));
          return;
        }
        void this.followBlocks(res, block.szx, origin, key);
        return;
      }
    }
    this.deliver(res, origin, key, false);
  }

  /** The server of a response from `origin` as the caps see it (see CapSubject). */
  protected capSubject(origin: { address: string; port: number }): CapSubject {
    const key = peerKey(origin.address, origin.port);
    return { key, notification: this.laterNotification(key) };
  }

  /**
   * The cap a response would go over, checked before it is verified (cheap), so a flood costs no verifications; none
   * for a later notification (laterNotification()). Pass `subject` on to onResponse() once the response verified.
   */
  protected overCap(subject: CapSubject): ResponseLimitKind | undefined {
    return subject.notification ? undefined : this.capReached(subject.key);
  }

  /** The cap a response from the server `key` would go over, before it is counted (cheap: no verification yet). */
  private capReached(key: string): ResponseLimitKind | undefined {
    if (this.responses.length + this.pendingFollowUps >= this.limits.maxResponses) return 'responses';
    if (this.keptBytes >= this.limits.maxBytes) return 'bytes';
    if ((this.perServer?.get(key) ?? 0) >= this.limits.maxResponsesPerServer) return 'per-server';
    return undefined;
  }

  /**
   * Whether a response from the server `key` is a later notification of an observation (RFC 7641 §4.2, RFC 10020
   * §3.7: one stream per server, for as long as the observation lives) from a server whose first response is already
   * counted. Such a notification is not capped and not counted: it is delivered and not kept (deliver()), so it holds
   * nothing.
   */
  private laterNotification(key: string): boolean {
    return this.isObservation() && this.perServer?.has(key) === true;
  }

  protected isObservation(): boolean {
    if (this.observation === undefined) {
      const o = getOption(this.request, OPT.OBSERVE);
      this.observation = o !== undefined && decodeUint(o) === 0;
    }
    return this.observation;
  }

  /**
   * Count a response from the server `key` against the caps, or drop it (counted, 'limit' once per cap). Not called
   * for a later notification (laterNotification()), which is not counted.
   */
  private admit(origin: Origin, key: string, bytes: number): boolean {
    let kind = this.capReached(key);
    if (!kind && this.keptBytes + bytes > this.limits.maxBytes) kind = 'bytes';
    if (kind) {
      this.limitDrop(kind, origin.uri);
      return false;
    }
    const perServer = (this.perServer ??= new Map());
    perServer.set(key, (perServer.get(key) ?? 0) + 1);
    this.keptBytes += bytes;
    return true;
  }

  /** A response admitted but never delivered (its block-wise body failed or went over a cap): its count and bytes back. */
  private giveBack(key: string, first: IncomingResponse): void {
    if (this.isObservation() && this.kept?.has(key)) return; // a notification: never counted
    const n = this.perServer?.get(key) ?? 0;
    if (n <= 1) this.perServer?.delete(key);
    else this.perServer!.set(key, n - 1);
    this.keptBytes -= heldBytes(first.message);
  }

  protected limitDrop(kind: ResponseLimitKind, origin: string): void {
    this.dropped++;
    if (this.limitKinds?.includes(kind)) return;
    (this.limitKinds ??= []).push(kind);
    const limit = kind === 'responses' ? this.limits.maxResponses : kind === 'bytes' ? this.limits.maxBytes : this.limits.maxResponsesPerServer;
    const ev: ResponseLimitEvent = { kind, limit, origin };
    this.emit('limit', ev);
  }

  /** Deliver a response; true if it is kept in `responses` (false for a later notification of an observation). */
  protected deliver(res: IncomingResponse, origin: Origin, key: string, reassembled: boolean): boolean {
    this.arrivals++;
    if (this.isObservation()) {
      if (this.kept?.has(key)) {
        // a later notification: 'response' only; `responses` keeps each server's first answer (see laterNotification())
        this.emit('response', ResponseStream.prototype.hold.call(this, res, origin, reassembled));
        return false;
      }
      (this.kept ??= new Set()).add(key);
    }
    const gr = this.hold(res, origin, reassembled);
    this.responses.push(gr);
    this.emit('response', gr);
    return true;
  }

  /** The form a response is kept in for the life of the exchange. */
  protected hold(res: IncomingResponse, origin: Origin, reassembled: boolean): GroupResponse {
    // The endpoint matched the response by token, so the bytes equal the request's: share that Buffer rather than
    // hold a view per response (docs/BENCHMARKS.md §6). A direct response's origin is its source address: one object serves as both.
    // The decoder's options array has room for 17 (V8 grows an empty array that way); a held one gets its exact size.
    const message = { ...res.message, options: res.message.options.slice() };
    if (message.token.length === this.token.length) message.token = this.token;
    const remote = origin.address === res.remote.address && origin.port === res.remote.port && !origin.via ? origin : res.remote;
    const gr: GroupResponse = { message, remote, origin, index: this.arrivals };
    if (reassembled) gr.reassembled = true;
    return gr;
  }

  protected reportError(origin: string, err: Error, code?: string): void {
    (this.errors ??= []).push({ origin, error: err.message, ...(code ? { code } : {}) });
    if (this.listenerCount('error')) this.emit('error', Object.assign(err, { origin }));
  }

  /** groupcomm-bis §3.8: fetch blocks 1.. of one server's response by unicast, then deliver the whole body. */
  private async followBlocks(first: IncomingResponse, szx: number, origin: Origin, key: string): Promise<void> {
    this.pendingFollowUps++;
    (this.followingUp ??= new Set()).add(key);
    let counted = 0;
    let delivered = false;
    const parts: Buffer[] = [first.message.payload];
    let size = first.message.payload.length;
    let num = 1;
    try {
      for (;;) {
        const options = this.request.options.filter((o) => o.number !== OPT.BLOCK2 && o.number !== OPT.OBSERVE);
        options.push({ number: OPT.BLOCK2, value: encodeBlock({ num, more: false, szx }) });
        const res = await this.fetchBlock(first, origin, options);
        if (this.cancelled) return;
        if (res.message.code !== CODES.CONTENT) throw new Error(`block ${num} answered ${codeToString(res.message.code)}`);
        const b = getOption(res.message, OPT.BLOCK2);
        if (!b) throw new Error(`block ${num} came back without Block2`);
        const got = decodeBlock(b);
        if (got.num !== num) throw new Error(`asked for block ${num}, got ${got.num}`);
        parts.push(res.message.payload);
        size += res.message.payload.length;
        if (size > this.streamOpts.maxBodySize) throw new Error(`body exceeds ${this.streamOpts.maxBodySize} bytes`);
        this.keptBytes += res.message.payload.length;
        counted += res.message.payload.length;
        if (this.keptBytes > this.limits.maxBytes) {
          // the exchange's byte cap: this body is dropped like a response over it, and its bytes given back
          this.keptBytes -= counted;
          counted = 0;
          this.limitDrop('bytes', origin.uri);
          return;
        }
        if (!got.more) break;
        num++;
        szx = got.szx;
        if (num * blockSize(szx) > this.streamOpts.maxBodySize) throw new Error(`body exceeds ${this.streamOpts.maxBodySize} bytes`);
      }
      const whole = { ...first.message, options: first.message.options.filter((o) => o.number !== OPT.BLOCK2 && o.number !== OPT.SIZE2), payload: Buffer.concat(parts) };
      delivered = true;
      // a notification of an observation is delivered and not kept: its blocks' bytes are given back
      if (!this.deliver({ message: whole, remote: first.remote }, origin, key, true)) this.keptBytes -= counted;
    } catch (err) {
      this.keptBytes -= counted;
      if (!this.cancelled) this.reportError(origin.uri, err as Error);
    } finally {
      this.followingUp?.delete(key);
      if (!delivered) this.giveBack(key, first);
      if (!this.cancelled) {
        this.pendingFollowUps--;
        this.maybeEnd();
      }
    }
  }

  protected stopCollecting(): void {
    this.collecting = false;
    this.maybeEnd();
  }

  protected maybeEnd(): void {
    if (this.ended || this.collecting || this.pendingFollowUps > 0) return;
    this.ended = true;
    const seen = new Map<string, Origin>();
    for (const r of this.responses) if (!seen.has(r.origin.uri)) seen.set(r.origin.uri, r.origin);
    const summary: GroupSummary = { token: this.token, responses: this.arrivals, responders: [...seen.values()], errors: this.errors ?? [], cancelled: this.cancelled };
    if (this.limitKinds) summary.limited = { dropped: this.dropped, kinds: this.limitKinds };
    this.finalSummary = summary;
    this.emit('end', summary);
    this.resolveSummary?.(summary);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GroupResponse> {
    let i = 0;
    for (;;) {
      if (i < this.responses.length) {
        yield this.responses[i++];
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.off('response', wake);
          this.off('end', wake);
          resolve();
        };
        this.on('response', wake);
        this.on('end', wake);
      });
    }
  }
}

/**
 * A group request sent directly over multicast: origins are the responses' source addresses. The exchange is its
 * own record in the endpoint (GroupRequestRecord): no handle, closures or timer per exchange.
 */
export class GroupExchange extends ResponseStream implements GroupRequestRecord {
  /** @internal written by the endpoint */
  exchangeToken?: Buffer = undefined;
  /** @internal written by the endpoint's deadline queue */
  dueAt?: number = undefined;
  /** @internal written by the endpoint's deadline queue */
  dueSlot?: number = undefined;
  /** where held responses' bytes go (see HeldResponse) */
  private slab?: Buffer = undefined;
  private slabUsed = 0;
  /** servers whose Echo challenge to an observation was answered (made on the first one) */
  private echoAnswers?: EchoAnswers = undefined;
  /** when the request went to the group (endpoint clock), for the window of Echo answers */
  private sentAt = 0;

  constructor(
    endpoint: CoapEndpoint,
    request: CoapMessage,
    opts: { followBlocks: boolean; maxBodySize: number; limits?: Partial<ResponseLimits> },
    /** verifies one response end to end (throws if it does not verify) */
    private readonly verify?: (res: IncomingResponse) => VerifiedIncoming,
  ) {
    super(endpoint, request, opts);
  }

  get token(): Buffer {
    return this.exchangeToken!;
  }

  /** @internal */
  get multi(): true {
    return true;
  }

  /** @internal */
  start(group: RemoteAddress, timeout: number): this {
    this.sentAt = this.endpoint.clock.now();
    this.keepRequestEncoded(this.endpoint.startGroupRequest(this, this.request, group, timeout));
    return this;
  }

  /** @internal the endpoint matched a response to our token */
  onExchangeResponse(res: IncomingResponse): void {
    if (!this.verify) return this.onResponse(res);
    if (!this.collecting || this.cancelled) return;
    if (this.answerEcho(res)) return;
    // over a cap already: dropped before its signature is checked, so a flood costs no verifications. The origin is
    // the datagram's source (originOf()), known before verification: what the caps worked out goes on to onResponse().
    const subject = this.capSubject(res.remote);
    const over = this.overCap(subject);
    if (over) return this.limitDrop(over, originUri(res.remote.address, res.remote.port));
    let v: VerifiedIncoming;
    try {
      v = this.verify(res);
    } catch (err) {
      // RFC 8613 §8.4 / RFC 10021 §8.4: stop processing that response; the exchange goes on.
      this.rejected++;
      this.reportError(originUri(res.remote.address, res.remote.port), err as Error, 'oscore');
      return;
    }
    this.onResponse(v, subject);
  }

  /**
   * draft-ietf-core-cacheable-oscore §3.1 with RFC 9175 §2.4 item 3: a server registers an observer of a
   * Deterministic Request only once its address is verified, and asks with an unprotected 4.01 + Echo; the
   * registration goes again to that server alone, on this token, with the Echo. Its notifications then come on this
   * token like the others'. The repeat is a CON, so the message layer retransmits it until the server's ACK (which
   * carries its first notification); a lost repeat would otherwise leave that server unobserved. A forged challenge
   * (anyone who saw the token) is answered within EchoAnswers' bounds only (at most MAX_ECHO_ANSWERS repeats, each
   * retransmitted at most MAX_RETRANSMIT times). True when `res` was such a challenge (answered, or refused and
   * counted in echoChallenges); it is never delivered.
   */
  private answerEcho(res: IncomingResponse): boolean {
    if (!isEchoChallenge(res.message) || !this.isObservation() || !isDeterministicRequest(this.request)) return false;
    const clock = this.endpoint.clock;
    const answers = (this.echoAnswers ??= new EchoAnswers(() => clock.now(), this.endpoint.params.DEFAULT_LEISURE + ECHO_ANSWER_GRACE, { sentAt: this.sentAt }));
    const again = answers.repeat(this.request, res.message, res.remote);
    if (again) this.endpoint.sendMessage(createMessage({ ...again, type: 'CON', messageId: this.endpoint.newMessageId(res.remote) }), res.remote);
    return true;
  }

  /** Echo challenges to this observation answered with a repeat, and refused (see EchoAnswers). */
  get echoChallenges(): { repeats: number; refused: number } {
    return { repeats: this.echoAnswers?.repeats ?? 0, refused: this.echoAnswers?.refused ?? 0 };
  }

  protected override hold(res: IncomingResponse, origin: Origin, reassembled: boolean): GroupResponse {
    // only a response exactly as the endpoint decoded it (not a verified or reassembled one) is held as its datagram
    const data = res.data;
    if (!reassembled && !this.verify && data && origin instanceof SourceOrigin && res.message.token.length === this.token.length) {
      let slab = this.slab;
      if (!slab || this.slabUsed + data.length > slab.length) {
        // slabs grow with the exchange (512 B, 2 KiB, ... 64 KiB), so a small exchange holds little unused room
        slab = this.slab = Buffer.allocUnsafeSlow(Math.max(data.length, Math.min(64 * 1024, slab ? slab.length * 4 : 512)));
        this.slabUsed = 0;
      }
      const start = this.slabUsed;
      this.slabUsed += data.copy(slab, start);
      return new HeldResponse(slab, start, this.slabUsed, this.token, origin, this.arrivals);
    }
    return super.hold(res, origin, reassembled);
  }

  /** @internal the deadline passed (or the endpoint closed) */
  onExchangeEnd(): void {
    this.stopCollecting();
  }

  /** Stop now: no more responses are delivered, follow-ups are abandoned, 'end' fires. */
  cancel(): void {
    if (this.ended) return;
    this.cancelled = true;
    this.pendingFollowUps = 0;
    this.endpoint.endGroupRequest(this);
    // After the deadline the endpoint no longer holds the request, so the line above ends nothing: with Block2
    // follow-ups still pending (abandoned just now), 'end' comes from here.
    this.maybeEnd();
  }

  protected originOf(res: VerifiedIncoming): Origin {
    const origin = new SourceOrigin(res.remote.address, res.remote.port);
    if (res.oscore) origin.oscore = res.oscore;
    return origin;
  }

  protected fetchBlock(first: IncomingResponse, _origin: Origin, options: CoapOption[]): Promise<IncomingResponse> {
    return this.endpoint.request({ code: this.request.code, options }, first.remote, { confirmable: true });
  }
}

export class GroupClient {
  constructor(readonly endpoint: CoapEndpoint) {}

  /** Send a group request; the returned exchange emits each response, then 'end'. */
  request(opts: GroupRequestOptions): GroupExchange {
    const uri = typeof opts.uri === 'string' ? parseUri(opts.uri) : opts.uri;
    if (!isGroupUri(uri)) throw new UriError('not a multicast address; a group URI needs one (or use a proxy)');
    if (uri.port === 5684) throw new UriError('port 5684 must not be used for group communication (groupcomm-bis §3.4)');
    const options = [...uriToOptions(uri), ...(opts.options ?? [])];
    if (opts.block2Size && !options.some((o) => o.number === OPT.BLOCK2)) {
      options.push({ number: OPT.BLOCK2, value: encodeBlock({ num: 0, more: false, szx: Math.max(0, Math.log2(opts.block2Size) - 4) }) });
    }
    let msg = createMessage({ type: 'NON', code: opts.method ?? CODES.GET, options, payload: opts.payload });
    let verify: ((res: IncomingResponse) => VerifiedIncoming) | undefined;
    if (opts.oscore) {
      // RFC 10021 §8.1: one protected request for every member; each response is verified with the Recipient
      // Context its kid names (§8.4), with one replay window per responder.
      const p = protectRequest(opts.oscore.context, msg, { multipleResponses: true });
      msg = { ...msg, code: p.message.code, options: p.message.options, payload: p.message.payload };
      const binding = p.binding;
      verify = (res) => {
        const v = unprotectResponse(binding, res.message);
        return { ...res, message: v.message, oscore: { kid: v.responder.recipientId.toString('hex'), mode: v.responder.mode } };
      };
    }
    const ex = new GroupExchange(this.endpoint, msg, { followBlocks: opts.oscore ? false : opts.followBlocks ?? true, maxBodySize: opts.maxBodySize ?? 1 << 20, limits: opts.limits }, verify);
    return ex.start({ address: socketAddress(uri), port: uri.port }, opts.timeout ?? DEFAULT_GROUP_TIMEOUT);
  }

  /** A follow-up unicast request to one server (e.g. an origin from a group response). */
  async unicast(opts: { method?: number; uri: string | CoapUri; options?: CoapOption[]; payload?: Buffer; confirmable?: boolean; timeout?: number }): Promise<IncomingResponse> {
    const uri = typeof opts.uri === 'string' ? parseUri(opts.uri) : opts.uri;
    if (isGroupUri(uri)) throw new UriError('use request() for a group URI');
    if (uri.family === 0) throw new UriError('host names are not resolved here; use an IP literal');
    const options = [...uriToOptions(uri), ...(opts.options ?? [])];
    return this.endpoint.request({ code: opts.method ?? CODES.GET, options, payload: opts.payload }, { address: socketAddress(uri), port: uri.port }, {
      confirmable: opts.confirmable ?? true,
      timeout: opts.timeout,
    });
  }
}
