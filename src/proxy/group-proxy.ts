// Forward and reverse proxy to CoAP groups, groupcomm-proxy-07: request processing in the draft's order (§5.2.1,
// `requestProcessing` below), the fan-out (§5.2.1 steps 5-6: the proxy's own token, collecting until T', §5.2.3
// early stop, §5.4.2 Observe) and unicast forwarding (RFC 7252 §5.7). The other stages live beside it: admission.ts
// (identification, allow-list, Hop-Limit, Multicast-Timeout, limits), target.ts, exchange.ts (states), chain.ts
// (§8), front.ts (the client leg; relay-datagram.ts, a relayed response patched from the server's datagram), cache.ts
// (§7). As an OSCORE endpoint (oscore-capable-proxies-07 §2.4-§2.5) it removes the layer a client applied for it and
// identifies the client by that context (§5.2.1 steps 1-2, REQ2).
// With `signatureCheckers` it is an external signature checker (RFC 10021 §7.5, signature-check.ts) in the
// fan-out (before a group-mode request leaves) and in the response relay (before a response reaches the client).

import { EventEmitter } from 'node:events';
import { decodeReplyFrom, encodeReplyFrom, encodeResponseForwarding } from '../cbor/cri';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapResponseError, isResponseError } from '../coap/errors';
import { CoapMessage, CoapOption, createMessage, getOption, getOptions, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, isUnsafe, optionDef, optionNumber } from '../coap/options';
import { CoapUri, isMulticastAddress, socketAddress, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingRequest, IncomingResponse, ResponseContext } from '../messaging/endpoint';
import { Clock, systemClock } from '../messaging/parameters';
import { ContextLookup, DEFAULT_MAX_LAYERS, LayerError, RemovedLayer, oscoreClientId, proxyInboundClassE, proxyRelatedKind, removeRequestLayers } from '../oscore/nested';
import { MessageParts, isProtected } from '../oscore/protect';
import { isDeterministicRequest } from '../oscore/group/deterministic';
import { RemoteAddress, peerKey } from '../transport/udp-transport';
import { DEFAULT_RESPONSE_LIMITS } from '../group/response-limits';
import { NotificationRelay } from '../observe/notification-relay';
import { TicketListener } from '../observe/ticket-listener';
import type { SignatureChecker } from '../oscore/group/signature-checker';
import { RequestVerdict, checkGroupRequest, checkGroupResponse } from './signature-check';
import { AllowList, EchoVerifier, HostLimitOptions, HostLimits, ProxyClient, encodedSizeBound, encodedSizeFloor, hostOf, isAllowed, isAllowedAnywhere, nextHopLimit, readMulticastTimeout, withinAmplificationLimit } from './admission';
import { CachedResponse, ProxyCache, isCacheableRequest, requestKey } from './cache';
import { ChainConfig, ChainTimers, chainTimers, minimumAcceptable, ownMinimumAfter505, retryAfter505 } from './chain';
import { ChainTimeoutError, EchoRequiredError, LimitError, NotAllowedError, SignatureCheckError, TargetError } from './errors';
import { Deadline, Deadlines } from './deadlines';
import { ExchangeLife } from './exchange';
import { ClientLeg, CoapFront } from './front';
import { SharedObservations } from './shared-observation';
import { ResolvedTarget, ReverseMapping, TargetConfig, namesTarget, resolveTarget } from './target';

export type { AllowRule, ProxyClient } from './admission';
export type { ChainConfig } from './chain';
export type { ReverseMapping } from './target';

export type ReplyFromFormat = 'reply-from' | 'response-forwarding' | 'both';

/** The proxy as an OSCORE endpoint towards its clients (oscore-capable-proxies-07). */
export interface ProxyOscoreOptions {
  /** contexts shared with clients, found by kid (+ kid context); a function can keep per-source lists (OCP-07 §2.4.1) */
  contexts: ContextLookup;
  /** answer requests that carry no OSCORE layer for the proxy with 4.01 (default true) */
  required?: boolean;
  /** most OSCORE layers removed from one request (OCP-07 §2.1; default 2): one more gives a protected 4.01 */
  maxLayers?: number;
  /** option numbers recognized beyond the option table (OCP-07 §2.2: an unrecognized option in a response it must protect gives 5.02) */
  understoodOptions?: number[];
}

export interface GroupProxyOptions {
  /** endpoint facing the clients (the proxy serves on it) */
  listen: CoapEndpoint;
  /** endpoint used towards groups, servers and the next hop; may be the same as listen */
  upstream: CoapEndpoint;
  /** accept Proxy-Uri / Proxy-Scheme requests (forward proxy; default true) */
  forward?: boolean;
  reverse?: ReverseMapping[];
  /** who may use the proxy; default: nobody (a proxy fans out only for allow-listed clients) */
  allow?: AllowList;
  /**
   * UNSAFE: trust a client's source address without verifying it with Echo (RFC 9175 §2.4). A spoofed allow-listed
   * address then makes the proxy send every relayed response to that address's owner. Default false.
   */
  unsafeTrustAddresses?: boolean;
  /** ms after which an address-identified client proves reachability with Echo again (default 10 min) */
  echoInterval?: number;
  /** forward to group URIs at all (RFC 10020 §3.5: 5.01 when off); default true */
  groupProxying?: boolean;
  /** non-last proxy in a chain */
  chain?: ChainConfig;
  replyFrom?: ReplyFromFormat;
  /** how the proxy is reached by clients, for reverse case 1 Reply-From element 1 (default: listen address) */
  selfAuthority?: { scheme?: string; host: string; port: number };
  /** known host names -> IP literals (no DNS is used) */
  hosts?: Record<string, string>;
  /** largest Multicast-Timeout accepted, seconds (default 300) */
  maxMulticastTimeout?: number;
  /** group exchanges in progress per host (IP address or OSCORE identity; default 16) */
  maxPendingPerClient?: number;
  /** relayed responses per second per host (default 200) */
  maxResponsesPerSecond?: number;
  /** responses relayed per group exchange before T' (default: the group client's DEFAULT_RESPONSE_LIMITS.maxResponses) */
  maxResponsesPerExchange?: number;
  /** global budget over every host's slots (default 20000) */
  maxExchanges?: number;
  /** the other per-host limits (T' = 0 rate, unicast forwards, Observe relays) */
  limits?: Omit<HostLimitOptions, 'clock' | 'pending' | 'global'>;
  /** upstream observations the notification relay holds at most (default 256) */
  maxRelayTargets?: number;
  /** type of relayed responses (default NON) */
  relayType?: 'NON' | 'CON';
  /** Hop-Limit added when the request carries none (RFC 8768 §3: 16) */
  hopLimit?: number;
  /** ms a unicast (non-group) forwarded request may take (default: the upstream exchange lifetime) */
  unicastTimeout?: number;
  /** remove the clients' OSCORE layer, identify them by it, protect what goes back (default: no OSCORE) */
  oscore?: ProxyOscoreOptions;
  /** cache responses (GCP-07 §7); default off */
  cache?: boolean | { maxEntries?: number };
  /**
   * Known members of groups, by group authority ("224.0.1.187:5683" -> ["127.0.0.2:5683", ...]). With a fresh
   * cached response from every member, a group request is answered from the cache alone and Group-ETag is offered.
   */
  members?: Record<string, string[]>;
  /** serve unicast Observe registrations through one upstream observation per target (MNP-02 §3); default true */
  observeRelay?: boolean;
  /**
   * Act as external signature checker (RFC 10021 §7.5) for these groups: a group-mode request of one of them whose
   * countersignature does not verify is answered 4.00 and never fanned out. Requests of other groups pass as they are.
   */
  signatureCheckers?: SignatureChecker[];
  /** timers and time (tests pass a FakeClock) */
  clock?: Clock;
}

export interface ProxyEvent {
  /** 'challenge': a 4.01 with Echo asked an address-identified client to prove it is reachable (RFC 9175 §2.4) */
  kind: 'request' | 'response' | 'reject' | 'challenge' | 'end' | 'drop';
  client: ProxyClient;
  token: string;
  target?: string;
  code?: string;
  origin?: { address: string; port: number };
  reason?: string;
  multicastTimeout?: number;
}

