// Client side of group requests through a proxy (groupcomm-proxy-07 §5.1, §5.5, §6, §8): one unicast request to
// the proxy carrying the group URI (Proxy-Uri, or Proxy-Scheme + Uri-*, or a reverse-proxy name) and
// Multicast-Timeout T' < T; each relayed response's origin read from Reply-From (or the legacy
// Response-Forwarding); reactions to 4.00 with an empty Multicast-Timeout, 5.05 with a minimum T', and 4.01; the
// Early Stop Request; Observe notifications kept until cancelled. With OSCORE (oscore-capable-proxies-07 §2.3,
// §2.6; groupcomm-proxy-07 §5.5): an end-to-end layer for the servers and/or a layer for the proxy on the request;
// on every relayed response the proxy's layer comes off first, then the origin is read from Reply-From and the
// end-to-end layer is removed with that server's Recipient Context. With a GroupEtagStore (§7.3, §7.4): the set
// of accepted responses is kept with its Group-ETag, offered on the next identical request, and a 2.03 (Valid) from
// the proxy with that Group-ETag delivers the stored responses again, refreshed; no content of the 2.03 is delivered.

import { createHash } from 'node:crypto';
import { CborStructureError, CriAuthority, decodeReplyFrom, decodeResponseForwarding } from '../cbor/cri';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, getOptions, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionDef, optionNumber } from '../coap/options';
import { CoapUri, formatUri, originUri, parseUri, uriHostValue, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { Clock, systemClock } from '../messaging/parameters';
import type { RequestContext } from '../oscore/capabilities';
import { decodeOscoreOption } from '../oscore/cose';
import {
  AppliedLayer,
  CLIENT_TO_PROXY_VIEW,
  DEFAULT_MAX_LAYERS,
  END_TO_END_VIEW,
  RequestLayer,
  protectRequestLayers,
  proxyResponseClassE,
  rebindResponses,
} from '../oscore/nested';
import { isProtected, unprotectResponse } from '../oscore/protect';
import { ClientBinding } from '../oscore/binding';
import { RemoteAddress } from '../transport/udp-transport';
import { CapSubject, GroupResponse, Origin, ResponseLimits, ResponseStream, VerifiedIncoming } from '../group/group-client';
import { GroupEtagStore, maxAgeSeconds } from './group-etag-store';
import { TargetStyle, defaultMulticastTimeout, targetOptions } from './target';

export type { TargetStyle } from './target';

/**
 * End-to-end protection for the servers: Group OSCORE (RFC 10021), `context` = GroupContext.groupRequests(); each
 * response is verified with the Recipient Context its kid names (RFC 10021 §8.4) and the origin records that member
 * (Origin.oscore). Any other RequestContext works too (an RFC 8613 context for one server). `responder` overrides
 * the lookup per origin (the older stand-in of one RFC 8613 context per server, test/support/oscore-group.ts).
 */
export interface EndToEndOscore {
  /** protects the request (its Sender side is what all servers share; a Group OSCORE group-mode context fits) */
  context: RequestContext;
  /** the Recipient Context for one server's responses, by origin and by the response's kid if it carries one */
  responder?: (origin: Origin, kid: Buffer | undefined) => RequestContext | undefined;
}

export interface ProxiedOscoreOptions {
  /** the context shared with the proxy: the outer layer, applied last (OCP-07 §2.3) and removed first */
  proxy?: RequestContext;
  endToEnd?: EndToEndOscore;
  /** most layers this client applies (OCP-07 §2.1, default 2); more aborts the sending */
  maxLayers?: number;
}

export interface ProxiedRequestOptions {
  proxy: RemoteAddress;
  /** the group URI (forward proxy), or the reverse proxy's name for the group (e.g. coap://group1.com/r) */
  uri: string | CoapUri;
  method?: number;
  options?: CoapOption[];
  payload?: Buffer;
  /** how the target travels (default proxy-uri) */
  targetStyle?: TargetStyle;
  /** T' in seconds; undefined = leave it out (a reverse proxy not yet known to be one) */
  multicastTimeout?: number;
  /** T, the client's own token retention, ms (default T' + 2 s, or 10 s) */
  timeout?: number;
  /** send the request to the proxy as CON (default true) */
  confirmable?: boolean;
  /** retry after a 5.05 with a larger T' when it still fits under T (default true) */
  retryOn505?: boolean;
  /** retry after a 4.00 that asks for Multicast-Timeout (default true) */
  retryOn400?: boolean;
  followBlocks?: boolean;
  maxBodySize?: number;
  /** what the exchange keeps (default DEFAULT_RESPONSE_LIMITS of group-client.ts); what goes over is counted and dropped */
  limits?: Partial<ResponseLimits>;
  /** OSCORE layers; with OSCORE, Block2 follow-ups are not fetched (followBlocks is ignored) */
  oscore?: ProxiedOscoreOptions;
  /** the clock of T, the client's deadline (tests pass a FakeClock) */
  clock?: Clock;
  /**
   * Revalidate with Group-ETag (groupcomm-proxy-07 §7.3; §7.4 with Group OSCORE end to end): the set of responses
   * this exchange accepts is kept here when the proxy tagged all of them with one Group-ETag; the next identical
   * request offers that Group-ETag, and the proxy's 2.03 with it delivers the stored responses again (marked
   * `revalidated`). GET or FETCH without Observe only; with an end-to-end layer, only with a layer for the proxy
   * too (§10.3: the client-proxy association MUST provide integrity, and the 2.03 is trusted only through it).
   */
  groupEtag?: GroupEtagStore;
}

/** A response delivered from the client's store after the proxy's 2.03 (groupcomm-proxy-07 §7.3). */
export interface RevalidatedResponse extends GroupResponse {
  revalidated: true;
}

/**
 * Origins already read from Reply-From values, by the value's bytes: every response of a server carries the same
 * value, and decoding the CRI (cbor-x, the address bytes, the URI text) was the client's largest cost per relayed
 * response (docs/BENCHMARKS.md §6.6.2). Bounded: starts over at 1,024 values.
 */
const replyFromOrigins = new Map<string, Origin>();

/** Origin of a relayed response, from Reply-From (CRI) or Response-Forwarding (tp_info). */
export function originFromRelayed(m: CoapMessage, remote: RemoteAddress, groupPort?: number): Origin {
  const rfNum = optionDef('Reply-From')?.number;
  const rf = rfNum !== undefined ? getOption(m, rfNum) : undefined;
  if (rf) {
    const key = rf.toString('latin1');
    let known = replyFromOrigins.get(key);
    if (!known) {
      known = originFromReplyFrom(rf); // a malformed value throws here, and is not remembered
      if (replyFromOrigins.size >= 1024) replyFromOrigins.clear();
      replyFromOrigins.set(key, known);
    }
    // a copy: the caller hands it to the application, which may change it
    return known.via ? { ...known, via: { ...known.via } } : { ...known };
  }
  const legacyNum = optionDef('Response-Forwarding')?.number;
  const legacy = legacyNum !== undefined ? getOption(m, legacyNum) : undefined;
  if (legacy) {
    const { address, port } = decodeResponseForwarding(legacy, groupPort);
    return { address, port, uri: originUri(address, port) };
  }
  return { address: remote.address, port: remote.port, uri: originUri(remote.address, remote.port), unverified: true };
}

function originFromReplyFrom(rf: Buffer): Origin {
  const { target, reference } = decodeReplyFrom(rf);
  if (reference?.host) {
    // Case 1: the proxy stands in for each server; follow-ups go to `target` with Uri-Host/Uri-Port of `reference`.
    const via = authorityOrigin(target);
    return { ...authorityOrigin({ ...reference, scheme: target.scheme }), via };
  }
  return authorityOrigin(target);
}

function authorityOrigin(a: CriAuthority): Origin {
  const port = a.port ?? 5683;
  const address = a.zone ? `${a.host}%${a.zone}` : a.host;
  return { address, port, uri: formatUri({ scheme: a.scheme ?? 'coap', host: a.host, zone: a.zone, port }) };
}

export class ProxiedGroupExchange extends ResponseStream {
  private currentToken!: Buffer;
  private unlisten?: () => void;
  private timer?: unknown;
  private readonly clock: Clock;
  private observing: boolean;
  private keepForObserve = false;
  private tPrime: number | undefined;
  private readonly tMs: number;
  private retried400 = false;
  private readonly uri: CoapUri;
  /** proxy's own errors, e.g. 4.01 or 5.05 that could not be retried; `oscore` tells whether it came protected */
  readonly proxyErrors: { code: string; message: string; oscore?: 'protected' | 'unprotected' }[] = [];
  /** the OSCORE layers of the request currently out: [end-to-end?, proxy?] */
  private layers?: { e2e?: AppliedLayer; proxy?: AppliedLayer };
  /** one binding per end-to-end Recipient Context: at most one response without Partial IV each (OCP-07 §2.6.1) */
  private e2eBindings = new Map<RequestContext, ClientBinding>();
  private echo?: Buffer;
  private retriedEcho = false;
  /** the Group-ETag store's key for this request, when revalidating (GCP-07 §7.3) */
  readonly groupEtagKey?: string;
  /** the Group-ETag offered on the request currently out */
  private offeredTag?: Buffer;
  /** the exchange ended with the stored set delivered again */
  private revalidated = false;

  constructor(
    endpoint: CoapEndpoint,
    private readonly o: ProxiedRequestOptions,
  ) {
    super(endpoint, createMessage({ code: o.method ?? CODES.GET }), { followBlocks: o.oscore ? false : o.followBlocks ?? true, maxBodySize: o.maxBodySize ?? 1 << 20, limits: o.limits });
    this.uri = typeof o.uri === 'string' ? parseUri(o.uri) : o.uri;
    this.clock = o.clock ?? systemClock;
    this.tPrime = o.multicastTimeout;
    this.tMs = o.timeout ?? (o.multicastTimeout !== undefined ? o.multicastTimeout * 1000 + 2000 : 10_000);
    // GCP-07 §5.1.1: T' < T.
    if (this.tPrime !== undefined && this.tPrime * 1000 >= this.tMs) throw new RangeError(`Multicast-Timeout ${this.tPrime} s must be less than the client timeout ${this.tMs} ms`);
    const obs = (o.options ?? []).find((x) => x.number === OPT.OBSERVE);
    this.observing = obs !== undefined && decodeUint(obs.value) === 0;
    if (o.oscore) {
      const n = (o.oscore.proxy ? 1 : 0) + (o.oscore.endToEnd ? 1 : 0);
      if (n === 0) throw new RangeError('oscore needs a proxy and/or an endToEnd context');
      // OCP-07 §2.1: an outgoing request beyond the limit is not sent at all.
      const max = o.oscore.maxLayers ?? DEFAULT_MAX_LAYERS;
      if (n > max) throw new RangeError(`${n} OSCORE layers exceed the limit of ${max}`);
    }
    if (o.groupEtag) this.groupEtagKey = this.revalidationKey();
  }

  /**
   * The store's key: what makes two requests "identical" for the proxy's cache (the proxy, the target, method,
   * options and payload; RFC 7252 §5.6.2) and the end-to-end sender that protects them. Options only for the proxy
   * or this hop (Group-ETag, Multicast-Timeout, No-Response, Echo) are left out, as the proxy's Cache-Key leaves them.
   */
  private revalidationKey(): string {
    const o = this.o;
    const method = o.method ?? CODES.GET;
    // GCP-07 §7.3: Group-ETag is for GET and FETCH group requests; an observation is never served from a cache.
    if (method !== CODES.GET && method !== CODES.FETCH) throw new RangeError(`Group-ETag revalidation needs GET or FETCH, not ${codeToString(method)}`);
    if (this.observing) throw new RangeError('Group-ETag revalidation cannot be used with Observe');
    const getNum = optionNumber('Group-ETag');
    if ((o.options ?? []).some((x) => x.number === getNum)) throw new RangeError('Group-ETag options are added by the client\'s store: leave them out of the request');
    if (o.oscore?.endToEnd && !o.oscore.proxy) throw new RangeError('Group-ETag revalidation of a request protected end to end needs an OSCORE layer with the proxy (groupcomm-proxy-07 §10.3: the client-proxy association must provide integrity)');
    const skip = new Set<number>([getNum, optionNumber('Multicast-Timeout'), OPT.NO_RESPONSE, OPT.ECHO]);
    const h = createHash('sha256');
    const field = (b: Buffer | string) => {
      const v = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
      const len = Buffer.alloc(4);
      len.writeUInt32BE(v.length);
      h.update(len);
      h.update(v);
    };
    field(`${o.proxy.address}|${o.proxy.port}|${o.targetStyle ?? 'proxy-uri'}|${formatUri(this.uri)}|${method}`);
    for (const x of sortOptions((o.options ?? []).filter((x) => !skip.has(x.number)))) {
      field(String(x.number));
      field(x.value);
    }
    field(o.payload ?? Buffer.alloc(0));
    const e2e = o.oscore?.endToEnd?.context;
    field(e2e ? `${e2e.mode}|${e2e.senderId.toString('hex')}|${e2e.idContext?.toString('hex') ?? ''}` : 'plain');
    return h.digest('base64url');
  }

  get token(): Buffer {
    return this.currentToken;
  }

  get multicastTimeout(): number | undefined {
    return this.tPrime;
  }

  /** @internal */
  start(): this {
    this.send();
    this.timer = this.clock.setTimeout(() => this.onDeadline(), this.tMs);
    return this;
  }

  private buildRequest(token: Buffer): CoapMessage {
    const o = this.o;
    const opts: CoapOption[] = (o.options ?? []).slice();
    opts.push(...targetOptions(this.uri, o.targetStyle ?? 'proxy-uri', this.o.proxy.port));
    // GCP-07 §7.3: offer the Group-ETag of the set this client holds (class U end to end, so the proxy reads it; in
    // the layer for the proxy it travels Inner, oscore-capable-proxies-07 §2.2).
    this.offeredTag = this.groupEtagKey !== undefined && this.tPrime !== 0 ? o.groupEtag!.tagFor(this.groupEtagKey) : undefined;
    if (this.offeredTag) opts.push({ number: optionNumber('Group-ETag'), value: this.offeredTag });
    if (this.tPrime !== undefined) {
      opts.push({ number: optionNumber('Multicast-Timeout'), value: encodeUint(this.tPrime) });
      // GCP-07 §5.1.1 step 3: T' = 0 goes with No-Response 26.
      if (this.tPrime === 0 && !opts.some((x) => x.number === OPT.NO_RESPONSE)) opts.push({ number: OPT.NO_RESPONSE, value: encodeUint(26) });
    }
    const plain = createMessage({ type: o.confirmable === false ? 'NON' : 'CON', code: o.method ?? CODES.GET, token, messageId: this.endpoint.newMessageId(this.o.proxy), options: sortOptions(opts), payload: o.payload });
    const echo = this.o.oscore?.proxy ? undefined : this.echo;
    const out = this.protect(plain);
    if (!echo) return out;
    // RFC 9175 §2.4: the proxy asked this address to prove it is reachable: its Echo goes back once, as an option
    // for the proxy (outside any end-to-end layer; with a layer for the proxy it travels inside that layer instead).
    this.echo = undefined;
    return { ...out, options: sortOptions([...out.options, { number: OPT.ECHO, value: echo }]) };
  }

  /**
   * OCP-07 §2.3: the end-to-end layer first, then the proxy's. §2.2 decides the classes: Proxy-Uri (decomposed per
   * RFC 8613 §4.1.3.3), Multicast-Timeout and the like stay Outer end to end and become Inner for the proxy, as does
   * the end-to-end OSCORE option.
   */
  private protect(plain: CoapMessage): CoapMessage {
    const sec = this.o.oscore;
    if (!sec) return plain;
    const layers: RequestLayer[] = [];
    if (sec.endToEnd) layers.push({ context: sec.endToEnd.context, view: END_TO_END_VIEW, multipleResponses: true });
    if (sec.proxy) layers.push({ context: sec.proxy, view: CLIENT_TO_PROXY_VIEW, multipleResponses: true, ...(this.echo ? { addOptions: [{ number: OPT.ECHO, value: this.echo }] } : {}) });
    const { message, layers: applied } = protectRequestLayers(plain, layers, { maxLayers: sec.maxLayers });
    this.layers = { ...(sec.endToEnd ? { e2e: applied[0] } : {}), ...(sec.proxy ? { proxy: applied[applied.length - 1] } : {}) };
    this.e2eBindings = new Map();
    this.echo = undefined; // an Echo value is returned once
    return message as CoapMessage;
  }

  private send(): void {
    // answered by the proxy alone: a relayed response after the end gets a RST, so a unicast-kind token
    const token = this.endpoint.newToken(undefined, true);
    this.currentToken = token;
    this.request = this.buildRequest(token);
    this.unlisten = this.endpoint.listen(token, (res) => this.onRelayed(res), this.o.proxy);
    const confirmable = this.request.type === 'CON';
    this.endpoint.sendMessage(this.request, this.o.proxy, {
      // T' = 0 over CON: the proxy's empty ACK says it forwarded; a piggybacked answer (e.g. 4.01 with Echo,
      // RFC 9175 §2.4) goes to onRelayed, which may repeat the request.
      onAck: (ack) => {
        if (this.tPrime === 0 && ack.code === 0) this.finish();
      },
      onReset: () => this.fail(CODES.SERVICE_UNAVAILABLE, 'the proxy answered with RST'),
      onFail: (err) => this.fail(CODES.GATEWAY_TIMEOUT, err.message),
    });
    if (this.tPrime === 0 && !confirmable) {
      // Nothing will be relayed: the exchange is over once the request is out (the token stays retired). On the
      // next turn, so that whoever just called requestViaProxy() has attached its 'end' listener.
      setImmediate(() => this.finish());
    }
  }

  private get proxyUri(): string {
    return `coap://${this.o.proxy.address}:${this.o.proxy.port}`;
  }

  private onRelayed(incoming: IncomingResponse): void {
    if (this.ended) return;
    let res = incoming;
    const cp = this.layers?.proxy;
    let protectedByProxy = false;
    if (cp) {
      // OCP-07 §2.6: the proxy's layer comes off first.
      const raw = res.message;
      if (!isProtected(raw)) {
        // RFC 8613 §8.2: the proxy answers an OSCORE failure unprotected. It ends the exchange only as the first
        // answer; anything else unprotected is not trusted (§8.4).
        if (codeClass(raw.code) >= 4 && this.responses.length === 0) {
          return this.fail(raw.code, `${codeToString(raw.code)} from the proxy, unprotected${raw.payload.length ? `: ${raw.payload.toString('utf8')}` : ''}`, 'unprotected');
        }
        return this.reportError(this.proxyUri, new Error(`unprotected ${codeToString(raw.code)} from the proxy dropped`), 'oscore-unprotected');
      }
      try {
        res = { ...res, message: unprotectResponse(cp.binding, raw, { classE: proxyResponseClassE() }).message };
      } catch (err) {
        return this.reportError(this.proxyUri, err as Error, 'oscore');
      }
      protectedByProxy = true;
    }
    const m = res.message;
    const mtNum = optionNumber('Multicast-Timeout');
    const rfNum = optionDef('Reply-From')?.number;
    const lfNum = optionDef('Response-Forwarding')?.number;
    const relayed = (rfNum !== undefined && getOption(m, rfNum) !== undefined) || (lfNum !== undefined && getOption(m, lfNum) !== undefined);
    // GCP-07 §7.3: the proxy's own 2.03 validates the set this client holds.
    if (this.groupEtagKey !== undefined && !relayed && m.code === CODES.VALID) return this.onGroupValid(m, res.remote);
    if (!relayed && codeClass(m.code) >= 4 && this.responses.length === 0) {
      // An answer of the proxy itself.
      const mt = getOption(m, mtNum);
      const echo = getOption(m, OPT.ECHO);
      if (m.code === CODES.UNAUTHORIZED && echo !== undefined && (protectedByProxy || !this.o.oscore?.proxy) && !this.retriedEcho) {
        // RFC 8613 App. B.1.2: the proxy lost its replay window; repeat the request with its Echo (Inner, in its
        // layer). Without a layer for the proxy: RFC 9175 §2.4, the proxy verifies this address before fanning out.
        this.retriedEcho = true;
        this.echo = echo;
        return this.retry();
      }
      if (m.code === CODES.BAD_REQUEST && mt !== undefined && mt.length === 0 && this.tPrime === undefined && this.o.retryOn400 !== false && !this.retried400) {
        // GCP-07 §6.1: a reverse proxy revealed itself; retry with Multicast-Timeout.
        this.retried400 = true;
        this.tPrime = Math.max(1, defaultMulticastTimeout(this.tMs) - 1);
        return this.retry();
      }
      if (m.code === CODES.PROXYING_NOT_SUPPORTED && mt !== undefined && this.o.retryOn505 !== false) {
        // GCP-07 §8.1: retry with T' > old value and >= the minimum, if it still fits under T.
        const min = decodeUint(mt);
        const next = Math.max(min, (this.tPrime ?? 0) + 1);
        if (next * 1000 < this.tMs - 500) {
          this.tPrime = next;
          return this.retry();
        }
        return this.fail(m.code, `the proxy chain needs Multicast-Timeout >= ${min} s, which does not fit the client timeout of ${this.tMs} ms`);
      }
      return this.fail(m.code, m.payload.length ? m.payload.toString('utf8') : `the proxy answered ${codeToString(m.code)}`, protectedByProxy ? 'protected' : undefined);
    }
    // what the caps worked out before the end-to-end layer came off (see ResponseStream.overCap())
    let subject: CapSubject | undefined;
    try {
      if (this.layers?.e2e) {
        // over a cap already: dropped before the end-to-end layer is removed (a signature checked), so a flood
        // costs no verifications
        const o = this.originOf(res);
        subject = this.capSubject(o);
        const over = this.overCap(subject);
        if (over) return this.limitDrop(over, o.uri);
        const inner = this.removeEndToEnd(res);
        if (!inner) return;
        res = inner;
      }
      // OCP-07 §2.6: an OSCORE option left after all the layers this client added: stop.
      if (this.o.oscore && isProtected(res.message)) {
        return this.reportError(this.originOf(res).uri, new Error('response carries more OSCORE layers than the request'), 'oscore');
      }
      if (this.observing && codeClass(res.message.code) === 2 && getOption(res.message, OPT.OBSERVE) !== undefined) this.keepForObserve = true;
      // the origin after the end-to-end layer came off is the one checked above: Reply-From is an outer option
      this.onResponse(res, subject);
    } catch (err) {
      if (err instanceof CborStructureError) this.reportError(originUri(res.remote.address, res.remote.port), err, 'bad-reply-from');
      else throw err;
    }
  }

  /**
   * GCP-07 §7.3: "the 2.03 (Valid) response from the proxy indicates to the client that the stored responses
   * identified by the entity-tag given in the response's Group-ETag Option can be reused, after updating each of them
   * as described in Section 5.9.1.3 of RFC7252". Only a 2.03 with exactly one Group-ETag, equal to the one offered
   * and still stored, is taken; its Max-Age (or the default 60 s) refreshes each stored response, which is then
   * delivered again as it was accepted (verified end to end, attributed to its server). Nothing of the 2.03 but its
   * Max-Age and Group-ETag is used. The proxy sends a single 2.03, so the exchange ends here.
   */
  private onGroupValid(m: CoapMessage, remote: RemoteAddress): void {
    const store = this.o.groupEtag!;
    const key = this.groupEtagKey!;
    const tags = getOptions(m, optionNumber('Group-ETag'));
    const refuse = (why: string) => {
      // Not delivered; the set is forgotten, so the next request fetches full responses. The 2.03 is the proxy's
      // one answer (it came through the proxy's layer, when there is one): nothing else follows, so the exchange ends.
      store.delete(key);
      this.proxyErrors.push({ code: '2.03', message: why });
      this.reportError(this.proxyUri, new Error(why), 'group-etag');
      this.finish();
    };
    if (this.responses.length > 0) return refuse('2.03 (Valid) from the proxy after responses were relayed: refused');
    if (tags.length !== 1) return refuse(`2.03 (Valid) from the proxy with ${tags.length} Group-ETag options (groupcomm-proxy-07 §7.3: exactly one): refused`);
    if (!this.offeredTag) return refuse(`2.03 (Valid) from the proxy with Group-ETag ${tags[0].toString('hex')}, but this request offered none (nothing stored): refused`);
    if (!tags[0].equals(this.offeredTag)) return refuse(`2.03 (Valid) from the proxy with Group-ETag ${tags[0].toString('hex')}, not the one offered (${this.offeredTag.toString('hex')}): refused`);
    const maxAge = maxAgeSeconds(m);
    if (maxAge === undefined) return refuse('2.03 (Valid) from the proxy with a malformed Max-Age: refused');
    const stored = store.revalidate(key, tags[0], maxAge, optionNumber('Group-ETag'));
    if (!stored) return refuse(`2.03 (Valid) from the proxy with Group-ETag ${tags[0].toString('hex')}, but the set it names is no longer stored: refused`);
    this.revalidated = true;
    for (const r of stored) {
      const gr: RevalidatedResponse = { message: { ...r.message, token: this.currentToken }, remote, origin: r.origin, index: ++this.arrivals, revalidated: true };
      this.responses.push(gr);
      this.emit('response', gr);
    }
    this.finish();
  }

  /**
   * At the end: the responses of this exchange become the stored set when the proxy tagged every one of them with the
   * same single Group-ETag (it served a complete set J, §7.3) and nothing was refused; other responses make a stored
   * set outdated, so it is forgotten. An exchange that got no response leaves the store as it was.
   */
  private keepForRevalidation(): void {
    if (this.groupEtagKey === undefined || this.revalidated || this.responses.length === 0) return;
    const store = this.o.groupEtag!;
    const getNum = optionNumber('Group-ETag');
    let tag: Buffer | undefined;
    // a set a cap cut short is not the proxy's complete set J (§7.3): never kept
    let tagged = !this.cancelled && this.rejected === 0 && this.dropped === 0 && !this.errors?.length;
    for (const r of this.responses) {
      const t = getOptions(r.message, getNum);
      if (t.length !== 1 || (tag && !tag.equals(t[0]))) tagged = false;
      tag ??= t[0];
    }
    if (tagged && tag) store.put(this.groupEtagKey, tag, this.responses);
    else store.delete(this.groupEtagKey);
  }

  /**
   * GCP-07 §5.5 steps 2-3: the end-to-end layer of one server's response, with that server's Recipient Context.
   * Bindings are per context, so each source gets at most one response without Partial IV (OCP-07 §2.6.1), and with
   * a context shared by several servers a repeated (key, nonce) is refused as a replay.
   */
  private removeEndToEnd(res: IncomingResponse): IncomingResponse | undefined {
    const e2e = this.layers!.e2e!;
    const origin = this.originOf(res); // Reply-From, read after the proxy's layer came off
    if (!isProtected(res.message)) {
      // Not verifiable end to end, so not delivered: e.g. the server's RFC 8613 §8.2 error, or the proxy's 5.02 for
      // this server (OCP-07 §2.2). Reported with its code.
      const m = res.message;
      this.reportError(origin.uri, new Error(`${codeToString(m.code)} without end-to-end protection${m.payload.length ? `: ${m.payload.toString('utf8')}` : ''}`), codeToString(m.code));
      return undefined;
    }
    let kid: Buffer | undefined;
    try {
      kid = decodeOscoreOption(getOption(res.message, OPT.OSCORE)!).kid;
    } catch {
      kid = undefined; // unprotectResponse reports the decoding error
    }
    const ctx = this.o.oscore!.endToEnd!.responder?.(origin, kid) ?? e2e.context;
    let binding = this.e2eBindings.get(ctx);
    if (!binding) {
      binding = ctx === e2e.context ? e2e.binding : rebindResponses(e2e.binding, ctx);
      this.e2eBindings.set(ctx, binding);
    }
    try {
      // RFC 10021 §8.4: attributed to the member whose credential verified it (kept on the origin).
      const v = unprotectResponse(binding, res.message);
      return { ...res, message: v.message, oscore: { kid: v.responder.recipientId.toString('hex'), mode: v.responder.mode } } as VerifiedIncoming;
    } catch (err) {
      this.rejected++;
      this.reportError(origin.uri, err as Error, 'oscore');
      return undefined;
    }
  }

  protected originOf(res: VerifiedIncoming): Origin {
    const origin = originFromRelayed(res.message, res.remote, this.uri.port);
    return res.oscore ? { ...origin, oscore: res.oscore } : origin;
  }

  protected fetchBlock(_first: IncomingResponse, origin: Origin, options: CoapOption[]): Promise<IncomingResponse> {
    // Through the proxy, as a unicast forward-proxy request to that server.
    // RFC 9175 §2.4: the proxy verifies this address before it forwards; the group request did so, unless that
    // verification has since run out, so a 4.01 with Echo is answered here too.
    const path = this.uri.path;
    const opts = options.filter((x) => ![OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, optionNumber('Multicast-Timeout')].includes(x.number as never));
    const [host, zone] = origin.address.split('%');
    const server = parseUri(formatUri({ scheme: 'coap', host, zone, port: origin.port, path, query: this.uri.query }));
    if (origin.via) {
      // Reverse case 1: Uri-Host names the server (an IPv6 literal in brackets, RFC 7252 §6.4), Uri-Port always.
      opts.push(...targetOptions(server, 'reverse'));
      const via = { address: origin.via.address, port: origin.via.port };
      return answeringEcho((echo) => this.endpoint.request({ code: this.request.code, options: sortOptions([...opts, ...echo]) }, via, { confirmable: true }));
    }
    opts.push(...targetOptions(server, 'proxy-uri'));
    return answeringEcho((echo) => this.endpoint.request({ code: this.request.code, options: sortOptions([...opts, ...echo]) }, this.o.proxy, { confirmable: true }));
  }

  private retry(): void {
    this.unlisten?.();
    try {
      this.send();
    } catch (err) {
      // e.g. the sequence number store failed: nothing was sent.
      this.fail(CODES.INTERNAL_SERVER_ERROR, (err as Error).message);
    }
  }

  private onDeadline(): void {
    this.timer = undefined;
    // GCP-07 §5.5.2: keep the token while an observation is active.
    if (this.keepForObserve) return;
    this.finish();
  }

  private fail(code: number, message: string, oscore?: 'protected' | 'unprotected'): void {
    this.proxyErrors.push({ code: codeToString(code), message, ...(oscore ? { oscore } : {}) });
    this.reportError(`coap://${this.o.proxy.address}:${this.o.proxy.port}`, new Error(message), codeToString(code));
    this.finish();
  }

  private finish(): void {
    if (this.collecting) this.keepForRevalidation();
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.unlisten?.();
    this.unlisten = undefined;
    this.stopCollecting();
  }

  /**
   * Stop now (GCP-07 §5.1.3, option B): send the Early Stop Request (GET, same token, Multicast-Timeout 0, no
   * forwarding information) and free the exchange; the token stays retired.
   */
  cancel(): void {
    if (this.ended) return;
    this.cancelled = true;
    this.pendingFollowUps = 0;
    let stop = createMessage({ type: 'NON', code: CODES.GET, token: this.currentToken, messageId: this.endpoint.newMessageId(this.o.proxy), options: [{ number: optionNumber('Multicast-Timeout'), value: Buffer.alloc(0) }] });
    try {
      // The Early Stop Request is for the proxy alone: only its layer (it identifies the client by it).
      const ctx = this.o.oscore?.proxy;
      if (ctx) stop = protectRequestLayers(stop, [{ context: ctx, view: CLIENT_TO_PROXY_VIEW }]).message;
      this.endpoint.sendMessage(stop, this.o.proxy);
    } catch (err) {
      this.reportError(this.proxyUri, err as Error, 'oscore');
    }
    this.finish();
  }
}

export function requestViaProxy(endpoint: CoapEndpoint, opts: ProxiedRequestOptions): ProxiedGroupExchange {
  return new ProxiedGroupExchange(endpoint, opts).start();
}

export interface UnicastViaProxyOptions {
  proxy: RemoteAddress;
  /** the server's URI */
  uri: string | CoapUri;
  targetStyle?: TargetStyle;
  method?: number;
  options?: CoapOption[];
  payload?: Buffer;
  confirmable?: boolean;
  timeout?: number;
}

/**
 * One unicast request through a proxy (RFC 7252 §5.7), the target named by the one encoder (target.ts). A 4.01
 * with Echo (RFC 9175 §2.4: the proxy verifies this address) is answered once by repeating the request with it.
 */
export async function requestUnicastViaProxy(endpoint: CoapEndpoint, o: UnicastViaProxyOptions): Promise<IncomingResponse> {
  const uri = typeof o.uri === 'string' ? parseUri(o.uri) : o.uri;
  const options = [...(o.options ?? []), ...targetOptions(uri, o.targetStyle ?? 'proxy-uri', o.proxy.port)];
  return answeringEcho((extra) => endpoint.request({ code: o.method ?? CODES.GET, options: sortOptions([...options, ...extra]), payload: o.payload }, o.proxy, { confirmable: o.confirmable !== false, timeout: o.timeout }));
}

/**
 * RFC 9175 §2.4: a proxy that has not yet verified this address answers 4.01 with Echo and forwards nothing; the
 * request is sent again once, carrying that Echo. `send` gets the extra options (none, then the Echo).
 */
export async function answeringEcho(send: (extra: CoapOption[]) => Promise<IncomingResponse>): Promise<IncomingResponse> {
  const res = await send([]);
  const echo = getOption(res.message, OPT.ECHO);
  if (res.message.code === CODES.UNAUTHORIZED && echo !== undefined) return send([{ number: OPT.ECHO, value: echo }]);
  return res;
}
