// Client side of group requests through a proxy (groupcomm-proxy-07 §5.1, §5.5, §6, §8): one unicast request to
// the proxy carrying the group URI (Proxy-Uri, or Proxy-Scheme + Uri-*, or a reverse-proxy name) and
// Multicast-Timeout T' < T; each relayed response's origin read from Reply-From (or the legacy
// Response-Forwarding); reactions to 4.00 with an empty Multicast-Timeout, 5.05 with a minimum T', and 4.01; the
// Early Stop Request; Observe notifications kept until cancelled.

import { CborStructureError, CriAuthority, decodeReplyFrom, decodeResponseForwarding } from '../cbor/cri';
import { CODES, codeClass, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionDef, optionNumber } from '../coap/options';
import { CoapUri, formatUri, originUri, parseUri, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { RemoteAddress } from '../transport/udp-transport';
import { Origin, ResponseStream } from '../group/group-client';

export type TargetStyle = 'proxy-uri' | 'proxy-scheme' | 'reverse';

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
}

/** Origin of a relayed response, from Reply-From (CRI) or Response-Forwarding (tp_info). */
export function originFromRelayed(m: CoapMessage, remote: RemoteAddress, groupPort?: number): Origin {
  const rfNum = optionDef('Reply-From')?.number;
  const rf = rfNum !== undefined ? getOption(m, rfNum) : undefined;
  if (rf) {
    const { target, reference } = decodeReplyFrom(rf);
    if (reference) {
      // Case 1: the proxy stands in for each server; follow-ups go to `target` with Uri-Host/Uri-Port of `reference`.
      const via = authorityOrigin(target);
      return { ...authorityOrigin({ ...reference, scheme: target.scheme }), via };
    }
    return authorityOrigin(target);
  }
  const legacyNum = optionDef('Response-Forwarding')?.number;
  const legacy = legacyNum !== undefined ? getOption(m, legacyNum) : undefined;
  if (legacy) {
    const { address, port } = decodeResponseForwarding(legacy, groupPort);
    return { address, port, uri: originUri(address, port) };
  }
  return { address: remote.address, port: remote.port, uri: originUri(remote.address, remote.port), unverified: true };
}

function authorityOrigin(a: CriAuthority): Origin {
  const port = a.port ?? 5683;
  const address = a.zone ? `${a.host}%${a.zone}` : a.host;
  return { address, port, uri: formatUri({ scheme: a.scheme ?? 'coap', host: a.host, zone: a.zone, port }) };
}

export class ProxiedGroupExchange extends ResponseStream {
  private currentToken!: Buffer;
  private unlisten?: () => void;
  private timer?: NodeJS.Timeout;
  private observing: boolean;
  private keepForObserve = false;
  private tPrime: number | undefined;
  private readonly tMs: number;
  private retried400 = false;
  private readonly uri: CoapUri;
  /** proxy's own errors, e.g. 4.01 or 5.05 that could not be retried */
  readonly proxyErrors: { code: string; message: string }[] = [];

  constructor(
    endpoint: CoapEndpoint,
    private readonly o: ProxiedRequestOptions,
  ) {
    super(endpoint, createMessage({ code: o.method ?? CODES.GET }), { followBlocks: o.followBlocks ?? true, maxBodySize: o.maxBodySize ?? 1 << 20 });
    this.uri = typeof o.uri === 'string' ? parseUri(o.uri) : o.uri;
    this.tPrime = o.multicastTimeout;
    this.tMs = o.timeout ?? (o.multicastTimeout !== undefined ? o.multicastTimeout * 1000 + 2000 : 10_000);
    // GCP-07 §5.1.1: T' < T.
    if (this.tPrime !== undefined && this.tPrime * 1000 >= this.tMs) throw new RangeError(`Multicast-Timeout ${this.tPrime} s must be less than the client timeout ${this.tMs} ms`);
    const obs = (o.options ?? []).find((x) => x.number === OPT.OBSERVE);
    this.observing = obs !== undefined && decodeUint(obs.value) === 0;
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
    this.timer = setTimeout(() => this.onDeadline(), this.tMs);
    return this;
  }

  private buildRequest(token: Buffer): CoapMessage {
    const o = this.o;
    const opts: CoapOption[] = (o.options ?? []).slice();
    const style = o.targetStyle ?? 'proxy-uri';
    if (style === 'proxy-uri') opts.push({ number: OPT.PROXY_URI, value: Buffer.from(formatUri(this.uri), 'utf8') });
    else if (style === 'proxy-scheme') {
      opts.push({ number: OPT.PROXY_SCHEME, value: Buffer.from(this.uri.scheme, 'utf8') });
      opts.push({ number: OPT.URI_HOST, value: Buffer.from(this.uri.family === 6 ? `[${this.uri.host}${this.uri.zone ? '%' + this.uri.zone : ''}]` : this.uri.host, 'utf8') });
      if (this.uri.port !== 5683) opts.push({ number: OPT.URI_PORT, value: encodeUint(this.uri.port) });
      opts.push(...uriToOptions(this.uri).filter((x) => x.number !== OPT.URI_HOST));
    } else opts.push(...uriToOptions(this.uri, { includeHost: true, destinationPort: this.o.proxy.port }));
    if (this.tPrime !== undefined) {
      opts.push({ number: optionNumber('Multicast-Timeout'), value: encodeUint(this.tPrime) });
      // GCP-07 §5.1.1 step 3: T' = 0 goes with No-Response 26.
      if (this.tPrime === 0 && !opts.some((x) => x.number === OPT.NO_RESPONSE)) opts.push({ number: OPT.NO_RESPONSE, value: encodeUint(26) });
    }
    return createMessage({ type: o.confirmable === false ? 'NON' : 'CON', code: o.method ?? CODES.GET, token, messageId: this.endpoint.newMessageId(), options: sortOptions(opts), payload: o.payload });
  }

