// Forward and reverse proxy to CoAP groups: groupcomm-proxy-07 §5.2 (request processing, in the draft's order),
// §5.4 (relaying each response with Reply-From), §5.2.3 (early stop), §6 (reverse proxies, case 1 and case 2),
// §8 (chains: T'', 5.05, Reply-From left alone); RFC 10020 §3.5 (5.01 when group proxying is off, 4.00 on token
// reuse); RFC 8768 (Hop-Limit); RFC 7252 §5.7 (forward proxying of unicast requests, 5.02 on unknown unsafe
// options). Not an amplifier: per-client limits on pending exchanges and on relayed responses per second.
// As an OSCORE endpoint (oscore-capable-proxies-07 §2.4-§2.5): removes the layer a client applied for it, identifies
// the client by that context (groupcomm-proxy-07 §5.2.1 steps 1-2, REQ2) and protects every response it sends back.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { decodeReplyFrom, encodeReplyFrom, encodeResponseForwarding } from '../cbor/cri';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, getOptions, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, isUnsafe, optionDef, optionNumber } from '../coap/options';
import { CoapUri, UriError, formatUri, isGroupUri, isMulticastAddress, parseUri, socketAddress, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingRequest, IncomingResponse, ResponseContext } from '../messaging/endpoint';
import {
  ContextLookup,
  DEFAULT_MAX_LAYERS,
  LayerError,
  PROXY_TO_CLIENT_VIEW,
  RemovedLayer,
  RequestLayersResult,
  escalatedOptions,
  firstUnrecognizedOption,
  oscoreClientId,
  protectResponseLayers,
  proxyInboundClassE,
  proxyRelatedKind,
  removeRequestLayers,
} from '../oscore/nested';
import { MessageParts, isProtected } from '../oscore/protect';
import { RemoteAddress } from '../transport/udp-transport';
import { NotificationRelay } from '../observe/notification-relay';
import { TicketListener } from '../observe/ticket-request';
import { CachedResponse, ProxyCache, isCacheableRequest, requestKey } from './cache';
import { chainTimers, minimumAcceptable } from './multicast-timeout';

export interface ProxyClient {
  address: string;
  port: number;
  /** OSCORE identity: oscoreClientId() of the context that removed the client's layer (hex Recipient ID[@hex ID Context]) */
  kid?: string;
}

export interface AllowRule {
  /** client address; "*" for any */
  address: string;
  port?: number;
  /** OSCORE identity the client must have (ProxyClient.kid); a client without OSCORE layer never matches */
  kid?: string;
  /** group URIs (or URI prefixes) this client may reach; empty = all */
  targets?: string[];
}

export interface ReverseMapping {
  /** Uri-Host the client uses for the group (e.g. "group1.com") */
  host?: string;
  /** leading Uri-Path segments that name the group (e.g. ["proxy", "lights"]); removed before forwarding */
  pathPrefix?: string[];
  /** the group URI to reach, e.g. coap://224.0.1.187:5683 (its path is prepended to the remaining path) */
  group: string;
  /** case 1: stand in for the group and for each server; case 2: for the group only */
  standIn: 'servers' | 'group';
}

export interface ChainConfig {
  /** the next proxy towards the group */
  nextHop: RemoteAddress;
  /** worst-case round trips in seconds to the previous hop and to the next hop */
  rttPrevious: number;
  rttNext: number;
}

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
  allow?: AllowRule[] | ((client: ProxyClient, target: string) => boolean);
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
  maxPendingPerClient?: number;
  maxResponsesPerSecond?: number;
  /** global cap on exchanges (default 20000) */
  maxExchanges?: number;
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
}

export interface ProxyEvent {
  kind: 'request' | 'response' | 'reject' | 'end' | 'drop';
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
}

/** Errors that become a response to the client. */
export class ProxyError extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
    readonly options: CoapOption[] = [],
    readonly code = 'ERR_PROXY',
  ) {
    super(message);
  }
}

interface Exchange {
  key: string;
  client: ProxyClient;
  clientToken: Buffer;
  target: string;
  upstreamToken?: Buffer;
  stopUpstream?: () => void;
  timer?: NodeJS.Timeout;
  observing: boolean;
  gotObserve2xx: boolean;
  reverse?: ReverseMapping;
  groupPort: number;
  relayedMids: Set<number>;
  relayCount: number;
  ended: boolean;
  /** request as forwarded upstream (for observe deregistration) */
  upstreamRequest?: CoapMessage;
  upstreamDest?: RemoteAddress;
  /** OSCORE layers removed from the client's request, outermost first: every relayed response gets them back */
  layers: RemovedLayer[];
  /** cache key of the request, when the proxy caches its responses */
  cacheKey?: string;
  /** servers ("addr|port") that answered or were served from the cache in this exchange */
  answered: Set<string>;
  cacheTimer?: NodeJS.Timeout;
}

const EMPTY = Buffer.alloc(0);
const keyOf = (c: ProxyClient, token: Buffer) => `${clientKey(c)}|${token.toString('hex')}`;

