// Group server (groupcomm-bis §3.1, §3.6, §3.8 / RFC 10020; RFC 7252 §8.2): serves resources on its own unicast
// address and on group receivers; answers a group request from the unicast address after a random Leisure,
// suppresses error responses to group requests (per response-code class, §3.1.2), honours No-Response where the
// resource allows it (RFC 7967), validates ETags in group requests (§3.2) and starts Block2 on its own for large
// bodies (§3.8). Also serves /.well-known/core (RFC 6690) and Observe (RFC 7641, with RFC 10020 §3.7 for
// registrations made by group requests); an observer registering with a Deterministic Request proves its address
// with Echo first (draft-ietf-core-cacheable-oscore §3.1, RFC 9175 §2.4 item 3).

import { blockSize, decodeBlock, encodeBlock, szxFor } from '../coap/block';
import { CODES, codeClass } from '../coap/codes';
import { isResponseError } from '../coap/errors';
import { CoapMessage, CoapOption, getOption, getOptions, uriPath } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { EchoOptions, EchoVerifier } from '../messaging/echo-verifier';
import { CoapEndpoint, EndpointOptions, IncomingRequest, ResponseContext } from '../messaging/endpoint';
import { Clock } from '../messaging/parameters';
import { isDeterministicRequest } from '../oscore/group/deterministic';
import { GroupMembership, UdpTransport, UdpTransportOptions } from '../transport/udp-transport';

export interface ServerRequest extends IncomingRequest {
  path: string;
  query: string[];
  /** set when the handler runs to produce a notification for a stored Observe registration */
  notification?: boolean;
}

export interface ServerResponse {
  code?: number;
  payload?: Buffer | string;
  options?: CoapOption[];
  contentFormat?: number;
  /** entity tag of the representation; a matching ETag in a GET/FETCH gives 2.03 (RFC 7252 §5.10.6) */
  etag?: Buffer;
  /** send as a separate, confirmable response (after an empty ACK for a CON request) */
  separate?: boolean;
}

export type ResourceHandler = (req: ServerRequest) => ServerResponse | undefined | Promise<ServerResponse | undefined>;

/** A response as a request transform sees it. */
export interface ResponseParts {
  code: number;
  options: CoapOption[];
  payload: Buffer;
}

/**
 * Runs on every request before it reaches a resource, e.g. to remove OSCORE layers: either the request to serve
 * plus how to turn each of its responses into what is sent (e.g. protect it), or `reject` with the response to send
 * instead (undefined: none; for group requests rejections are suppressed like other errors, §3.1.2). `challenge`
 * marks a reject that is the RFC 10021 §9 protected 4.01 + Echo, which is sent to group requests too.
 */
export type RequestTransform = (req: IncomingRequest) => { request: IncomingRequest; protect?: ResponseProtector } | { reject: ResponseParts | undefined; challenge?: boolean };

/**
 * Turns a response into what is sent. `hints.observable`: the resource accepts Observe registrations (a response to a
 * Deterministic Request with only an Inner Observe then carries an Inner Observe, draft-ietf-core-cacheable-oscore-02
 * §3.4.4 step 3).
 */
export type ResponseProtector = (res: ResponseParts, hints?: { observable?: boolean }) => ResponseParts;

export interface ResourceOptions {
  /** link attributes for /.well-known/core, e.g. { rt: 'light', if: 'core.a' } */
  attributes?: Record<string, string | true>;
  /** answer error codes to group requests too (default false: suppress 4.xx and 5.xx, §3.1.2) */
  answerGroupErrors?: boolean;
  /** honour the No-Response option (RFC 7967) on this resource (groupcomm-bis §3.1.2: only when predetermined) */
  honorNoResponse?: boolean;
  /** accept Observe registrations (RFC 7641; RFC 10020 §3.7 for group registrations); see notify() */
  observable?: boolean;
}

interface Observer {
  key: string;
  path: string;
  remote: { address: string; port: number };
  token: Buffer;
  request: ServerRequest;
  /** registered by a group request: notifications wait a leisure too (RFC 10020 §3.7) */
  viaGroup: boolean;
  protect?: ResponseProtector;
}