export interface ProxyCounters {
  requests: number;
  groupRequests: number;
  unicastRequests: number;
  relayed: number;
  rejected: number;
  lateDropped: number;
  rateDropped: number;
  earlyStops: number;
  /** requests refused while removing OSCORE layers (RFC 8613 §8.2 errors, layer limit) */
  oscoreFailures: number;
  /** 4.01 with Echo sent to unverified addresses (RFC 9175 §2.4) */
  echoChallenges: number;
  /** requests refused by a limit (4.29 or 5.03) */
  limited: number;
  /** answers not sent because they exceeded 3x what an unidentified source sent (RFC 9000 §8.1) */
  amplificationDrops: number;
  /** 5.05 answers of the next hop retried with a larger T'' (groupcomm-proxy-07 §8.1) */
  chainRetries: number;
  /** group requests dropped before fan-out, and relayed responses dropped, because their Group OSCORE signature did not verify (RFC 10021 §7.5) */
  signatureRejected: number;
  /** responses dropped because their exchange had relayed maxResponsesPerExchange already */
  capDropped: number;
}

/** A server's encoded Reply-From, its "addr|port" for knownServers, and the option list made from it. */
interface OriginEntry {
  value: Buffer;
  known: string;
  number: number | undefined;
  options: CoapOption[] | undefined;
}

interface Exchange {
  key: string;
  leg: ClientLeg;
  /** hostOf(leg.client): the key of the host's limits and response rate */
  host: string;
  /** ends this exchange when the client RSTs a relayed response (made at the first relay) */
  gone?: (reason: string) => void;
  target: string;
  life: ExchangeLife;
  reverse?: ReverseMapping;
  groupPort: number;
  relayCount: number;
  /** the request went to the next hop again with its Echo (RFC 9175 §2.4) */
  echoed?: boolean;
  stopUpstream?: () => void;
  /** request as forwarded upstream, kept only where it is sent again: Observe (re-registration, deregistration), chains */
  upstreamRequest?: CoapMessage;
  upstreamDest?: RemoteAddress;
  /** T' (collect): an entry of the proxy's shared Deadlines, not a timer of its own */
  tPrimeDue?: Deadline<Exchange>;
  /** the deregistration's T', the chain's own T, the cache timer */
  timer?: unknown;
  ownTimer?: unknown;
  cacheTimer?: unknown;
  tPrime: number;
  chain?: ChainTimers;
  /** the exchange holds one of its host's pending slots (HostLimits); given back once the client can get nothing more */
  holdsSlot: boolean;
  cacheKey?: string;
  /** servers ("addr|port") that answered or were served from the cache in this exchange (kept only with a cache) */
  answered?: Set<string>;
  /** the request passed the signature check (RFC 10021 §7.5): its responses are checked too */
  signature?: Extract<RequestVerdict, { kind: 'ok' }>;
  /** maxResponsesPerExchange was reached (its 'drop' event is sent once) */
  capped?: boolean;
  /** observes a Deterministic Request through the upstream observation it shares with other clients (shared-observation.ts) */
  shared?: boolean;
}

const EMPTY = Buffer.alloc(0);
/** the layers of a request that came without OSCORE: one shared empty list */
const NO_LAYERS = Object.freeze([]) as unknown as RemovedLayer[];
/**
 * A flat copy of a string built by concatenation: V8 keeps such a string as a tree of pieces (32 bytes a node), and
 * a pending exchange's key would hold that tree for as long as it lives.
 */
const flat = (s: string): string => Buffer.from(s, 'utf8').toString('utf8');
const keyOf = (c: ProxyClient, token: Buffer) => `${c.kid !== undefined ? `kid:${c.kid}` : `${c.address}|${c.port}`}|${token.toString('hex')}`;
const NO_KEEP = { keepReply: false } as { separate?: boolean };

export class GroupProxy extends EventEmitter {
  readonly counters: ProxyCounters = {
    requests: 0, groupRequests: 0, unicastRequests: 0, relayed: 0, rejected: 0, lateDropped: 0, rateDropped: 0, earlyStops: 0, oscoreFailures: 0, echoChallenges: 0, limited: 0, amplificationDrops: 0, chainRetries: 0, signatureRejected: 0, capDropped: 0,
  };
  private readonly exchanges = new Map<string, Exchange>();
  private readonly rate = new Map<string, { windowStart: number; count: number }>();
  /** servers that answered through us, for reverse case 1 follow-ups: "addr|port" */
  private readonly knownServers = new Map<string, number>();
  /** Reply-From values already encoded, by server: [forward, standing in for servers] (see originEntry) */
  private readonly originEntries = [new Map<string, Map<number, OriginEntry>>(), new Map<string, Map<number, OriginEntry>>()];
  private originEntryCount = 0;
  private readonly targetTexts = new Map<string, string>();
  /** T' of every pending exchange, one clock timer per distinct T' */
  private readonly tPrimeDeadlines: Deadlines<Exchange>;
  private readonly opts: Required<Pick<GroupProxyOptions, 'forward' | 'groupProxying' | 'replyFrom' | 'hosts' | 'maxMulticastTimeout' | 'maxResponsesPerSecond' | 'maxResponsesPerExchange' | 'relayType' | 'hopLimit'>> & GroupProxyOptions;
  private closed = false;
  private readonly endFn = (ex: Exchange, reason: string) => this.endExchange(ex, reason);
  private readonly clock: Clock;
  readonly limits: HostLimits;
  private readonly echo: EchoVerifier;
  private readonly front: CoapFront;
  private readonly targetConfig: TargetConfig;
  /** how this proxy names itself in a 5.08 (RFC 8768 §3) and in Reply-From for reverse case 1 */
  private readonly self: { scheme: string; host: string; port: number };
  /** GCP-07 §7 response cache, when enabled */
  readonly cache?: ProxyCache;
  private relayHub?: NotificationRelay;
  private ticketHub?: TicketListener;
  private sharedHub?: SharedObservations<Exchange>;

  constructor(opts: GroupProxyOptions) {
    super();
    this.opts = { forward: true, groupProxying: true, replyFrom: 'reply-from', hosts: {}, maxMulticastTimeout: 300, maxResponsesPerSecond: 200, maxResponsesPerExchange: DEFAULT_RESPONSE_LIMITS.maxResponses, relayType: 'NON', hopLimit: 16, ...opts };
    this.clock = opts.clock ?? systemClock;
    this.tPrimeDeadlines = new Deadlines(this.clock, (ex) => this.tPrimePassed(ex));
    this.limits = new HostLimits({ ...opts.limits, pending: opts.maxPendingPerClient ?? 16, global: opts.maxExchanges ?? 20_000, clock: this.clock });
    this.echo = new EchoVerifier({ interval: opts.echoInterval, clock: this.clock });
    this.self = this.selfName();
    this.front = new CoapFront(opts.listen, { understoodOptions: opts.oscore?.understoodOptions, onDrop: (client, token, reason) => this.emitEvent({ kind: 'drop', client, token: token.toString('hex'), reason }) });
    this.targetConfig = { forward: this.opts.forward, reverse: opts.reverse, hosts: this.opts.hosts, listenPort: opts.listen.transport.address().port, knownServer: (h, p) => this.knownServers.has(peerKey(h, p)) };
    opts.listen.setRequestHandler((req, ctx) => this.handle(req, ctx));
    if (opts.cache) this.cache = new ProxyCache(typeof opts.cache === 'object' ? opts.cache.maxEntries : undefined, () => this.clock.now());
  }

  /**
   * The proxy's own authority. Reply-From (reverse case 1) must never carry an unspecified address
   * (groupcomm-proxy-07 §3): a proxy bound to 0.0.0.0 / :: that stands in for servers needs selfAuthority.
   */
  private selfName(): { scheme: string; host: string; port: number } {
    if (this.opts.selfAuthority) return { scheme: this.opts.selfAuthority.scheme ?? 'coap', host: this.opts.selfAuthority.host, port: this.opts.selfAuthority.port };
    const a = this.opts.listen.transport.address();
    const unspecified = a.address === '0.0.0.0' || a.address === '::';
    if (unspecified && (this.opts.reverse ?? []).some((m) => m.standIn === 'servers')) {
      throw new RangeError('a reverse proxy that stands in for servers (case 1) and listens on an unspecified address needs selfAuthority: Reply-From must name an address clients can reach');
    }
    return { scheme: 'coap', host: a.address, port: a.port };
  }