export class GroupProxy extends EventEmitter {
  readonly counters: ProxyCounters = { requests: 0, groupRequests: 0, unicastRequests: 0, relayed: 0, rejected: 0, lateDropped: 0, rateDropped: 0, earlyStops: 0, oscoreFailures: 0 };
  private readonly exchanges = new Map<string, Exchange>();
  private readonly perClient = new Map<string, number>();
  private readonly rate = new Map<string, { windowStart: number; count: number }>();
  /** servers that answered through us, for reverse case 1 follow-ups: "addr|port" */
  private readonly knownServers = new Map<string, number>();
  private readonly midToExchange = new Map<number, string>();
  private readonly opts: Required<Omit<GroupProxyOptions, 'chain' | 'selfAuthority' | 'allow' | 'reverse' | 'unicastTimeout' | 'oscore' | 'cache' | 'members' | 'observeRelay'>> & GroupProxyOptions;
  private closed = false;
  private readonly onReset = (remote: RemoteAddress, mid: number) => this.clientReset(remote, mid);
  /** GCP-07 §7 response cache, when enabled */
  readonly cache?: ProxyCache;
  private relayHub?: NotificationRelay;

  constructor(opts: GroupProxyOptions) {
    super();
    this.opts = {
      forward: true, groupProxying: true, replyFrom: 'reply-from', hosts: {}, maxMulticastTimeout: 300, maxPendingPerClient: 16,
      maxResponsesPerSecond: 200, maxExchanges: 20000, relayType: 'NON', hopLimit: 16, ...opts,
    };
    opts.listen.setRequestHandler((req, ctx) => this.handle(req, ctx));
    opts.listen.on('reset', this.onReset);
    if (opts.cache) this.cache = new ProxyCache(typeof opts.cache === 'object' ? opts.cache.maxEntries : undefined);
  }

  private ticketHub?: TicketListener;
  /** Listener for ticket requests (MNP-02 §4), created on first use. */
  private get tickets(): TicketListener {
    return (this.ticketHub ??= new TicketListener(this.opts.listen, this.opts.upstream));
  }

  /** The notification relay (MNP-02 §3), created on first use. */
  private get notificationRelay(): NotificationRelay {
    this.relayHub ??= new NotificationRelay(this.opts.listen, this.opts.upstream);
    return this.relayHub;
  }

  /** Observations the proxy holds upstream on behalf of its clients (one per target), relayed (MNP-02 §3) or by ticket (§4). */
  get relayedObservations(): number {
    return (this.relayHub?.observations ?? 0) + (this.ticketHub?.observationCount ?? 0);
  }

  private membersOf(uri: CoapUri): string[] {
    const m = this.opts.members?.[`${uri.host}:${uri.port}`] ?? this.opts.members?.[uri.family === 6 ? `[${uri.host}]:${uri.port}` : ''];
    return (m ?? []).map((x) => x.trim()).map((x) => {
      const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(x);
      if (v6) return `${v6[1]}|${v6[2]}`;
      const i = x.lastIndexOf(':');
      return i > 0 ? `${x.slice(0, i)}|${x.slice(i + 1)}` : `${x}|5683`;
    });
  }

  get activeExchanges(): number {
    return this.exchanges.size;
  }

  private emitEvent(e: ProxyEvent): void {
    if (this.listenerCount('event')) this.emit('event', e);
  }

  // ------------------------------------------------------------------ request processing (GCP-07 §5.2.1)

  private handle(req: IncomingRequest, ctx: ResponseContext): void {
    this.counters.requests++;
    const client: ProxyClient = { address: req.remote.address, port: req.remote.port };
    const token = req.message.token;
    // Responses go back through `reply`: protected with the removed OSCORE layers once there are any.
    let reply = ctx;
    try {
      if (req.multicast) throw new ProxyError(CODES.BAD_REQUEST, 'the proxy does not take multicast requests');
      let request = req;
      let layers: RemovedLayer[] = [];
      if (this.opts.oscore) {
        // OCP-07 §2.4: remove the layers meant for the proxy, up to the proxy-related options (GCP-07 §5.2.1 step 1).
        const r = this.removeLayers(req);
        layers = r.layers;
        if (layers.length) {
          // GCP-07 §5.2.1 step 2, §10 REQ2: the client is who the context of its layer says it is, whatever its address.
          client.kid = oscoreClientId(layers[0].context);
          reply = this.protectedReplies(ctx, layers, client, token);
          request = { ...req, message: r.message };
        } else if (this.opts.oscore.required !== false) {
          // OCP-07 §2.4 step 4: forwarding for an unidentified client is not acceptable.
          throw new ProxyError(CODES.UNAUTHORIZED, 'this proxy serves only clients that protect their requests for it with OSCORE', [], 'ERR_OSCORE_REQUIRED');
        }
      }
      this.process(request, client, reply, layers);
    } catch (err) {
      this.counters.rejected++;
      if (err instanceof LayerError) {
        // RFC 8613 §8.2 at the failing layer, or the layer limit (OCP-07 §2.1); already protected with the layers
        // removed before it (§2.5).
        this.counters.oscoreFailures++;
        this.emitEvent({ kind: 'reject', client, token: token.toString('hex'), ...(err.responseCode !== undefined ? { code: codeToString(err.responseCode) } : {}), reason: err.message });
        if (err.response) ctx.respond(err.response);
        else ctx.ignore();
        return;
      }
      const e = err instanceof ProxyError ? err : err instanceof UriError ? new ProxyError(CODES.BAD_REQUEST, err.message) : new ProxyError(CODES.INTERNAL_SERVER_ERROR, (err as Error).message);
      this.emitEvent({ kind: 'reject', client, token: token.toString('hex'), code: codeToString(e.responseCode), reason: e.message });
      reply.respond({ code: e.responseCode, options: e.options, payload: Buffer.from(e.message, 'utf8') });
    }
  }

  // ------------------------------------------------------------------ OSCORE (oscore-capable-proxies-07)