export interface GroupServerOptions extends EndpointOptions {
  /** unicast address the server answers from, e.g. 127.0.0.2 */
  address: string;
  /** unicast port (default 5683; 0 = ephemeral) */
  port?: number;
  /** groups this server is a member of */
  groups: GroupMembership[];
  /** Leisure in ms: a group response waits a uniform random time in [0, leisure) (RFC 7252 §8.2). Default 5000 */
  leisure?: number;
  /** largest payload sent in one message before Block2 starts (default 1024) */
  maxPayload?: number;
  /** most Observe registrations kept per resource (default 10000) */
  maxObservers?: number;
  transport?: Omit<UdpTransportOptions, 'bindAddress' | 'port' | 'groups'>;
  /** see RequestTransform (default: none, requests reach the resources as received) */
  requestTransform?: RequestTransform;
  /**
   * How an observer that registers with a Deterministic Request proves its address with Echo first (RFC 9175 §2.4
   * item 3, draft-ietf-core-cacheable-oscore §3.1; interval, lifetime, bounds). Default on with EchoVerifier's
   * defaults. `false` registers such observers unchecked: whoever saw one registration can then register observers
   * for any address it spoofs (a Deterministic Request has no replay window, §3.4.3).
   */
  observerEcho?: EchoOptions | false;
}

export interface ServerCounters {
  requests: number;
  groupRequests: number;
  suppressed: number;
  responses: number;
  /** group requests ignored because they carried Q-Block2 (RFC 10020 §3.8) */
  ignoredQBlock2: number;
  /** 4.01 + Echo sent instead of registering an observer whose address is not verified (RFC 9175 §2.4) */
  echoChallenges: number;
}

interface Resource {
  handler: ResourceHandler;
  opts: ResourceOptions;
}

export class GroupServer {
  readonly counters: ServerCounters = { requests: 0, groupRequests: 0, suppressed: 0, responses: 0, ignoredQBlock2: 0, echoChallenges: 0 };
  private readonly resources = new Map<string, Resource>();
  private readonly timers = new Set<unknown>();
  /** the clock of the Leisure timers (EndpointOptions.clock, shared with the endpoint) */
  readonly clock: Clock;
  private readonly observers = new Map<string, Map<string, Observer>>();
  /** verifies the address of an observer registering with a Deterministic Request (undefined: observerEcho false) */
  private readonly observerEcho?: EchoVerifier;
  private observeSeq = 2;
  private closed = false;

  private constructor(
    readonly endpoint: CoapEndpoint,
    private readonly leisure: number,
    private readonly maxPayload: number,
    private readonly transform?: RequestTransform,
    private readonly maxObservers = 10_000,
    observerEcho: EchoOptions | false = {},
  ) {
    this.clock = endpoint.clock;
    this.observerEcho = observerEcho === false ? undefined : new EchoVerifier({ clock: this.clock, ...observerEcho });
    endpoint.setRequestHandler((req, ctx) => this.handle(req, ctx));
  }

  static async open(opts: GroupServerOptions): Promise<GroupServer> {
    const transport = await UdpTransport.open({ ...opts.transport, bindAddress: opts.address, port: opts.port ?? 5683, groups: opts.groups, reuseAddr: true });
    const endpoint = new CoapEndpoint(transport, opts);
    return new GroupServer(endpoint, opts.leisure ?? endpoint.params.DEFAULT_LEISURE, opts.maxPayload ?? 1024, opts.requestTransform, opts.maxObservers, opts.observerEcho);
  }

  /** The server's unicast address and port. */
  address(): { address: string; port: number } {
    return this.endpoint.transport.address();
  }

  addResource(path: string, handler: ResourceHandler, opts: ResourceOptions = {}): this {
    this.resources.set(normalize(path), { handler, opts });
    return this;
  }

  removeResource(path: string): void {
    this.resources.delete(normalize(path));
    this.observers.delete(normalize(path));
  }

  observerCount(path: string): number {
    return this.observers.get(normalize(path))?.size ?? 0;
  }

  /** Remove and return the traditional observers of a resource (e.g. to move them into a group observation). */
  takeObservers(path: string): { remote: { address: string; port: number }; token: Buffer }[] {
    const m = this.observers.get(normalize(path));
    if (!m) return [];
    this.observers.delete(normalize(path));
    return [...m.values()].map((o) => ({ remote: o.remote, token: o.token }));
  }