  private get tickets(): TicketListener {
    if (!this.ticketHub) {
      this.ticketHub = new TicketListener(this.opts.listen, this.opts.upstream, { clock: this.clock });
      this.ticketHub.on('rejected', (r: { client: RemoteAddress; token: string; code: number; reason: string }) =>
        this.emitEvent({ kind: 'reject', client: { address: r.client.address, port: r.client.port }, token: r.token, code: codeToString(r.code), reason: r.reason }));
    }
    return this.ticketHub;
  }

  private get notificationRelay(): NotificationRelay {
    return (this.relayHub ??= new NotificationRelay(this.opts.listen, this.opts.upstream, { clock: this.clock }));
  }

  /** Observations the proxy holds upstream on behalf of its clients (one per target), relayed (MNP-02 §3) or by ticket (§4). */
  get relayedObservations(): number {
    return (this.relayHub?.observations ?? 0) + (this.ticketHub?.observationCount ?? 0);
  }

  /** draft-ietf-core-cacheable-oscore-02 §3.1: one upstream observation per observed Deterministic Request. */
  private get sharedObservations(): SharedObservations<Exchange> {
    return (this.sharedHub ??= new SharedObservations<Exchange>(
      this.opts.upstream,
      {
        relay: (ex, res) => this.relay(ex, res),
        // A notification is a fresh response to the same Cache-Key as the non-observing request (Observe is not part
        // of it): stored without Observe, with Reply-From (GCP-07 §5.4.1), it serves them from the cache.
        received: (key, res, ex) => {
          if (!this.cache) return;
          const options = res.message.options.filter((o) => o.number !== OPT.OBSERVE && o.number !== optionDef('Reply-From')?.number && o.number !== optionDef('Response-Forwarding')?.number);
          this.cache.store(key, peerKey(res.remote.address, res.remote.port), { ...res.message, options: sortOptions([...options, ...this.replyFromOptions(ex, res.remote)]) });
        },
      },
      () => this.clock.now(),
    ));
  }

  /** Upstream observations shared by clients of one Deterministic Request. */
  get sharedObservationCount(): number {
    return this.sharedHub?.count ?? 0;
  }

  get activeExchanges(): number {
    return this.exchanges.size;
  }

  private membersOf(uri: CoapUri): string[] {
    const m = this.opts.members?.[`${uri.host}:${uri.port}`] ?? this.opts.members?.[uri.family === 6 ? `[${uri.host}]:${uri.port}` : ''];
    return (m ?? []).map((x) => x.trim()).map((x) => {
      const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(x);
      if (v6) return peerKey(v6[1], v6[2]);
      const i = x.lastIndexOf(':');
      return i > 0 ? peerKey(x.slice(0, i), x.slice(i + 1)) : peerKey(x, 5683);
    });
  }

  /** One flat string per target (up to 1,024 targets): exchanges to the same group share it. */
  private targetText(text: string): string {
    let t = this.targetTexts.get(text);
    if (t === undefined) {
      t = flat(text);
      if (this.targetTexts.size >= 1024) this.targetTexts.delete(this.targetTexts.keys().next().value!);
      this.targetTexts.set(t, t);
    }
    return t;
  }

  private emitEvent(e: ProxyEvent): void {
    if (this.listenerCount('event')) this.emit('event', e);
  }

  // ------------------------------------------------------------------ groupcomm-proxy-07 §5.2.1

  private handle(req: IncomingRequest, ctx: ResponseContext): void {
    this.counters.requests++;
    // RFC 7252 §8.1: a request that came by multicast is never answered with an error; this proxy serves unicast.
    if (req.multicast) {
      this.counters.rejected++;
      return ctx.ignore();
    }
    const client: ProxyClient = { address: req.remote.address, port: req.remote.port };
    let leg: ClientLeg | undefined;
    try {
      // Step 1: remove the OSCORE layers meant for the proxy (oscore-capable-proxies-07 §2.4).
      const { message, layers } = this.decrypt(req, client);
      const request = message === req.message ? req : { ...req, message };
      leg = this.front.leg(request, ctx, client, layers);
      this.requestProcessing(request, leg);
    } catch (err) {
      this.refuse(err, req, ctx, client, leg);
    }
  }

  /**
   * A request that came through another front (the HTTP front, groupcomm-proxy-07 §9.5): the same stages from
   * §5.2.1 step 2 on (allow-list, target, limits, fan-out), answered through `leg`.
   */
  serveLeg(req: IncomingRequest, leg: ClientLeg): void {
    this.counters.requests++;
    try {
      if (this.closed) throw new LimitError('proxy closed', 60, true);
      this.requestProcessing(req, leg);
    } catch (err) {
      this.refuse(err, req, this.legContext(leg), leg.client, leg);
    }
  }

  /** Is `client` on the allow-list for any target (another front refuses before it parses the target, §5.2.1)? */
  allowsClient(client: ProxyClient): boolean {
    return isAllowedAnywhere(this.opts.allow, client);
  }

  /** The client of `leg` is gone (e.g. its HTTP connection closed): the exchange ends, its slot goes back. */
  cancelLeg(leg: ClientLeg, reason = 'client gone'): void {
    const ex = this.exchanges.get(keyOf(leg.client, leg.token));
    if (ex && ex.leg === leg) this.endExchange(ex, reason);
  }

  /** groupcomm-proxy-07 §5.2.1, step by step (step 1 happened in handle()). */
  private requestProcessing(req: IncomingRequest, leg: ClientLeg): void {
    const msg = req.message;
    // §5.2.3, RFC 10020 §3.5.2 and §3.7: a request on the token of an exchange in progress.
    const existing = this.exchanges.get(keyOf(leg.client, msg.token));
    if (existing) return this.sameToken(existing, req, leg);
    // Step 2: identify the client and check the allow-list (REQ1, REQ2); errors about the target only after it.
    const target = this.admit(req, leg);
    // MNP-02 §4, OCP-07 §2.4 step 4: a ticket request is not forwarded; the proxy listens to the group itself.
    if (this.tickets.wants(msg, req.remote)) return this.ticket(req, leg, target);
    // RFC 7252 §5.7.1: an unsafe option this proxy does not know cannot be forwarded.
    if (msg.options.some((o) => isUnsafe(o.number) && !optionDef(o.number))) throw new TargetError(CODES.BAD_GATEWAY, 'unknown unsafe option');
    // RFC 8768 §3: Hop-Limit.
    const hopLimit = nextHopLimit(msg, this.opts.hopLimit, this.selfText());
    if (!(target.uri.family !== 0 && isMulticastAddress(target.uri.host))) return this.forwardUnicast(req, leg, target, hopLimit);
    // RFC 10020 §3.5: proxying to group URIs must be enabled.
    if (!this.opts.groupProxying) throw new TargetError(CODES.NOT_IMPLEMENTED, 'group proxying off');
    // Steps 3-4: Multicast-Timeout present, T' read and bounded.
    const tPrime = readMulticastTimeout(msg, this.opts.maxMulticastTimeout);
    // REQ2 for an address: reachability proved with Echo before any fan-out (RFC 9175 §2.4).
    this.verify(req, leg);
    // Steps 5-6: forward with the proxy's own token and collect until T'.
    this.fanOut(req, leg, target, tPrime, hopLimit);
  }

  // ------------------------------------------------------------------ step 1 (oscore-capable-proxies-07 §2.4)

  private decrypt(req: IncomingRequest, client: ProxyClient): { message: CoapMessage; layers: RemovedLayer[] } {
    const o = this.opts.oscore;
    if (!o) return { message: req.message, layers: NO_LAYERS };
    const inbound = proxyInboundClassE();
    const r = removeRequestLayers(req.message, {
      contexts: o.contexts,
      source: req.remote,
      maxLayers: o.maxLayers ?? DEFAULT_MAX_LAYERS,
      proxyRelated: (m, removed) => this.isProxyRequest(m, removed),
      // The client escalated the proxy's options to class E for this layer (§2.2): Outer copies are not its own.
      classE: () => inbound,
    });
    if (r.layers.length) {
      // §5.2.1 step 2, §10 REQ2: the client is who the context of its layer says it is, whatever its address.
      client.kid = oscoreClientId(r.layers[0].context);
      return { message: r.message, layers: r.layers };
    }
    // OCP-07 §2.4 step 4: forwarding for an unidentified client is not acceptable.
    if (o.required !== false) throw new CoapResponseError({ responseCode: CODES.UNAUTHORIZED, diagnostic: 'OSCORE required', code: 'ERR_OSCORE_REQUIRED' });
    return { message: req.message, layers: NO_LAYERS };
  }