  private removeLayers(req: IncomingRequest): RequestLayersResult {
    const o = this.opts.oscore!;
    const inbound = proxyInboundClassE();
    return removeRequestLayers(req.message, {
      contexts: o.contexts,
      source: req.remote,
      maxLayers: o.maxLayers ?? DEFAULT_MAX_LAYERS,
      proxyRelated: (m, removed) => this.isProxyRequest(m, removed),
      // The client escalated the proxy's options to class E for this layer (§2.2): Outer copies are not its own.
      classE: () => inbound,
    });
  }

  /** OCP-07 §2.4 steps 1-3 for this proxy: forward-proxy options, or a request for a reverse-proxy resource. */
  private isProxyRequest(m: CoapMessage, removed: readonly RemovedLayer[]): boolean {
    const kind = proxyRelatedKind(m);
    // Step 2: forwarded after the acceptability check, or 5.05 when forward proxying is off (resolveTarget).
    if (kind === 'forward') return true;
    if (kind !== 'reverse' || !this.opts.reverse?.length) return false;
    // Step 3: with OSCORE required, the reverse-proxy resources serve only clients identified by a layer the proxy
    // removed, so a request still protected for the proxy is decrypted first (step 6). Uri-Host stays class U in
    // that layer (§2.2 step 7), so it is visible before decryption.
    if (removed.length === 0 && isProtected(m) && this.opts.oscore!.required !== false) return false;
    try {
      return this.resolveTarget(m) !== undefined;
    } catch {
      return true; // process() reports the error
    }
  }

  /** A ResponseContext that protects each response with the removed layers in reverse order (OCP-07 §2.5). */
  private protectedReplies(ctx: ResponseContext, layers: RemovedLayer[], client: ProxyClient, token: Buffer): ResponseContext {
    return {
      respond: (res, opts) => {
        const out = this.protectForClient(layers, { code: res.code, options: res.options ?? [], payload: res.payload ?? EMPTY }, client, token, []);
        if (out) ctx.respond(out, opts);
        else ctx.ignore();
      },
      ignore: () => ctx.ignore(),
    };
  }

  /**
   * OCP-07 §2.2: every option the proxy protects must be one it recognizes, else 5.02 (Bad Gateway) goes back
   * instead, carrying `keep` (e.g. Reply-From). Then §2.5: the removed layers in reverse order, class U options
   * escalated for the client (§2.2), and a Partial IV on every response to the request but the first (§2.5.1).
   * undefined when protecting fails (e.g. the sequence number store); nothing must then go out unprotected.
   */
  private protectForClient(layers: RemovedLayer[], res: MessageParts, client: ProxyClient, token: Buffer, keep: CoapOption[]): MessageParts | undefined {
    let parts = res;
    const unknown = firstUnrecognizedOption(res.options, this.opts.oscore?.understoodOptions);
    if (unknown !== undefined) {
      parts = { code: CODES.BAD_GATEWAY, options: sortOptions(keep.slice()), payload: Buffer.from(`the response carried option ${unknown}, which this proxy does not recognize and so cannot protect`, 'utf8') };
    }
    try {
      return protectResponseLayers(layers, parts, { classE: (_depth, m) => escalatedOptions(m.options ?? [], PROXY_TO_CLIENT_VIEW) });
    } catch (err) {
      this.emitEvent({ kind: 'drop', client, token: token.toString('hex'), reason: `cannot protect the response for the client: ${(err as Error).message}` });
      return undefined;
    }
  }