  private removeObserver(key: string): void {
    for (const m of this.observers.values()) m.delete(key);
  }

  /**
   * The resource changed: send a notification to every observer (RFC 7641 §4.2), produced by the resource's
   * handler as for a GET. Every 10th notification is confirmable, to check the observer is still there (§4.5).
   */
  notify(path: string): void {
    const p = normalize(path);
    const obs = this.observers.get(p);
    const resource = this.resources.get(p);
    if (!obs || !resource) return;
    const seq = this.nextObserveSeq();
    for (const o of [...obs.values()]) {
      Promise.resolve()
        .then(() => resource.handler({ ...o.request, notification: true }))
        .then((res) => {
          if (this.closed || !res || !obs.has(o.key)) return;
          const code = res.code ?? CODES.CONTENT;
          let built = this.buildResponse(o.request.message, res, code);
          if (codeClass(code) === 2) built.options.push({ number: OPT.OBSERVE, value: encodeUint(seq) });
          else obs.delete(o.key); // a non-2.xx notification ends the observation (RFC 7641 §4.2)
          if (o.protect) built = o.protect(built);
          const type = seq % 10 === 0 ? 'CON' : 'NON';
          const msg = { type, code: built.code, messageId: this.endpoint.newMessageId(o.remote), token: o.token, options: built.options, payload: built.payload } as const;
          const send = () => {
            if (this.closed) return;
            // RFC 7641 §3.6: a RST to a notification (CON or NON) cancels that observation; the endpoint matches the
            // RST to this message by Message ID and the observer's address, so no one else can cancel it.
            this.endpoint.sendMessage({ ...msg, options: [...msg.options].sort((a, b) => a.number - b.number) }, o.remote, {
              onReset: () => obs.delete(o.key),
              onFail: () => obs.delete(o.key),
            });
          };
          if (o.viaGroup && this.leisure > 0) this.later(send, Math.random() * this.leisure);
          else send();
        })
        .catch((err) => this.endpoint.reportHandlerError(err));
    }
  }

  private nextObserveSeq(): number {
    this.observeSeq = (this.observeSeq + 1) & 0xffffff;
    return this.observeSeq;
  }

  private later(fn: () => void, ms: number): void {
    const t = this.clock.setTimeout(() => {
      this.timers.delete(t);
      if (this.closed) return;
      try {
        fn();
      } catch (err) {
        this.endpoint.reportHandlerError(err);
      }
    }, ms);
    this.timers.add(t);
  }

  private linkFormat(): string {
    return [...this.resources.entries()]
      .map(([path, r]) => {
        const attrs = Object.entries(r.opts.attributes ?? {}).map(([k, v]) => (v === true ? `;${k}` : `;${k}="${v}"`));
        return `<${path}>${attrs.join('')}`;
      })
      .join(',');
  }