  /** OCP-07 §2.4 steps 1-3 for this proxy: forward-proxy options, or a request for a reverse-proxy resource. */
  private isProxyRequest(m: CoapMessage, removed: readonly RemovedLayer[]): boolean {
    const kind = proxyRelatedKind(m);
    if (kind === 'forward') return true;
    if (kind !== 'reverse' || !this.opts.reverse?.length) return false;
    // Step 3: with OSCORE required, the reverse-proxy resources serve only clients identified by a layer the proxy
    // removed, so a request still protected for the proxy is decrypted first (step 6).
    if (removed.length === 0 && isProtected(m) && this.opts.oscore!.required !== false) return false;
    return namesTarget(m, this.targetConfig);
  }

  // ------------------------------------------------------------------ step 2 (REQ1, REQ2)

  private admit(req: IncomingRequest, leg: ClientLeg): ResolvedTarget {
    let target: ResolvedTarget | undefined;
    let targetError: unknown;
    try {
      target = resolveTarget(req.message, this.targetConfig);
    } catch (err) {
      targetError = err;
    }
    // The allow-list first, so that a client it does not admit learns nothing about targets (§5.2.1).
    const allowed = target ? isAllowed(this.opts.allow, leg.client, target.text) : isAllowedAnywhere(this.opts.allow, leg.client);
    if (!allowed) throw new NotAllowedError(`client ${leg.client.address}:${leg.client.port} not allowed${target ? ` to ${target.text}` : ''}`);
    if (targetError) throw targetError;
    if (!target) throw new TargetError(CODES.NOT_FOUND, 'no proxy target');
    // An allow-listed client whose address is already verified gets full answers (no 3x limit).
    if (leg.client.kid !== undefined || this.opts.unsafeTrustAddresses || this.echo.check(req.remote, undefined)) leg.identified = true;
    return target;
  }

  /** RFC 9175 §2.4 item 3: an address-identified client answers an Echo before the first fan-out (and again later). */
  private verify(req: IncomingRequest, leg: ClientLeg): void {
    if (leg.identified) return;
    if (this.echo.check(req.remote, getOption(req.message, OPT.ECHO))) {
      leg.identified = true;
      return;
    }
    this.counters.echoChallenges++;
    throw new EchoRequiredError(this.echo.challenge(req.remote));
  }

  private selfText(): string {
    return `${this.self.host.includes(':') ? `[${this.self.host}]` : this.self.host}:${this.self.port}`;
  }

  /** Every refusal: counted, reported, answered with its fixed response (or nothing, see the front's 3x limit). */
  private refuse(err: unknown, req: IncomingRequest, ctx: ResponseContext, client: ProxyClient, leg?: ClientLeg): void {
    // an Echo challenge (RFC 9175 §2.4) is a question, not a refusal: it is counted in echoChallenges only
    if (!(err instanceof EchoRequiredError)) this.counters.rejected++;
    const token = req.message.token.toString('hex');
    if (err instanceof LayerError) {
      // RFC 8613 §8.2 at the failing layer, or the layer limit (OCP-07 §2.1); already protected with the layers
      // removed before it (§2.5).
      this.counters.oscoreFailures++;
      this.emitEvent({ kind: 'reject', client, token, ...(err.responseCode !== undefined ? { code: codeToString(err.responseCode) } : {}), reason: err.message });
      const r = err.response;
      if (r && withinAmplificationLimit(encodedSizeFloor(req.message), encodedSizeBound({ token: req.message.token, options: r.options, payload: r.payload }))) ctx.respond(r, NO_KEEP);
      else ctx.ignore();
      return;
    }
    if (err instanceof LimitError) this.counters.limited++;
    const e = isResponseError(err) ? err : undefined;
    if (!e) this.emit('handler-error', err);
    const res = e ? e.toResponse() : { code: CODES.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY };
    this.emitEvent({ kind: err instanceof EchoRequiredError ? 'challenge' : 'reject', client, token, code: codeToString(res.code), reason: e ? e.message : 'internal error' });
    if (leg) {
      const before = this.front.amplificationDrops;
      leg.answer({ code: res.code, options: res.options ?? [], payload: res.payload ?? EMPTY });
      this.counters.amplificationDrops += this.front.amplificationDrops - before;
      return;
    }
    // Before the front existed (an error while removing layers): the same 3x rule.
    if (withinAmplificationLimit(encodedSizeFloor(req.message), encodedSizeBound({ token: req.message.token, options: res.options, payload: res.payload }))) ctx.respond(res, NO_KEEP);
    else {
      this.counters.amplificationDrops++;
      ctx.ignore();
    }
  }

  // ------------------------------------------------------------------ the same token again

  private sameToken(ex: Exchange, req: IncomingRequest, leg: ClientLeg): void {
    const msg = req.message;
    const mtRaw = getOption(msg, optionNumber('Multicast-Timeout'));
    const obs = getOption(msg, OPT.OBSERVE);
    const obsValue = obs !== undefined && obs.length <= 3 ? decodeUint(obs) : undefined;
    // §5.2.3: the Early Stop Request: GET, same token, Multicast-Timeout 0, no forwarding information.
    if (!namesTarget(msg, this.targetConfig) && msg.code === CODES.GET && mtRaw !== undefined && mtRaw.length <= 4 && decodeUint(mtRaw) === 0) {
      this.counters.earlyStops++;
      this.endExchange(ex, 'early stop request');
      return leg.accept();
    }
    if (obsValue === 1 && ex.life.holdsObservation) {
      // RFC 10020 §3.7: deregistration on the same token, forwarded on the proxy's token; the servers' answers are
      // relayed, with Reply-From, for the deregistration's own T' (or 5 s), then the exchange ends.
      const t = mtRaw === undefined || mtRaw.length > 4 ? 5 : Math.min(decodeUint(mtRaw), this.opts.maxMulticastTimeout);
      this.deregister(ex, t);
      return leg.accept();
    }
    // A shared observation (draft-ietf-core-cacheable-oscore-02 §3.1) is held upstream for every client: a repeated
    // registration changes nothing.
    if (obsValue === 0 && ex.shared && ex.life.holdsObservation) return leg.accept();
    if (obsValue === 0 && ex.life.holdsObservation && ex.upstreamRequest && ex.upstreamDest) {
      // RFC 10020 §3.7: the client repeats its registration on the same token: repeat it upstream on ours.
      this.opts.upstream.sendMessage({ ...ex.upstreamRequest, type: 'NON', messageId: this.opts.upstream.newMessageId(ex.upstreamDest) }, ex.upstreamDest);
      return leg.accept();
    }
    // RFC 10020 §3.5.2: a token still in use: stop forwarding, do not forward the new request, 4.00.
    this.endExchange(ex, 'token reused');
    leg.identified = ex.leg.identified;
    throw new CoapResponseError({ responseCode: CODES.BAD_REQUEST, diagnostic: 'token in use', code: 'ERR_TOKEN_REUSE' });
  }

  // ------------------------------------------------------------------ tickets (MNP-02 §4)

  private ticket(req: IncomingRequest, leg: ClientLeg, target: ResolvedTarget): void {
    this.verify(req, leg);
    this.emitEvent({ kind: 'request', client: leg.client, token: req.message.token.toString('hex'), target: target.text, reason: 'ticket (MNP §4)' });
    this.tickets.handle(req, this.legContext(leg), leg.layers.length ? (p) => leg.protect(p) : undefined);
  }

  /** A ResponseContext over a leg, for the listeners that answer through one (tickets, Observe relay). */
  private legContext(leg: ClientLeg): ResponseContext {
    return {
      respond: (res) => leg.answer({ code: res.code, options: res.options ?? [], payload: res.payload ?? EMPTY }),
      ignore: () => leg.accept(),
    };
  }

  // ------------------------------------------------------------------ fan-out (§5.2.1 steps 5-6, §5.2.3, §5.4)