  private process(req: IncomingRequest, client: ProxyClient, ctx: ResponseContext, layers: RemovedLayer[] = []): void {
    const msg = req.message;
    const target = this.resolveTarget(msg);
    const key = keyOf(client, msg.token);
    const existing = this.exchanges.get(key);
    const mtRaw = getOption(msg, optionNumber('Multicast-Timeout'));

    if (!target) {
      // GCP-07 §5.2.3: the Early Stop Request: GET, same token, Multicast-Timeout 0, no forwarding information.
      if (existing && msg.code === CODES.GET && mtRaw !== undefined && decodeUint(mtRaw) === 0) {
        this.counters.earlyStops++;
        this.endExchange(existing, 'early stop request');
        return ctx.ignore();
      }
      throw new ProxyError(CODES.NOT_FOUND, 'no proxy target: use Proxy-Uri, Proxy-Scheme with Uri-* options, or a reverse-proxy name');
    }
    if (existing) {
      const obs = getOption(msg, OPT.OBSERVE);
      if (existing.observing && obs !== undefined && obs.length <= 3 && decodeUint(obs) === 1) {
        // Deregistration on the same token: forward it to the group on the proxy's token (RFC 10020 §3.7) and
        // relay the servers' answers, with Reply-From, for the deregistration's own T' (or 5 s), then end.
        const t = mtRaw === undefined || mtRaw.length > 4 ? 5 : Math.min(decodeUint(mtRaw), this.opts.maxMulticastTimeout);
        this.deregister(existing, t);
        return ctx.ignore();
      }
      if (existing.observing && obs !== undefined && obs.length <= 3 && decodeUint(obs) === 0 && existing.upstreamRequest && existing.upstreamDest) {
        // RFC 10020 §3.7: the client repeats its registration on the same token: repeat it upstream on ours.
        this.opts.upstream.sendMessage({ ...existing.upstreamRequest, type: 'NON', messageId: this.opts.upstream.newMessageId() }, existing.upstreamDest);
        return ctx.ignore();
      }
      // RFC 10020 §3.5.2: a token still in use: stop forwarding, do not forward the new request, 4.00.
      this.endExchange(existing, 'token reused');
      throw new ProxyError(CODES.BAD_REQUEST, 'token still in use for an ongoing exchange: immediate token reuse is not possible');
    }

    // Step 2: identify the client and check the allow-list (REQ1).
    if (!this.allowed(client, target.text)) throw new ProxyError(CODES.UNAUTHORIZED, `client ${client.address}:${client.port} is not allowed to proxy to ${target.text}`);

    // MNP-02 §4 / OCP-07 §2.4 step 4: proxy options + Listen-To-Multicast-Responses (a ticket request) are not
    // forwarded: this proxy rebuilds the phantom request and listens to the group itself.
    if (this.tickets.wants(msg, req.remote)) {
      this.emitEvent({ kind: 'request', client, token: msg.token.toString('hex'), target: target.text, reason: 'ticket (MNP §4)' });
      return this.tickets.handle(req, ctx, layers.length ? (p) => this.protectForClient(layers, p, client, msg.token, []) : undefined);
    }

    // RFC 7252 §5.7.1: an unsafe option we do not know cannot be forwarded.
    for (const o of msg.options) {
      if (isUnsafe(o.number) && !optionDef(o.number)) throw new ProxyError(CODES.BAD_GATEWAY, `unknown unsafe option ${o.number}`);
    }

    // RFC 8768: Hop-Limit.
    const hop = getOption(msg, OPT.HOP_LIMIT);
    let hopLimit = hop === undefined ? this.opts.hopLimit : decodeUint(hop);
    if (hopLimit <= 1) throw new ProxyError(CODES.HOP_LIMIT_REACHED, 'Hop-Limit reached', [], 'ERR_HOP_LIMIT');
    hopLimit -= 1;

    const group = target.uri.family !== 0 && isMulticastAddress(target.uri.host);
    if (!group) return this.forwardUnicast(req, client, target, hopLimit, ctx, layers.length > 0);
    // RFC 10020 §3.5: proxying to group URIs must be explicitly enabled.
    if (!this.opts.groupProxying) throw new ProxyError(CODES.NOT_IMPLEMENTED, 'group proxying is not enabled on this proxy');

    // Step 3: Multicast-Timeout is required (also at a reverse proxy, §6.1).
    const mtNum = optionNumber('Multicast-Timeout');
    if (mtRaw === undefined) {
      throw new ProxyError(CODES.BAD_REQUEST, 'Please use Multicast-Timeout', [{ number: mtNum, value: EMPTY }], 'ERR_NO_MULTICAST_TIMEOUT');
    }
    // Step 4: read T' (and remove it, unless a further proxy follows).
    if (mtRaw.length > 4) throw new ProxyError(CODES.BAD_REQUEST, 'Multicast-Timeout longer than 4 bytes');
    const tPrime = decodeUint(mtRaw);
    if (tPrime > this.opts.maxMulticastTimeout) throw new ProxyError(CODES.BAD_REQUEST, `Multicast-Timeout ${tPrime} s exceeds this proxy's maximum of ${this.opts.maxMulticastTimeout} s`);

    const pending = this.perClient.get(clientKey(client)) ?? 0;
    if (pending >= this.opts.maxPendingPerClient || this.exchanges.size >= this.opts.maxExchanges) {
      throw new ProxyError(CODES.TOO_MANY_REQUESTS, `too many pending exchanges (${pending}) for this client`, [{ number: OPT.MAX_AGE, value: encodeUint(Math.max(1, tPrime)) }], 'ERR_LIMIT');
    }
    this.counters.groupRequests++;

    const ex: Exchange = {
      key: keyOf(client, msg.token), client, clientToken: msg.token, target: target.text, observing: getOption(msg, OPT.OBSERVE) !== undefined && decodeUint(getOption(msg, OPT.OBSERVE)!) === 0,
      gotObserve2xx: false, reverse: target.reverse, groupPort: target.uri.port, relayedMids: new Set(), relayCount: 0, ended: false, layers,
      answered: new Set(),
    };

    let upstreamOptions = this.forwardedOptions(msg, target, hopLimit);
    let dest: RemoteAddress;
    let lifetime: number;
    if (this.opts.chain) {
      // GCP-07 §8.1: a non-last proxy keeps the option and rewrites T' to T''.
      const timers = tPrime === 0 ? { tProxy: 0, tNext: 0 } : chainTimers(tPrime, this.opts.chain.rttPrevious, this.opts.chain.rttNext);
      if (!timers) {
        const min = minimumAcceptable(this.opts.chain.rttPrevious, this.opts.chain.rttNext);
        throw new ProxyError(CODES.PROXYING_NOT_SUPPORTED, `Multicast-Timeout ${tPrime} s leaves no time for the next hop; use at least ${min} s`, [{ number: mtNum, value: encodeUint(min) }], 'ERR_CHAIN_TIMEOUT');
      }
      upstreamOptions = upstreamOptions.filter((o) => o.number !== mtNum);
      upstreamOptions.push({ number: mtNum, value: encodeUint(timers.tNext) });
      // The next proxy still needs the group as the target.
      upstreamOptions = upstreamOptions.filter((o) => ![OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, OPT.PROXY_SCHEME, OPT.PROXY_URI].includes(o.number as never));
      upstreamOptions.push({ number: OPT.PROXY_URI, value: Buffer.from(target.text, 'utf8') });
      dest = this.opts.chain.nextHop;
      lifetime = timers.tProxy;
    } else {
      dest = { address: socketAddress(target.uri), port: target.uri.port };
      lifetime = tPrime;
    }

    // GCP-07 §7: a cacheable group request may be served, in part or entirely, from the cache.
    let cached: CachedResponse[] = [];
    if (this.cache && !this.opts.chain && !ex.observing && tPrime > 0 && isCacheableRequest(msg.code) && getOption(msg, OPT.OSCORE) === undefined) {
      ex.cacheKey = `${target.uri.host}|${target.uri.port}|${requestKey(msg.code, upstreamOptions, msg.payload)}`;
      const members = this.membersOf(target.uri);
      const tag = this.cache.groupEtag(ex.cacheKey, members);
      cached = this.cache.fresh(ex.cacheKey);
      if (tag) return this.answerFromCache(ex, msg, cached, tag, pending, ctx, tPrime);
    }

    // Step 5: forward with the proxy's own token and Message ID (never the client's).
    const upstream = this.opts.upstream;
    const upToken = upstream.newToken();
    ex.upstreamToken = upToken;
    const upReq = createMessage({ type: this.opts.chain ? 'CON' : 'NON', code: msg.code, token: upToken, messageId: upstream.newMessageId(), options: sortOptions(upstreamOptions), payload: msg.payload });
    ex.upstreamRequest = upReq;
    ex.upstreamDest = dest;
    this.exchanges.set(ex.key, ex);
    this.perClient.set(clientKey(client), pending + 1);
    this.emitEvent({ kind: 'request', client, token: msg.token.toString('hex'), target: target.text, multicastTimeout: tPrime });

    // An empty ACK now if the client used CON: the responses follow as separate messages.
    ctx.ignore();

    if (tPrime === 0) {
      // T' = 0: forward, relay nothing (GCP-07 §5.2.1 step 6).
      upstream.sendMessage(upReq, dest);
      upstream.retireToken(upToken);
      this.endExchange(ex, 'T\' = 0');
      return;
    }
    ex.stopUpstream = upstream.listen(upToken, (res) => this.relay(ex, res));
    try {
      upstream.sendMessage(upReq, dest, { onFail: (err) => this.endExchange(ex, `next hop: ${err.message}`) });
    } catch (err) {
      // nothing went out: free the exchange at once (the client gets no relays; its own timer ends it)
      this.endExchange(ex, `cannot send to the group: ${(err as Error).message}`);
      return;
    }
    // Step 6: the timer T'.
    ex.timer = setTimeout(() => this.expire(ex), lifetime * 1000);
    if (cached.length) this.serveCachedAlongside(ex, cached, tPrime);
  }

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
    ex.cacheTimer = setTimeout(() => {
      ex.cacheTimer = undefined;
      for (const e of later) if (!ex.answered.has(e.server) && !ex.ended) this.sendCached(ex, e);
    }, Math.max(0, tPrime * 1000 - 300));
  }

  /** GCP-07 §7.1 / §7.3: every member has a fresh cached response: answer without forwarding. */
  private answerFromCache(ex: Exchange, msg: CoapMessage, cached: CachedResponse[], tag: Buffer, pending: number, ctx: ResponseContext, tPrime: number): void {
    const getNum = optionNumber('Group-ETag');
    this.exchanges.set(ex.key, ex);
    this.perClient.set(clientKey(ex.client), pending + 1);
    this.emitEvent({ kind: 'request', client: ex.client, token: msg.token.toString('hex'), target: ex.target, multicastTimeout: tPrime, reason: 'served from cache' });
    ctx.ignore();
    const tagOption = { number: getNum, value: tag };
    if (getOptions(msg, getNum).some((t) => t.equals(tag))) {
      // §7.3: the client's set is current: one 2.03 (Valid) with exactly one Group-ETag and no payload.
      this.sendToClient(ex, { code: CODES.VALID, options: [tagOption], payload: EMPTY }, [], 'cache');
    } else {
      for (const e of cached) this.sendCached(ex, e, tagOption);
    }
    this.endExchange(ex, 'served from cache');
  }

  private sendCached(ex: Exchange, e: CachedResponse, extra?: CoapOption): void {
    ex.answered.add(e.server);
    const m = this.cache!.served(e);
    const rf = new Set([safeOptionNumber('Reply-From'), safeOptionNumber('Response-Forwarding')]);
    const added = m.options.filter((o) => rf.has(o.number));
    const options = extra ? sortOptions([...m.options, extra]) : m.options;
    this.sendToClient(ex, { code: m.code, options, payload: m.payload }, extra ? [...added, extra] : added, 'cache');
  }

  /** Forward a deregistration upstream on the exchange's token and relay the answers until `tPrime` expires. */
  private deregister(ex: Exchange, tPrime: number): void {
    ex.observing = false;
    if (ex.timer) clearTimeout(ex.timer);
    if (ex.upstreamRequest && ex.upstreamDest && ex.upstreamToken) {
      const dereg = createMessage({ ...ex.upstreamRequest, type: 'NON', messageId: this.opts.upstream.newMessageId(), options: [...ex.upstreamRequest.options.filter((o) => o.number !== OPT.OBSERVE), { number: OPT.OBSERVE, value: encodeUint(1) }] });
      this.opts.upstream.sendMessage(dereg, ex.upstreamDest);
    }
    if (tPrime === 0) return this.endExchange(ex, 'observe deregistration');
    ex.timer = setTimeout(() => this.endExchange(ex, 'observe deregistration'), tPrime * 1000);
  }

  private expire(ex: Exchange): void {
    ex.timer = undefined;
    // GCP-07 §5.4.2: keep relaying notifications if an observation is active.
    if (ex.observing && ex.gotObserve2xx) return;
    this.endExchange(ex, 'Multicast-Timeout expired');
  }

  /** The target of a request: Proxy-Uri, Proxy-Scheme + Uri-*, or a reverse mapping. */
  private resolveTarget(msg: CoapMessage): { uri: CoapUri; text: string; reverse?: ReverseMapping } | undefined {
    const proxyUri = getOption(msg, OPT.PROXY_URI);
    const proxyScheme = getOption(msg, OPT.PROXY_SCHEME);
    const uriHost = getOption(msg, OPT.URI_HOST)?.toString('utf8');
    if (proxyUri || proxyScheme) {
      if (!this.opts.forward) throw new ProxyError(CODES.PROXYING_NOT_SUPPORTED, 'forward proxying is not enabled');
      let uri: CoapUri;
      if (proxyUri) uri = parseUri(proxyUri.toString('utf8'));
      else {
        const scheme = proxyScheme!.toString('utf8');
        const port = getOption(msg, OPT.URI_PORT);
        const path = msg.options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
        const query = msg.options.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString('utf8'));
        if (!uriHost) throw new ProxyError(CODES.BAD_REQUEST, 'Proxy-Scheme needs Uri-Host');
        uri = parseUri(formatUri({ scheme, host: uriHost.replace(/^\[|\]$/g, ''), port: port ? decodeUint(port) : 5683, path, query }));
      }
      if (uri.scheme !== 'coap') throw new ProxyError(CODES.PROXYING_NOT_SUPPORTED, `scheme ${uri.scheme} is not proxied`);
      if (uri.family === 0) {
        const ip = this.opts.hosts[uri.host];
        if (!ip) throw new ProxyError(CODES.BAD_GATEWAY, `cannot resolve ${uri.host}: only IP literals and configured host names are used`);
        const zone = ip.includes('%') ? ip.split('%')[1] : undefined;
        uri = { ...uri, host: ip.split('%')[0], zone, family: net.isIPv4(ip) ? 4 : 6 };
      }
      return { uri, text: formatUri(uri) };
    }
    // Reverse proxy: a configured name (Uri-Host) or path prefix.
    const path = msg.options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
    const query = msg.options.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString('utf8'));
    for (const m of this.opts.reverse ?? []) {
      if (m.host && m.host.toLowerCase() !== (uriHost ?? '').toLowerCase()) continue;
      const prefix = m.pathPrefix ?? [];
      if (!prefix.every((seg, i) => path[i] === seg)) continue;
      if (!m.host && !prefix.length) continue;
      const g = parseUri(m.group);
      const uri: CoapUri = { ...g, path: [...g.path, ...path.slice(prefix.length)], query };
      return { uri, text: formatUri(uri), reverse: m };
    }
    // Reverse case 1 follow-up: Uri-Host (and Uri-Port) name a server that answered through us.
    if (uriHost && net.isIP(uriHost.replace(/^\[|\]$/g, '')) && (this.opts.reverse ?? []).some((m) => m.standIn === 'servers')) {
      const host = uriHost.replace(/^\[|\]$/g, '');
      const portOpt = getOption(msg, OPT.URI_PORT);
      const port = portOpt ? decodeUint(portOpt) : 5683;
      if (!this.knownServers.has(`${host}|${port}`)) throw new ProxyError(CODES.NOT_FOUND, `${host}:${port} is not a server this proxy stands in for`);
      const uri = parseUri(formatUri({ scheme: 'coap', host, port, path, query }));
      return { uri, text: formatUri(uri) };
    }
    return undefined;
  }

  private allowed(client: ProxyClient, target: string): boolean {
    const allow = this.opts.allow;
    if (typeof allow === 'function') return allow(client, target);
    return (allow ?? []).some(
      (r) =>
        (r.address === '*' || r.address === client.address) &&
        (r.port === undefined || r.port === client.port) &&
        (r.kid === undefined || r.kid === client.kid) &&
        (!r.targets || r.targets.length === 0 || r.targets.some((t) => target.startsWith(t))),
    );
  }

  /** Options for the request towards the group or server. */
  private forwardedOptions(msg: CoapMessage, target: { uri: CoapUri }, hopLimit: number): CoapOption[] {
    const mtNum = optionNumber('Multicast-Timeout');
    // Group-ETag is for the proxy (GCP-07 §7.3), never for the servers.
    const drop = new Set<number>([OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, OPT.HOP_LIMIT, mtNum, optionNumber('Group-ETag')]);
    const kept = msg.options.filter((o) => !drop.has(o.number));
    if (this.opts.chain) {
      const mt = getOption(msg, mtNum);
      if (mt) kept.push({ number: mtNum, value: mt });
    }
    kept.push({ number: OPT.HOP_LIMIT, value: encodeUint(hopLimit) });
    return [...kept, ...uriToOptions(target.uri)];
  }

  // ------------------------------------------------------------------ unicast forward proxying (RFC 7252 §5.7)

  private forwardUnicast(req: IncomingRequest, client: ProxyClient, target: { uri: CoapUri; text: string }, hopLimit: number, ctx: ResponseContext, oscoreClient = false): void {
    this.counters.unicastRequests++;
    let options = this.forwardedOptions(req.message, target, hopLimit).filter((o) => o.number !== optionNumber('Multicast-Timeout'));
    const obs = getOption(req.message, OPT.OBSERVE);
    const plain = !oscoreClient && getOption(req.message, OPT.OSCORE) === undefined;
    if (obs !== undefined && plain && this.opts.observeRelay !== false && (req.message.code === CODES.GET || req.message.code === CODES.FETCH)) {
      const relayClient = { remote: { address: client.address, port: client.port }, token: req.message.token };
      if (decodeUint(obs) === 0) {
        // MNP-02 §3: one upstream observation per target (multicast notifications included), each client answered
        // with the latest notification and then relayed every notification on its own token.
        this.emitEvent({ kind: 'request', client, token: req.message.token.toString('hex'), target: target.text, reason: 'observe (relayed)' });
        this.notificationRelay.register(target.text, relayClient, options.filter((o) => o.number !== OPT.URI_PATH && o.number !== OPT.URI_QUERY && o.number !== OPT.OBSERVE && o.number !== OPT.HOP_LIMIT)).then(
          (first) => (first ? ctx.respond(first) : ctx.ignore()),
          (err: Error) => ctx.respond({ code: CODES.BAD_GATEWAY, payload: Buffer.from(err.message) }),
        );
        return;
      }
      // Deregistration: the client leaves the relay; the request goes on as a plain GET for the current state.
      this.notificationRelay.deregister(target.text, relayClient);
      options = options.filter((o) => o.number !== OPT.OBSERVE);
    }
    let dest: RemoteAddress = { address: socketAddress(target.uri), port: target.uri.port };
    if (this.opts.chain) {
      // A non-last proxy sends unicast targets on through the next hop too (e.g. a follow-up to one server that
      // the chain stands in for), as a forward-proxy request.
      options = options.filter((o) => ![OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY].includes(o.number as never));
      options.push({ number: OPT.PROXY_URI, value: Buffer.from(target.text, 'utf8') });
      dest = this.opts.chain.nextHop;
    }
    this.emitEvent({ kind: 'request', client, token: req.message.token.toString('hex'), target: target.text });
    this.opts.upstream
      .request({ code: req.message.code, options, payload: req.message.payload }, dest, { confirmable: true, timeout: this.opts.unicastTimeout })
      .then(
        (res) => {
          const out = res.message.options.slice();
          this.emitEvent({ kind: 'response', client, token: req.message.token.toString('hex'), target: target.text, code: codeToString(res.message.code), origin: res.remote });
          ctx.respond({ code: res.message.code, options: out, payload: res.message.payload });
        },
        (err: Error & { responseCode?: number }) => {
          const code = err.responseCode ?? CODES.BAD_GATEWAY;
          this.emitEvent({ kind: 'reject', client, token: req.message.token.toString('hex'), target: target.text, code: codeToString(code), reason: err.message });
          ctx.respond({ code, payload: Buffer.from(err.message, 'utf8') });
        },
      );
  }

  // ------------------------------------------------------------------ response processing (GCP-07 §5.4)

  private relay(ex: Exchange, res: IncomingResponse): void {
    if (ex.ended || this.closed) {
      this.counters.lateDropped++;
      return;
    }
    if (ex.timer === undefined && !(ex.observing && ex.gotObserve2xx)) {
      // after T' (only notifications of an active observation still pass)
      this.counters.lateDropped++;
      return;
    }
    const ck = clientKey(ex.client);
    const now = Date.now();
    const r = this.rate.get(ck) ?? { windowStart: now, count: 0 };
    if (now - r.windowStart >= 1000) {
      r.windowStart = now;
      r.count = 0;
    }
    if (++r.count > this.opts.maxResponsesPerSecond) {
      this.rate.set(ck, r);
      this.counters.rateDropped++;
      this.emitEvent({ kind: 'drop', client: ex.client, token: ex.clientToken.toString('hex'), reason: `more than ${this.opts.maxResponsesPerSecond} responses/s to this client` });
      return;
    }
    this.rate.set(ck, r);
    const m = res.message;
    const observe = getOption(m, OPT.OBSERVE);
    if (ex.observing && codeClass(m.code) === 2 && observe !== undefined) ex.gotObserve2xx = true;

    let options = m.options.slice();
    let added: CoapOption[] = [];
    if (!this.opts.chain) {
      // Step 1: Reply-From with the server's CRI (forward / case 2), or the proxy's own + a reference (case 1).
      options = options.filter((o) => o.number !== safeOptionNumber('Reply-From') && o.number !== safeOptionNumber('Response-Forwarding'));
      added = this.replyFromOptions(ex, res.remote);
      options.push(...added);
      this.rememberServer(res.remote);
    } else if (ex.reverse?.standIn === 'servers') {
      // GCP-07 §8: in a reverse chain that stands in for servers, each proxy replaces Reply-From with its own
      // address (TARGET_OLD -> TARGET_NEW), keeping the server as the reference, so the client sees the first proxy.
      const rfNum = optionNumber('Reply-From');
      const rf = getOption(m, rfNum);
      if (rf) {
        let server: RemoteAddress | undefined;
        try {
          const d = decodeReplyFrom(rf);
          const s = d.reference ?? d.target;
          server = { address: s.zone ? `${s.host}%${s.zone}` : s.host, port: s.port ?? 5683 };
        } catch {
          server = undefined; // a malformed Reply-From from the next hop is relayed as it came
        }
        if (server) {
          options = options.filter((o) => o.number !== rfNum);
          added = this.replyFromOptions(ex, server);
          options.push(...added);
          this.rememberServer(server);
        }
      }
    }
    const server = `${res.remote.address}|${res.remote.port}`;
    ex.answered.add(server);
    const parts: MessageParts = { code: m.code, options: sortOptions(options), payload: m.payload };
    // GCP-07 §5.4.1: Reply-From is added before the response is stored, so cache hits carry the origin too.
    if (ex.cacheKey && this.cache) this.cache.store(ex.cacheKey, server, { ...m, options: parts.options ?? [] });
    this.sendToClient(ex, parts, added, res.remote);
  }

  /** Step 2: relay to the client as a separate response on the client's token (protected if it used OSCORE). */
  private sendToClient(ex: Exchange, parts: MessageParts, added: CoapOption[], origin: RemoteAddress | 'cache'): void {
    if (ex.layers.length) {
      // Step 2 with the client-proxy association: Reply-From, an Outer option of the (possibly end-to-end protected)
      // response, is class E in the proxy's layer (OCP-07 §2.2), as is the server's OSCORE option.
      const protectedParts = this.protectForClient(ex.layers, parts, ex.client, ex.clientToken, added);
      if (!protectedParts) return;
      parts = protectedParts;
    }
    const listen = this.opts.listen;
    ex.relayCount++;
    // RFC 7641 §4.5: now and then a CON notification checks that the client is still there.
    const type = this.opts.relayType === 'CON' || (ex.observing && ex.relayCount % 10 === 0) ? 'CON' : 'NON';
    const out = createMessage({ type, code: parts.code, token: ex.clientToken, messageId: listen.newMessageId(), options: parts.options, payload: parts.payload });
    this.midToExchange.set(out.messageId, ex.key);
    if (this.midToExchange.size > 4096) this.midToExchange.delete(this.midToExchange.keys().next().value!);
    this.counters.relayed++;
    this.emitEvent({ kind: 'response', client: ex.client, token: ex.clientToken.toString('hex'), target: ex.target, code: codeToString(parts.code), ...(origin === 'cache' ? { reason: 'from cache' } : { origin }) });
    listen.sendMessage(out, ex.client, {
      onReset: () => this.endExchange(ex, 'client sent RST'),
      onFail: () => this.endExchange(ex, 'client did not acknowledge'),
    });
  }

  /** A server this proxy relayed for: reverse case 1 follow-ups may name it in Uri-Host / Uri-Port. */
  private rememberServer(server: RemoteAddress): void {
    this.knownServers.set(`${server.address}|${server.port}`, Date.now());
    if (this.knownServers.size > 10000) this.knownServers.delete(this.knownServers.keys().next().value!);
  }

  private replyFromOptions(ex: Exchange, server: RemoteAddress): CoapOption[] {
    const out: CoapOption[] = [];
    const fmt = this.opts.replyFrom;
    const [host, zone] = server.address.split('%');
    if (fmt === 'reply-from' || fmt === 'both') {
      let value: Buffer;
      if (ex.reverse?.standIn === 'servers') {
        const self = this.opts.selfAuthority ?? this.opts.listen.transport.address();
        const s = self as { scheme?: string; host?: string; address?: string; port: number };
        value = encodeReplyFrom({ scheme: s.scheme ?? 'coap', host: s.host ?? s.address!, port: s.port }, { scheme: null, host, zone, port: server.port });
      } else {
        value = encodeReplyFrom({ scheme: 'coap', host, zone, port: server.port });
      }
      out.push({ number: optionNumber('Reply-From'), value });
    }
    if (fmt === 'response-forwarding' || fmt === 'both') {
      const num = safeOptionNumber('Response-Forwarding');
      if (num === undefined) throw new Error('Response-Forwarding has no option number: configure one first');
      out.push({ number: num, value: encodeResponseForwarding(host, server.port, ex.groupPort) });
    }
    return out;
  }

  private clientReset(remote: RemoteAddress, mid: number): void {
    const key = this.midToExchange.get(mid);
    if (!key) return;
    const ex = this.exchanges.get(key);
    if (ex && ex.client.address === remote.address && ex.client.port === remote.port) this.endExchange(ex, 'client sent RST');
  }

  private endExchange(ex: Exchange, reason: string): void {
    if (ex.ended) return;
    ex.ended = true;
    if (ex.timer) clearTimeout(ex.timer);
    if (ex.cacheTimer) clearTimeout(ex.cacheTimer);
    ex.timer = ex.cacheTimer = undefined;
    if (ex.observing && ex.upstreamRequest && ex.upstreamDest && ex.upstreamToken && !this.closed) {
      // Cancel the observation upstream: the same token with Observe = 1 (RFC 10020 §3.7).
      const dereg = createMessage({ ...ex.upstreamRequest, type: 'NON', messageId: this.opts.upstream.newMessageId(), options: [...ex.upstreamRequest.options.filter((o) => o.number !== OPT.OBSERVE), { number: OPT.OBSERVE, value: encodeUint(1) }] });
      this.opts.upstream.sendMessage(dereg, ex.upstreamDest);
    }
    ex.stopUpstream?.();
    this.exchanges.delete(ex.key);
    const ck = clientKey(ex.client);
    const n = (this.perClient.get(ck) ?? 1) - 1;
    if (n <= 0) {
      this.perClient.delete(ck);
      this.rate.delete(ck); // nothing pending: the client's rate window can go too
    } else this.perClient.set(ck, n);
    this.emitEvent({ kind: 'end', client: ex.client, token: ex.clientToken.toString('hex'), target: ex.target, reason });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const ex of [...this.exchanges.values()]) this.endExchange(ex, 'proxy closed');
    this.closed = true;
    this.relayHub?.close();
    this.ticketHub?.close();
    this.opts.listen.off('reset', this.onReset);
    this.opts.listen.setRequestHandler(undefined);
  }
}

function clientKey(c: ProxyClient): string {
  return c.kid !== undefined ? `kid:${c.kid}` : `${c.address}|${c.port}`;
}

function safeOptionNumber(name: string): number | undefined {
  const def = optionDef(name);
  return def?.number;
}