  private handle(incoming: IncomingRequest, ctx: ResponseContext): void {
    this.counters.requests++;
    if (incoming.multicast) {
      this.counters.groupRequests++;
      // RFC 10020 §3.8 (after RFC 9177 §4): a server ignores a group request that carries Q-Block2.
      if (getOption(incoming.message, optionNumber('Q-Block2')) !== undefined) {
        this.counters.ignoredQBlock2++;
        return ctx.ignore();
      }
    }
    let req = incoming;
    let protect: ResponseProtector | undefined;
    if (this.transform) {
      const t = this.transform(incoming);
      if ('reject' in t) {
        const reject = t.reject;
        if (reject && !incoming.multicast) return ctx.respond(reject);
        // RFC 10021 §9: a server whose replay window for the client is invalid answers even a group request with
        // the protected 4.01 + Echo (its own Partial IV); suppressing it would leave the window invalid for good.
        if (reject && t.challenge) {
          if (this.leisure > 0) this.later(() => ctx.respond(reject), Math.random() * this.leisure);
          else ctx.respond(reject);
          return;
        }
        this.counters.suppressed++;
        return ctx.ignore();
      }
      req = t.request;
      protect = t.protect;
    }
    const path = uriPath(req.message);
    const query = getOptions(req.message, OPT.URI_QUERY).map((q) => q.toString('utf8'));
    const resource = this.resources.get(path);
    if (resource?.opts.observable && this.observerEcho && this.unverifiedObserver(incoming, req.message)) return this.challengeObserver(incoming, ctx);
    const sreq: ServerRequest = { ...req, path, query };
    const produce = async (): Promise<ServerResponse | undefined> => {
      if (path === '/.well-known/core' && !resource) {
        return { code: CODES.CONTENT, contentFormat: 40, payload: this.linkFormat() };
      }
      if (!resource) return { code: CODES.NOT_FOUND };
      return resource.handler(sreq);
    };
    Promise.resolve()
      .then(produce)
      .then(
        (res) => this.reply(sreq, ctx, res, resource?.opts ?? {}, protect),
        (err) => {
          // A CoapResponseError becomes its response; anything else (or a noResponse one) an empty 5.00, reported
          // (the message stays internal).
          if (isResponseError(err)) {
            const r = err.toResponse();
            return this.reply(sreq, ctx, { code: r.code, options: r.options, payload: r.payload }, resource?.opts ?? {}, protect);
          }
          this.endpoint.reportHandlerError(err);
          this.reply(sreq, ctx, { code: CODES.INTERNAL_SERVER_ERROR }, resource?.opts ?? {}, protect);
        },
      )
      .catch((err) => {
        // An option value too long to read as a uint (decodeUint's RangeError) is the client's fault: 4.02
        // (RFC 7252 §5.4.3). Anything else is a fault of ours and counted. Never crash either way.
        if (!(err instanceof RangeError)) this.endpoint.reportHandlerError(err);
        if (req.multicast) ctx.ignore();
        else ctx.respond({ code: CODES.BAD_OPTION, payload: Buffer.from('malformed option value') });
      });
  }

  /**
   * draft-ietf-core-cacheable-oscore §3.4.3: a Deterministic Request has no replay window, so whoever saw one that
   * registers (Inner and Outer Observe 0, §3.1) can send it again from any address it spoofs, and every such
   * observer would cost a signed notification towards an address that never asked. So the address proves it is
   * reachable first, with the Outer Echo that §3.1 keeps for this (RFC 9175 §2.4 item 3): true when this
   * registration comes from an address not verified within the interval and does not carry a valid Echo from it.
   */
  private unverifiedObserver(incoming: IncomingRequest, message: CoapMessage): boolean {
    if (message.code !== CODES.GET && message.code !== CODES.FETCH) return false;
    const obs = getOption(message, OPT.OBSERVE);
    if (obs === undefined || obs.length > 3 || decodeUint(obs) !== 0 || !isDeterministicRequest(incoming.message)) return false;
    // the Outer Echo (RFC 9175 §2.2.1: for this hop), read from the datagram: the OSCORE layer does not pass it on
    return !this.observerEcho!.check(incoming.remote, getOption(incoming.message, OPT.ECHO));
  }

  /**
   * RFC 9175 §2.4 item 3: an unprotected 4.01 with Echo and nothing registered; the handler does not run. It is
   * smaller than the request (which carries a Request-Hash and a ciphertext), and it is sent to a group request too
   * (after a Leisure), since every server verifies the address for itself: N servers answer one replayed group
   * request with N challenges (README, "Observers prove their address first").
   */
  private challengeObserver(incoming: IncomingRequest, ctx: ResponseContext): void {
    this.counters.echoChallenges++;
    const res = { code: CODES.UNAUTHORIZED, options: [{ number: OPT.ECHO, value: this.observerEcho!.challenge(incoming.remote) }], payload: Buffer.alloc(0) };
    if (incoming.multicast && this.leisure > 0) this.later(() => ctx.respond(res), Math.random() * this.leisure);
    else ctx.respond(res);
  }