  private fanOut(req: IncomingRequest, leg: ClientLeg, target: ResolvedTarget, tPrime: number, hopLimit: number): void {
    const msg = req.message;
    const host = hostOf(leg.client);
    // T' = 0 keeps no exchange: it is limited by rate instead of by slots.
    if (tPrime === 0) this.limits.takeTZero(host);
    const mtNum = optionNumber('Multicast-Timeout');

    let upstreamOptions = this.forwardedOptions(msg, target, hopLimit);
    let dest: RemoteAddress;
    let chain: ChainTimers | undefined;
    if (this.opts.chain) {
      // §8.1: a non-last proxy keeps the option and rewrites T' to T''; no T'' fits: 5.05 with its minimum.
      if (tPrime > 0) {
        chain = chainTimers(tPrime, this.opts.chain);
        if (!chain) throw new ChainTimeoutError(minimumAcceptable(this.opts.chain));
      }
      upstreamOptions = upstreamOptions.filter((o) => o.number !== mtNum && ![OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, OPT.PROXY_SCHEME, OPT.PROXY_URI].includes(o.number as never));
      upstreamOptions.push({ number: mtNum, value: encodeUint(chain?.tNext ?? 0) });
      // The next proxy still needs the group as the target.
      upstreamOptions.push({ number: OPT.PROXY_URI, value: Buffer.from(target.text, 'utf8') });
      dest = this.opts.chain.nextHop;
    } else dest = { address: socketAddress(target.uri), port: target.uri.port };

    // Every upstream token is retired for MIN_TOKEN_REUSE_TIME: at the message layer's cap, 5.03 before any state.
    if (!this.opts.upstream.canRetireToken()) {
      this.limits.refused.global++;
      throw new LimitError('retired tokens', 60, true);
    }
    if (tPrime > 0) this.limits.take(host, 'pending', tPrime);
    // RFC 10021 §7.5: as external signature checker, drop a forged group-mode request before it reaches the group
    // (after the limits, so a flood costs no signature verifications beyond its slots).
    const verdict: RequestVerdict = this.opts.signatureCheckers?.length ? checkGroupRequest(this.opts.signatureCheckers, msg) : { kind: 'unchecked' };
    if (verdict.kind === 'failed') {
      if (tPrime > 0) this.limits.give(host, 'pending');
      this.counters.signatureRejected++;
      throw new SignatureCheckError(verdict.reason);
    }
    const obs = getOption(msg, OPT.OBSERVE);
    // The fields every exchange sets are named here, so that V8 keeps them inside the object; the ones only some
    // exchanges need (Observe, chains, the cache, the signature check) are added by those.
    const ex: Exchange = {
      key: flat(keyOf(leg.client, msg.token)), leg, host, gone: undefined, target: this.targetText(target.text), life: new ExchangeLife(obs !== undefined && obs.length <= 3 && decodeUint(obs) === 0), reverse: target.reverse,
      groupPort: target.uri.port, relayCount: 0, tPrime, chain, holdsSlot: tPrime > 0, stopUpstream: undefined, tPrimeDue: undefined,
    };
    if (verdict.kind === 'ok') ex.signature = verdict;
    this.counters.groupRequests++;

    // draft-ietf-core-cacheable-oscore-02 §3.1: clients observing one Deterministic Request share one observation.
    if (ex.life.wantsObserve && !this.opts.chain && tPrime > 0 && isDeterministicRequest(msg)) return this.observeShared(ex, msg, target, upstreamOptions, dest);

    // GCP-07 §7: a cacheable group request may be served, in part or entirely, from the cache.
    let cached: CachedResponse[] = [];
    // §7.4: a request protected end to end is cacheable only as a Deterministic Request (draft-ietf-core-cacheable-
    // oscore-02 §3.3: its Request-Hash is part of the Cache-Key); the proxy keys on the ciphertext, never the plaintext.
    if (this.cache && !this.opts.chain && !ex.life.wantsObserve && tPrime > 0 && isCacheableRequest(msg.code) && (getOption(msg, OPT.OSCORE) === undefined || isDeterministicRequest(msg))) {
      ex.cacheKey = `${target.uri.host}|${target.uri.port}|${requestKey(msg.code, upstreamOptions, msg.payload)}`;
      const tag = this.cache.groupEtag(ex.cacheKey, this.membersOf(target.uri));
      cached = this.cache.fresh(ex.cacheKey);
      if (tag) return this.answerFromCache(ex, msg, cached, tag);
    }

    // Step 5: forward with the proxy's own token and Message ID (never the client's).
    const upstream = this.opts.upstream;
    // T' = 0: nobody waits for the responses, so the token is retired before it is sent (RFC 10020 §3.1.5).
    const upToken = tPrime === 0 ? upstream.newOneShotToken() : upstream.newToken();
    const request = createMessage({ type: this.opts.chain ? 'CON' : 'NON', code: msg.code, token: upToken, messageId: upstream.newMessageId(dest), options: sortOptions(upstreamOptions), payload: msg.payload });
    if (ex.life.wantsObserve || this.opts.chain) {
      ex.upstreamRequest = request;
      ex.upstreamDest = dest;
    }
    this.exchanges.set(ex.key, ex);
    if (this.listenerCount('event')) this.emitEvent({ kind: 'request', client: leg.client, token: msg.token.toString('hex'), target: target.text, multicastTimeout: tPrime });

    if (tPrime === 0) {
      // Step 6 with T' = 0: forward, relay nothing.
      upstream.sendMessage(request, dest);
      leg.accept();
      this.endExchange(ex, "T' = 0");
      return;
    }
    ex.stopUpstream = upstream.listen(upToken, (res) => this.relay(ex, res));
    try {
      upstream.sendMessage(request, dest, { onFail: (err) => this.endExchange(ex, `next hop: ${err.message}`) });
    } catch (err) {
      leg.accept();
      this.endExchange(ex, `cannot send to the group: ${(err as Error).message}`);
      return;
    }
    // The empty ACK if the client used CON (the responses follow as separate messages), after the request is on its
    // way to the group: the servers' time to answer starts one datagram earlier.
    leg.accept();
    // Step 6: the timer T' (§8.1: a non-last proxy too collects until T', and keeps its token until its own T).
    ex.tPrimeDue = this.tPrimeDeadlines.add(ex, tPrime * 1000);
    if (cached.length) this.serveCachedAlongside(ex, cached, tPrime);
  }

  /**
   * The exchange observes through the shared upstream observation of its Deterministic Request, keyed like the
   * cache (the ciphertext and Request-Hash; the proxy never sees the plaintext). The first client's registration
   * goes upstream; a later one's goes nowhere and gets the latest notifications at once.
   */
  private observeShared(ex: Exchange, msg: CoapMessage, target: ResolvedTarget, upstreamOptions: CoapOption[], dest: RemoteAddress): void {
    const key = `${target.uri.host}|${target.uri.port}|${requestKey(msg.code, upstreamOptions, msg.payload)}`;
    ex.shared = true;
    this.exchanges.set(ex.key, ex);
    this.emitEvent({ kind: 'request', client: ex.leg.client, token: msg.token.toString('hex'), target: ex.target, multicastTimeout: ex.tPrime, ...(this.sharedObservations.memberCount(key) ? { reason: 'joins a shared observation' } : {}) });
    ex.leg.accept();
    ex.tPrimeDue = this.tPrimeDeadlines.add(ex, ex.tPrime * 1000);
    this.sharedObservations.join(key, ex, { code: msg.code, options: sortOptions(upstreamOptions), payload: msg.payload }, dest);
  }

  /** Options for the request towards the group or server. */
  private forwardedOptions(msg: CoapMessage, target: { uri: CoapUri }, hopLimit: number): CoapOption[] {
    const mtNum = optionNumber('Multicast-Timeout');
    const drop = notForwarded(mtNum, optionNumber('Group-ETag'));
    const kept = msg.options.filter((o) => !drop.has(o.number));
    if (this.opts.chain) {
      const mt = getOption(msg, mtNum);
      if (mt) kept.push({ number: mtNum, value: mt });
    }
    kept.push({ number: OPT.HOP_LIMIT, value: encodeUint(hopLimit) });
    return [...kept, ...uriToOptions(target.uri)];
  }

  private tPrimePassed(ex: Exchange): void {
    ex.tPrimeDue = undefined;
    // §5.4.2: keep relaying the notifications of active observations; else the exchange ends.
    if (ex.life.tPrimePassed() === 'observing') return;
    if (ex.chain && ex.chain.tOwn > ex.tPrime) {
      // §8.1: the token stays ours until T; late responses are recognized (no RST) and dropped.
      ex.ownTimer = this.clock.setTimeout(() => this.endExchange(ex, 'Multicast-Timeout expired'), (ex.chain.tOwn - ex.tPrime) * 1000);
      this.releaseClientSide(ex);
      return;
    }
    this.endExchange(ex, 'Multicast-Timeout expired');
  }