  private send(): void {
    const token = this.endpoint.newToken();
    this.currentToken = token;
    this.request = this.buildRequest(token);
    this.unlisten = this.endpoint.listen(token, (res) => this.onRelayed(res), this.o.proxy);
    this.endpoint.sendMessage(this.request, this.o.proxy, {
      onReset: () => this.fail(CODES.SERVICE_UNAVAILABLE, 'the proxy answered with RST'),
      onFail: (err) => this.fail(CODES.GATEWAY_TIMEOUT, err.message),
    });
    if (this.tPrime === 0) {
      // Nothing will be relayed: the exchange is over once the request is out (the token stays retired).
      this.finish();
    }
  }

  private onRelayed(res: IncomingResponse): void {
    if (this.ended) return;
    const m = res.message;
    const mtNum = optionNumber('Multicast-Timeout');
    const rfNum = optionDef('Reply-From')?.number;
    const lfNum = optionDef('Response-Forwarding')?.number;
    const relayed = (rfNum !== undefined && getOption(m, rfNum) !== undefined) || (lfNum !== undefined && getOption(m, lfNum) !== undefined);
    if (!relayed && codeClass(m.code) >= 4 && this.responses.length === 0) {
      // An answer of the proxy itself.
      const mt = getOption(m, mtNum);
      if (m.code === CODES.BAD_REQUEST && mt !== undefined && mt.length === 0 && this.tPrime === undefined && this.o.retryOn400 !== false && !this.retried400) {
        // GCP-07 §6.1: a reverse proxy revealed itself; retry with Multicast-Timeout.
        this.retried400 = true;
        this.tPrime = Math.max(1, Math.floor(this.tMs / 1000) - 2);
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
      return this.fail(m.code, m.payload.length ? m.payload.toString('utf8') : `the proxy answered ${codeToString(m.code)}`);
    }
    if (this.observing && codeClass(m.code) === 2 && getOption(m, OPT.OBSERVE) !== undefined) this.keepForObserve = true;
    try {
      this.onResponse(res);
    } catch (err) {
      if (err instanceof CborStructureError) this.reportError(originUri(res.remote.address, res.remote.port), err, 'bad-reply-from');
      else throw err;
    }
  }

  protected originOf(res: IncomingResponse): Origin {
    return originFromRelayed(res.message, res.remote, this.uri.port);
  }

  protected fetchBlock(_first: IncomingResponse, origin: Origin, options: CoapOption[]): Promise<IncomingResponse> {
    // Through the proxy, as a unicast forward-proxy request to that server.
    const path = this.uri.path;
    const opts = options.filter((x) => ![OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY, optionNumber('Multicast-Timeout')].includes(x.number as never));
    if (origin.via) {
      opts.push({ number: OPT.URI_HOST, value: Buffer.from(origin.address, 'utf8') }, { number: OPT.URI_PORT, value: encodeUint(origin.port) });
      opts.push(...uriToOptions({ ...this.uri, family: 4 }).filter((x) => x.number === OPT.URI_PATH || x.number === OPT.URI_QUERY));
      return this.endpoint.request({ code: this.request.code, options: opts }, { address: origin.via.address, port: origin.via.port }, { confirmable: true });
    }
    const target = formatUri({ scheme: 'coap', host: origin.address.split('%')[0], zone: origin.address.split('%')[1], port: origin.port, path, query: this.uri.query });
    opts.push({ number: OPT.PROXY_URI, value: Buffer.from(target, 'utf8') });
    return this.endpoint.request({ code: this.request.code, options: opts }, this.o.proxy, { confirmable: true });
  }

  private retry(): void {
    this.unlisten?.();
    this.send();
  }

  private onDeadline(): void {
    this.timer = undefined;
    // GCP-07 §5.5.2: keep the token while an observation is active.
    if (this.keepForObserve) return;
    this.finish();
  }

  private fail(code: number, message: string): void {
    this.proxyErrors.push({ code: codeToString(code), message });
    this.reportError(`coap://${this.o.proxy.address}:${this.o.proxy.port}`, new Error(message), codeToString(code));
    this.finish();
  }

  private finish(): void {
    if (this.timer) clearTimeout(this.timer);
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
    const stop = createMessage({ type: 'NON', code: CODES.GET, token: this.currentToken, messageId: this.endpoint.newMessageId(), options: [{ number: optionNumber('Multicast-Timeout'), value: Buffer.alloc(0) }] });
    this.endpoint.sendMessage(stop, this.o.proxy);
    this.finish();
  }
}

export function requestViaProxy(endpoint: CoapEndpoint, opts: ProxiedRequestOptions): ProxiedGroupExchange {
  return new ProxiedGroupExchange(endpoint, opts).start();
}