  private reply(req: ServerRequest, ctx: ResponseContext, res: ServerResponse | undefined, opts: ResourceOptions, protect?: ResponseProtector): void {
    if (this.closed) return;
    if (!res) {
      this.counters.suppressed++;
      return ctx.ignore();
    }
    const code = res.code ?? CODES.CONTENT;
    // groupcomm-bis §3.1.2: suppress error responses to group requests unless the resource says otherwise.
    if (req.multicast && codeClass(code) >= 4 && !opts.answerGroupErrors) {
      this.counters.suppressed++;
      return ctx.ignore();
    }
    // RFC 7967: No-Response bits 2/8/16 suppress 2.xx/4.xx/5.xx.
    if (opts.honorNoResponse) {
      const nr = getOption(req.message, OPT.NO_RESPONSE);
      if (nr !== undefined && decodeUint(nr) & (1 << (codeClass(code) - 1))) {
        this.counters.suppressed++;
        return ctx.ignore();
      }
    }
    const message = this.buildResponse(req.message, res, code);
    const obs = getOption(req.message, OPT.OBSERVE);
    if (opts.observable && obs !== undefined && (req.message.code === CODES.GET || req.message.code === CODES.FETCH)) {
      const key = `${req.remote.address}|${req.remote.port}|${req.message.token.toString('hex')}`;
      const value = decodeUint(obs);
      if (value === 1) this.removeObserver(key);
      else if (value === 0 && codeClass(code) === 2 && (this.observers.get(req.path)?.size ?? 0) < this.maxObservers) {
        // RFC 7641 §3.1 / RFC 10020 §3.7: register, and answer with the Observe option. Beyond maxObservers the
        // request is simply answered without Observe (§4.1: the client then knows it is not registered).
        let m = this.observers.get(req.path);
        if (!m) this.observers.set(req.path, (m = new Map()));
        m.set(key, { key, path: req.path, remote: req.remote, token: req.message.token, request: req, viaGroup: req.multicast, protect });
        message.options.push({ number: OPT.OBSERVE, value: encodeUint(this.nextObserveSeq()) });
      }
    }
    const send = () => {
      let out = message;
      if (protect) {
        try {
          out = protect(message, { observable: opts.observable === true });
        } catch (err) {
          this.endpoint.reportHandlerError(err);
          return ctx.ignore();
        }
      }
      this.counters.responses++;
      ctx.respond(out, { separate: res.separate });
    };
    // RFC 7252 §8.2: pick a random point within the Leisure before answering a multicast request.
    if (req.multicast && this.leisure > 0) this.later(send, Math.random() * this.leisure);
    else send();
  }

  private buildResponse(request: CoapMessage, res: ServerResponse, code: number): { code: number; options: CoapOption[]; payload: Buffer } {
    const options: CoapOption[] = [...(res.options ?? [])];
    let payload = typeof res.payload === 'string' ? Buffer.from(res.payload, 'utf8') : res.payload ?? Buffer.alloc(0);
    if (res.contentFormat !== undefined) options.push({ number: OPT.CONTENT_FORMAT, value: encodeUint(res.contentFormat) });
    if (res.etag) {
      options.push({ number: OPT.ETAG, value: res.etag });
      const offered = getOptions(request, OPT.ETAG);
      if (code === CODES.CONTENT && offered.some((e) => e.equals(res.etag!))) {
        // RFC 7252 §5.10.6.2, groupcomm-bis §3.2: the client's copy is valid.
        return { code: CODES.VALID, options: options.filter((o) => o.number !== OPT.CONTENT_FORMAT), payload: Buffer.alloc(0) };
      }
    }
    // Block2 (RFC 7959 §2.4; groupcomm-bis §3.8: servers start it on their own for large bodies).
    const requested = getOption(request, OPT.BLOCK2);
    const want = requested ? decodeBlock(requested) : undefined;
    if (codeClass(code) === 2 && (want || payload.length > this.maxPayload)) {
      const szx = Math.min(want?.szx ?? 6, szxFor(this.maxPayload));
      const size = blockSize(szx);
      const num = want ? want.num * (blockSize(want.szx) / size) : 0;
      const start = num * size;
      if (start >= payload.length && payload.length > 0) return { code: CODES.BAD_OPTION, options: [], payload: Buffer.from('block out of range') };
      const more = start + size < payload.length;
      if (want || more) {
        options.push({ number: OPT.BLOCK2, value: encodeBlock({ num, more, szx }) });
        if (num === 0 && more) options.push({ number: OPT.SIZE2, value: encodeUint(payload.length) });
        payload = payload.subarray(start, start + size);
      }
    }
    return { code, options, payload };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    await this.endpoint.close();
  }
}

function normalize(path: string): string {
  return '/' + path.split('/').filter((s) => s.length > 0).join('/');
}