  /** Forward a deregistration upstream on the exchange's token and relay the answers until `tPrime` expires. */
  private deregister(ex: Exchange, tPrime: number): void {
    ex.life.deregister();
    if (ex.shared) this.sharedHub?.leave(ex);
    if (ex.tPrimeDue) this.tPrimeDeadlines.cancel(ex.tPrimeDue);
    ex.tPrimeDue = undefined;
    if (ex.timer !== undefined) this.clock.clearTimeout(ex.timer);
    ex.timer = undefined;
    this.cancelUpstreamObservation(ex);
    if (tPrime === 0) return this.endExchange(ex, 'observe deregistration');
    ex.timer = this.clock.setTimeout(() => this.endExchange(ex, 'observe deregistration'), tPrime * 1000);
  }

  /** RFC 10020 §3.7: the same token with Observe = 1. */
  private cancelUpstreamObservation(ex: Exchange): void {
    if (!ex.upstreamRequest || !ex.upstreamDest || this.closed) return;
    const dereg = createMessage({ ...ex.upstreamRequest, type: 'NON', messageId: this.opts.upstream.newMessageId(ex.upstreamDest), options: [...ex.upstreamRequest.options.filter((o) => o.number !== OPT.OBSERVE), { number: OPT.OBSERVE, value: encodeUint(1) }] });
    this.opts.upstream.sendMessage(dereg, ex.upstreamDest);
  }

  // ------------------------------------------------------------------ response processing (GCP-07 §5.4)

  private relay(ex: Exchange, res: IncomingResponse): void {
    if (this.closed) return;
    const m = res.message;
    if (this.opts.chain && this.fromNextHopItself(res)) {
      if (m.code === CODES.PROXYING_NOT_SUPPORTED && ex.life.state === 'collecting') return this.nextHop505(ex, res);
      const echo = getOption(m, OPT.ECHO);
      if (m.code === CODES.UNAUTHORIZED && echo !== undefined && !ex.echoed && ex.upstreamRequest && ex.upstreamDest) {
        // RFC 9175 §2.4: the next hop verifies this proxy's address; repeat the request with its Echo, once.
        ex.echoed = true;
        ex.upstreamRequest = createMessage({ ...ex.upstreamRequest, messageId: this.opts.upstream.newMessageId(ex.upstreamDest), options: sortOptions([...ex.upstreamRequest.options, { number: OPT.ECHO, value: echo }]) });
        this.opts.upstream.sendMessage(ex.upstreamRequest, ex.upstreamDest, { onFail: (err) => this.endExchange(ex, `next hop: ${err.message}`) });
        return;
      }
    }
    if (ex.relayCount >= this.opts.maxResponsesPerExchange && ex.life.state === 'collecting') {
      // Bounded like the group client's exchange (ResponseLimits.maxResponses): over the cap, counted and dropped
      // before the signature check, with one 'drop' event per exchange. After T' only observed servers are admitted.
      this.counters.capDropped++;
      if (!ex.capped) {
        ex.capped = true;
        this.emitEvent({ kind: 'drop', client: ex.leg.client, token: ex.leg.token.toString('hex'), reason: `more than ${this.opts.maxResponsesPerExchange} responses in one exchange (the rest dropped)` });
      }
      return;
    }
    if (ex.signature && ex.life.state !== 'ended' && typeof checkGroupResponse(ex.signature.checker, ex.signature.request, m) === 'object') {
      // RFC 10021 §7.5: a group-mode response whose countersignature does not verify is not relayed; checked before
      // the exchange's state and the host's rate see it, so a forged response changes neither.
      this.counters.signatureRejected++;
      this.emitEvent({ kind: 'drop', client: ex.leg.client, token: ex.leg.token.toString('hex'), reason: `signature check failed (response from ${res.remote.address}:${res.remote.port})` });
      return;
    }
    // "addr|port": only an observing exchange (its observed servers) and the cache need it
    const server = ex.life.wantsObserve || ex.cacheKey ? peerKey(res.remote.address, res.remote.port) : '';
    const observe = getOption(m, OPT.OBSERVE);
    if (!ex.life.admit(server, m.code, observe !== undefined)) {
      this.counters.lateDropped++;
      return;
    }
    const host = ex.host;
    const now = this.clock.now();
    let r = this.rate.get(host);
    if (!r) {
      r = { windowStart: now, count: 0 };
      this.rate.set(host, r);
      if (this.rate.size > 10_000) this.rate.delete(this.rate.keys().next().value!);
    }
    if (now - r.windowStart >= 1000) {
      r.windowStart = now;
      r.count = 0;
    }
    if (++r.count > this.opts.maxResponsesPerSecond) {
      this.counters.rateDropped++;
      this.emitEvent({ kind: 'drop', client: ex.leg.client, token: ex.leg.token.toString('hex'), reason: `more than ${this.opts.maxResponsesPerSecond} responses/s to this host` });
      return;
    }
    // §5.4 for the common case: the server's datagram patched (relay-datagram.ts), byte for byte what the full path
    // below builds; anything unusual (a chain, the cache, OSCORE towards the client, Observe, Block2, an error,
    // origin options of the server's own, a CON) takes the full path.
    if (res.data !== undefined && !this.opts.chain && !ex.cacheKey && this.opts.relayType === 'NON' && !ex.life.wantsObserve && ex.leg.relayDatagram && relaysAsItCame(m)) {
      const added = this.replyFromOptions(ex, res.remote);
      if (ex.leg.relayDatagram(res.data, m, added, (ex.gone ??= endByKey(this.exchanges, ex.key, this.endFn)))) {
        ex.relayCount++;
        this.counters.relayed++;
        if (this.listenerCount('event')) this.emitEvent({ kind: 'response', client: ex.leg.client, token: ex.leg.token.toString('hex'), target: ex.target, code: codeToString(m.code), origin: res.remote });
        return;
      }
    }

    const rfNum = optionDef('Reply-From')?.number;
    const rfwNum = optionDef('Response-Forwarding')?.number;
    // one copy of the options, without the origin options when this proxy adds its own
    let options = this.opts.chain ? m.options.slice() : m.options.filter((o) => o.number !== rfNum && o.number !== rfwNum);
    let added: CoapOption[] = [];
    if (!this.opts.chain) {
      // Step 1: Reply-From with the server's CRI (forward / case 2), or the proxy's own + a reference (case 1).
      added = this.replyFromOptions(ex, res.remote);
      options.push(...added);
    } else if (ex.reverse?.standIn === 'servers') {
      // §8: in a reverse chain that stands in for servers, each proxy replaces Reply-From with its own address
      // (TARGET_OLD -> TARGET_NEW), keeping the server as the reference, so the client sees the first proxy.
      const rfNum = optionNumber('Reply-From');
      const rf = getOption(m, rfNum);
      if (rf) {
        let origin: RemoteAddress | undefined;
        try {
          const d = decodeReplyFrom(rf);
          const s = d.reference ?? d.target;
          if (s.host) origin = { address: s.zone ? `${s.host}%${s.zone}` : s.host, port: s.port ?? 5683 };
        } catch {
          origin = undefined; // a malformed Reply-From from the next hop is relayed as it came
        }
        if (origin) {
          options = options.filter((o) => o.number !== rfNum);
          added = this.replyFromOptions(ex, origin);
          options.push(...added);
        }
      }
    }
    if (ex.cacheKey) (ex.answered ??= new Set()).add(server);
    const parts: MessageParts = { code: m.code, options: sortOptions(options), payload: m.payload };
    // GCP-07 §5.4.1: Reply-From is added before the response is stored, so cache hits carry the origin too.
    if (ex.cacheKey && this.cache) this.cache.store(ex.cacheKey, server, { ...m, options: parts.options ?? [] });
    this.sendToClient(ex, parts, added, res.remote);
  }

  /** An answer of the next hop itself (no Reply-From: not a server's answer relayed by it). */
  private fromNextHopItself(res: IncomingResponse): boolean {
    const hop = this.opts.chain!.nextHop;
    return res.remote.port === hop.port && res.remote.address === hop.address && getOption(res.message, optionNumber('Reply-From')) === undefined;
  }

  /** §8.1: retry towards the next hop with a larger T'', or answer this proxy's own 5.05 (never the next hop's). */
  private nextHop505(ex: Exchange, res: IncomingResponse): void {
    const c = this.opts.chain!;
    const mt = getOption(res.message, optionNumber('Multicast-Timeout'));
    const wanted = mt !== undefined && mt.length <= 4 ? decodeUint(mt) : (ex.chain?.tNext ?? 0) + 1;
    const next = ex.chain ? retryAfter505(ex.tPrime, ex.chain.tNext, wanted, c) : undefined;
    if (next === undefined || !ex.upstreamRequest || !ex.upstreamDest) {
      const own = new ChainTimeoutError(ownMinimumAfter505(wanted, c)).toResponse();
      this.sendToClient(ex, { code: own.code, options: own.options ?? [], payload: own.payload ?? EMPTY }, [], res.remote);
      return this.endExchange(ex, 'next hop answered 5.05');
    }
    this.counters.chainRetries++;
    ex.chain = { ...ex.chain!, tNext: next, tOwn: Math.max(ex.chain!.tOwn, next + Math.ceil(c.rttNext)) };
    const mtNum = optionNumber('Multicast-Timeout');
    const upstream = this.opts.upstream;
    // The retry is a new request: a new token (the old one is retired by the endpoint when we stop listening).
    ex.stopUpstream?.();
    const token = upstream.newToken();
    ex.upstreamRequest = createMessage({ ...ex.upstreamRequest, token, messageId: upstream.newMessageId(ex.upstreamDest), options: sortOptions([...ex.upstreamRequest.options.filter((o) => o.number !== mtNum), { number: mtNum, value: encodeUint(next) }]) });
    ex.stopUpstream = upstream.listen(token, (r) => this.relay(ex, r));
    upstream.sendMessage(ex.upstreamRequest, ex.upstreamDest, { onFail: (err) => this.endExchange(ex, `next hop: ${err.message}`) });
  }

  /** Step 2: relay to the client as a separate response on the client's token (protected if it used OSCORE). */
  private sendToClient(ex: Exchange, parts: MessageParts, added: CoapOption[], origin: RemoteAddress | 'cache'): void {
    ex.relayCount++;
    // RFC 7641 §4.5: now and then a CON notification checks that the client is still there.
    const confirmable = this.opts.relayType === 'CON' || (ex.life.wantsObserve && ex.relayCount % 10 === 0);
    if (!ex.leg.relay(parts, added, confirmable, (ex.gone ??= endByKey(this.exchanges, ex.key, this.endFn)))) return;
    this.counters.relayed++;
    if (this.listenerCount('event')) this.emitEvent({ kind: 'response', client: ex.leg.client, token: ex.leg.token.toString('hex'), target: ex.target, code: codeToString(parts.code), ...(origin === 'cache' ? { reason: 'from cache' } : { origin }) });
  }

  /** A server this proxy relayed for ("addr|port"): reverse case 1 follow-ups may name it in Uri-Host / Uri-Port. */
  private rememberServer(known: string): void {
    if (this.knownServers.has(known)) return;
    this.knownServers.set(known, this.clock.now());
    if (this.knownServers.size > 10000) this.knownServers.delete(this.knownServers.keys().next().value!);
  }

  /**
   * The origin options for a response of `server` (Reply-From, and / or the legacy Response-Forwarding), and the
   * server remembered as one this proxy relayed for. The array may be shared between responses: read it, never
   * change it.
   */
  private replyFromOptions(ex: Exchange, server: RemoteAddress): CoapOption[] {
    const fmt = this.opts.replyFrom;
    const e = this.originEntry(ex.reverse?.standIn === 'servers', server);
    this.rememberServer(e.known);
    if (fmt === 'reply-from') {
      const n = optionNumber('Reply-From');
      if (e.number !== n || !e.options) {
        e.number = n;
        e.options = [{ number: n, value: e.value }];
      }
      return e.options;
    }
    const out: CoapOption[] = [];
    if (fmt === 'both') out.push({ number: optionNumber('Reply-From'), value: e.value });
    const host = server.address.split('%')[0];
    const num = optionDef('Response-Forwarding')?.number;
    if (num === undefined) throw new Error('Response-Forwarding has no option number: configure one first');
    out.push({ number: num, value: encodeResponseForwarding(host, server.port, ex.groupPort) });
    return out;
  }

  /**
   * The Reply-From CRI depends only on the server (and on whether this proxy stands in for servers): encoded once
   * per server, not per response, and found by address and port without building a key string (bounded: the maps
   * start over at 4,096 servers).
   */
  private originEntry(standIn: boolean, server: RemoteAddress): OriginEntry {
    const byAddress = this.originEntries[standIn ? 1 : 0];
    let byPort = byAddress.get(server.address);
    let e = byPort?.get(server.port);
    if (e) return e;
    const [host, zone] = server.address.split('%');
    const value = standIn
      ? encodeReplyFrom({ scheme: this.self.scheme, host: this.self.host, port: this.self.port }, { scheme: null, host, zone, port: server.port })
      : encodeReplyFrom({ scheme: 'coap', host, zone, port: server.port });
    if (this.originEntryCount >= 4096) {
      for (const m of this.originEntries) m.clear();
      this.originEntryCount = 0;
      byPort = undefined;
    }
    if (!byPort) byAddress.set(server.address, (byPort = new Map()));
    e = { value, known: peerKey(server.address, server.port), number: undefined, options: undefined };
    byPort.set(server.port, e);
    this.originEntryCount++;
    return e;
  }

  // ------------------------------------------------------------------ cache (GCP-07 §7)

  /**
   * GCP-07 §7.1: with T' > 0, a fresh cached response X with residual lifetime L < T' goes to the client at once;
   * the others wait, and shortly before T' runs out those whose server has not answered are sent.
   */
  private serveCachedAlongside(ex: Exchange, cached: CachedResponse[], tPrime: number): void {
    const later: CachedResponse[] = [];
    for (const e of cached) {
      if (this.cache!.residual(e) < tPrime) this.sendCached(ex, e);
      else later.push(e);
    }
    if (!later.length) return;
    ex.cacheTimer = this.clock.setTimeout(() => {
      ex.cacheTimer = undefined;
      for (const e of later) if (!ex.answered?.has(e.server) && !ex.life.ended) this.sendCached(ex, e);
    }, Math.max(0, tPrime * 1000 - 300));
  }

  /** GCP-07 §7.1 / §7.3: every member has a fresh cached response: answer without forwarding. */
  private answerFromCache(ex: Exchange, msg: CoapMessage, cached: CachedResponse[], tag: Buffer): void {
    const getNum = optionNumber('Group-ETag');
    this.exchanges.set(ex.key, ex);
    this.emitEvent({ kind: 'request', client: ex.leg.client, token: msg.token.toString('hex'), target: ex.target, multicastTimeout: ex.tPrime, reason: 'served from cache' });
    ex.leg.accept();
    const tagOption = { number: getNum, value: tag };
    if (getOptions(msg, getNum).some((t) => t.equals(tag))) {
      // §7.3: the client's set is current: one 2.03 (Valid) with exactly one Group-ETag and no payload. The client
      // refreshes every stored response with its Max-Age (RFC 7252 §5.9.1.3): the least residual lifetime in J
      // (RFC 7252 §5.6.1), not the default 60 s a 2.03 without Max-Age would mean.
      const left = Math.max(0, Math.floor(Math.min(...cached.map((e) => this.cache!.residual(e)))));
      this.sendToClient(ex, { code: CODES.VALID, options: [{ number: OPT.MAX_AGE, value: encodeUint(left) }, tagOption], payload: EMPTY }, [], 'cache');
    } else {
      for (const e of cached) this.sendCached(ex, e, tagOption);
    }
    this.endExchange(ex, 'served from cache');
  }

  private sendCached(ex: Exchange, e: CachedResponse, extra?: CoapOption): void {
    (ex.answered ??= new Set()).add(e.server);
    const m = this.cache!.served(e);
    const rf = new Set([optionDef('Reply-From')?.number, optionDef('Response-Forwarding')?.number]);
    const added = m.options.filter((o) => rf.has(o.number));
    const options = extra ? sortOptions([...m.options, extra]) : m.options;
    this.sendToClient(ex, { code: m.code, options, payload: m.payload }, extra ? [...added, extra] : added, 'cache');
  }

  // ------------------------------------------------------------------ unicast forward proxying (RFC 7252 §5.7)

  private forwardUnicast(req: IncomingRequest, leg: ClientLeg, target: ResolvedTarget, hopLimit: number): void {
    const msg = req.message;
    const host = hostOf(leg.client);
    // REQ2 for an address, as for a fan-out: reachability proved with Echo (RFC 9175 §2.4) before anything is sent
    // to a third host for it (a request, an Observe relay, a deregistration), so a spoofed source makes the proxy
    // send nothing but the challenge. Checked before the limits, so a spoofer holds no slot of the host it names.
    this.verify(req, leg);
    this.counters.unicastRequests++;
    let options = this.forwardedOptions(msg, target, hopLimit).filter((o) => o.number !== optionNumber('Multicast-Timeout'));
    const obs = getOption(msg, OPT.OBSERVE);
    const plain = leg.layers.length === 0 && getOption(msg, OPT.OSCORE) === undefined;
    if (obs !== undefined && plain && this.opts.observeRelay !== false && (msg.code === CODES.GET || msg.code === CODES.FETCH)) {
      if (obs.length <= 3 && decodeUint(obs) === 0) return this.relayObservation(req, leg, target, options);
      // Deregistration: the client leaves the relay; the request goes on as a plain GET for the current state.
      this.notificationRelay.deregister(target.text, { remote: req.remote, token: msg.token });
      options = options.filter((o) => o.number !== OPT.OBSERVE);
    } else if (obs !== undefined && isDeterministicRequest(msg)) {
      // A Deterministic Request to one server is forwarded per client and answered once (draft-ietf-core-cacheable-
      // oscore-02 §3.1 shares observations for group targets only): without its Outer Observe, so that the server
      // registers no observer for the proxy (and asks no Echo of it, RFC 9175 §2.4, that nobody would answer).
      options = options.filter((o) => o.number !== OPT.OBSERVE);
    }
    const release = this.limits.acquire(host, 'unicast');
    let dest: RemoteAddress = { address: socketAddress(target.uri), port: target.uri.port };
    if (this.opts.chain) {
      // A non-last proxy sends unicast targets on through the next hop too (e.g. a follow-up to one server that
      // the chain stands in for), as a forward-proxy request.
      options = options.filter((o) => ![OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY].includes(o.number as never));
      options.push({ number: OPT.PROXY_URI, value: Buffer.from(target.text, 'utf8') });
      dest = this.opts.chain.nextHop;
    }
    const token = msg.token.toString('hex');
    this.emitEvent({ kind: 'request', client: leg.client, token, target: target.text });
    this.opts.upstream.request({ code: msg.code, options, payload: msg.payload }, dest, { confirmable: true, timeout: this.opts.unicastTimeout }).then(
      (res) => {
        release();
        let payload = res.message.payload;
        if (res.message.code === CODES.HOP_LIMIT_REACHED) payload = this.appendSelf(payload);
        this.emitEvent({ kind: 'response', client: leg.client, token, target: target.text, code: codeToString(res.message.code), origin: res.remote });
        leg.answer({ code: res.message.code, options: res.message.options.slice(), payload });
      },
      (err: Error & { responseCode?: number }) => {
        release();
        const code = err.responseCode ?? CODES.BAD_GATEWAY;
        this.emitEvent({ kind: 'reject', client: leg.client, token, target: target.text, code: codeToString(code), reason: err.message });
        leg.answer({ code, options: [], payload: EMPTY });
      },
    );
  }

  /** RFC 8768 §3: a 5.08 on its way back names every proxy it passed, this one appended. */
  private appendSelf(payload: Buffer): Buffer {
    const me = Buffer.from(this.selfText(), 'utf8');
    const out = payload.length ? Buffer.concat([payload, Buffer.from(' '), me]) : me;
    return out.length <= 512 ? out : payload;
  }

  /** MNP-02 §3: one upstream observation per target, each client answered with the latest notification. */
  private relayObservation(req: IncomingRequest, leg: ClientLeg, target: ResolvedTarget, options: CoapOption[]): void {
    const relay = this.notificationRelay;
    const client = { remote: req.remote, token: req.message.token };
    const known = relay.has(target.text, client);
    if (!known && relay.targetCount >= (this.opts.maxRelayTargets ?? 256) && relay.clientCount(target.text) === 0) {
      this.limits.refused.global++;
      throw new LimitError('relay targets', 60, true);
    }
    const release = known ? () => undefined : this.limits.acquire(hostOf(leg.client), 'observeRelays', 60);
    this.emitEvent({ kind: 'request', client: leg.client, token: req.message.token.toString('hex'), target: target.text, reason: 'observe (relayed)' });
    relay.register(target.text, { ...client, onRemoved: release }, options.filter((o) => o.number !== OPT.URI_PATH && o.number !== OPT.URI_QUERY && o.number !== OPT.OBSERVE && o.number !== OPT.HOP_LIMIT)).then(
      (first) => (first ? leg.answer({ code: first.code, options: first.options ?? [], payload: first.payload ?? EMPTY }) : leg.accept()),
      () => leg.answer({ code: CODES.BAD_GATEWAY, options: [], payload: EMPTY }),
    );
  }

  // ------------------------------------------------------------------ the end of an exchange

  /** The client-side slot goes back once the client can get nothing more (after T' for a chain's own T). */
  private releaseClientSide(ex: Exchange): void {
    if (!ex.holdsSlot) return;
    ex.holdsSlot = false;
    this.limits.give(ex.host, 'pending');
  }

  private endExchange(ex: Exchange, reason: string): void {
    const heldObservation = ex.life.holdsObservation;
    if (!ex.life.end()) return;
    if (ex.tPrimeDue) this.tPrimeDeadlines.cancel(ex.tPrimeDue);
    for (const t of [ex.timer, ex.ownTimer, ex.cacheTimer]) if (t !== undefined) this.clock.clearTimeout(t);
    ex.tPrimeDue = ex.timer = ex.ownTimer = ex.cacheTimer = undefined;
    if (ex.shared) this.sharedHub?.leave(ex);
    if (heldObservation) this.cancelUpstreamObservation(ex);
    ex.stopUpstream?.();
    this.exchanges.delete(ex.key);
    ex.leg.close();
    this.releaseClientSide(ex);
    this.emitEvent({ kind: 'end', client: ex.leg.client, token: ex.leg.token.toString('hex'), target: ex.target, reason });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const ex of [...this.exchanges.values()]) this.endExchange(ex, 'proxy closed');
    this.closed = true;
    this.tPrimeDeadlines.close();
    this.relayHub?.close();
    this.ticketHub?.close();
    this.front.close();
    this.opts.listen.setRequestHandler(undefined);
  }
}

export * from './errors';

let dropSet: { mt: number; getag: number; set: Set<number> } | undefined;
/**
 * The options of a client's request that are not forwarded: the target (it becomes Uri-* for the group), Hop-Limit
 * (replaced), Multicast-Timeout (for this proxy), Group-ETag (for the proxy, GCP-07 §7.3) and Echo (for this hop,
 * RFC 9175 §2.2.1). One Set, made again only if the draft options' numbers were configured anew.
 */
function notForwarded(mtNum: number, getagNum: number): Set<number> {
  if (dropSet?.mt !== mtNum || dropSet.getag !== getagNum) {
    dropSet = { mt: mtNum, getag: getagNum, set: new Set<number>([OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, OPT.HOP_LIMIT, OPT.ECHO, mtNum, getagNum]) };
  }
  return dropSet.set;
}

/**
 * May the relay patch this response's datagram (relay-datagram.ts)? A 2.xx without Observe (notifications have
 * their own rules, §5.4.2), Block2, or a Reply-From / Response-Forwarding of its own (which the proxy drops, §5.4
 * step 1); everything else is built in full.
 */
function relaysAsItCame(m: CoapMessage): boolean {
  if (codeClass(m.code) !== 2) return false;
  const rf = optionDef('Reply-From')?.number;
  const rfw = optionDef('Response-Forwarding')?.number;
  for (const o of m.options) {
    const n = o.number;
    if (n === OPT.OBSERVE || n === OPT.BLOCK2 || n === rf || n === rfw) return false;
  }
  return true;
}

/** Ends the exchange under `key` if it is still there: a callback that keeps no ended exchange alive. */
function endByKey(exchanges: Map<string, Exchange>, key: string, end: (ex: Exchange, reason: string) => void): (reason: string) => void {
  return (reason) => {
    const ex = exchanges.get(key);
    if (ex) end(ex, reason);
  };
}
