// Nested OSCORE layers and OSCORE-capable proxies (draft-ietf-core-oscore-capable-proxies-07, "OCP"): the escalation
// of class U/I options to class E per layer (§2.2, App. C), several layers on an outgoing request (§2.3), the
// incoming-request loop that removes layers until it meets proxy-related options or the application (§2.4,
// App. D), responses protected with the removed layers in reverse order (§2.5) and incoming responses unprotected
// layer by layer (§2.6), with the layer limit of §2.1. One layer is one call into protect.ts (RFC 8613 §8).

import { CODES } from '../coap/codes';
import { CoapMessage, CoapOption, getOption } from '../coap/message';
import { OPT, optionDef } from '../coap/options';
import type { IncomingRequest } from '../messaging/endpoint';
import type { RemoteAddress } from '../transport/udp-transport';
import { ClientBinding, ServerBinding } from './binding';
import type { CanUnprotect, ContextSource, PeerContext, RequestContext } from './capabilities';
import { EchoRequiredError, OscoreError } from './errors';
import { oscoreClass } from './option-classes';
import {
  ContextResolver,
  MessageParts,
  VerifiedResponse,
  answerOscoreError,
  isProtected,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
} from './protect';

/** OCP-07 §2.1 gives no number; two layers (end to end + one hop) is the typical depth. */
export const DEFAULT_MAX_LAYERS = 2;

type Protected<T> = Omit<T, 'code' | 'options' | 'payload'> & { code: number; options: CoapOption[]; payload: Buffer };

const EMPTY = Buffer.alloc(0);

export type LayerErrorCode =
  /** more layers than the endpoint's limit (§2.1): abort sending, or 4.01 for an incoming request */
  | 'ERR_OSCORE_LAYER_LIMIT'
  /** removing one layer of an incoming request failed (RFC 8613 §8.2 at that layer) */
  | 'ERR_OSCORE_LAYER_FAILED'
  /** an option the endpoint would have to protect but does not recognize (§2.2): 4.02 / 5.02 */
  | 'ERR_OSCORE_UNRECOGNIZED_OPTION'
  /** an OSCORE option left after removing every expected layer of a response (§2.6): stop processing */
  | 'ERR_OSCORE_UNEXPECTED_LAYER';

/**
 * A failure of nested-layer processing. `response`, when present, is the complete answer for the previous hop,
 * already protected with the layers removed successfully (§2.5); `responseCode` is its code before protection.
 */
export class LayerError extends Error {
  override readonly name = 'LayerError';
  readonly response?: MessageParts;
  readonly responseCode?: number;
  readonly layers: readonly RemovedLayer[];
  override readonly cause?: unknown;

  constructor(
    readonly code: LayerErrorCode,
    message: string,
    details: { response?: MessageParts; responseCode?: number; layers?: readonly RemovedLayer[]; cause?: unknown } = {},
  ) {
    super(message);
    if (details.response) this.response = details.response;
    if (details.responseCode !== undefined) this.responseCode = details.responseCode;
    this.layers = details.layers ?? [];
    if (details.cause !== undefined) this.cause = details.cause;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// §2.2: class U/I options escalated to class E when applying layer i for peer X

export interface EscalationQuery {
  option: number;
  /** the endpoint applying layer i */
  sender: string;
  /** X, the other endpoint of layer i */
  peer: string;
  /** the next hop of the message */
  nextHop: string;
  /** the endpoint that added the option to the message */
  addedBy: string;
  /** to the best of the sender's knowledge: the endpoints after the sender that need the option, nearest first */
  consumers: readonly string[];
  /** X needs the option before removing layer i, or in order to remove it (step 5) */
  neededForRemoval?: boolean;
  /** the message carries Proxy-Scheme or Proxy-Scheme-Number (step 7) */
  proxyScheme: boolean;
}

export interface EscalationResult {
  /** the option is protected as class E in this layer */
  classE: boolean;
  /** the steps of §2.2 taken, ending in 8 (class E) or 9 (original class); empty when the option is not only U/I */
  steps: number[];
}

/** OCP-07 §2.2 steps 1-9 for one option. Options that are also class E (E+U) keep RFC 8613's rules. */
export function escalate(q: EscalationQuery): EscalationResult {
  const cls = oscoreClass(q.option);
  if (cls !== 'U') return { classE: cls === 'E', steps: [] };
  const nextConsumer = q.consumers.length ? q.consumers[0] : undefined;
  const steps: number[] = [];
  let step = 1;
  for (;;) {
    steps.push(step);
    switch (step) {
      case 1:
        step = q.addedBy === q.sender ? 2 : 4;
        break;
      case 2:
        step = q.consumers.includes(q.peer) ? 3 : 4;
        break;
      case 3:
        step = nextConsumer === q.peer ? 5 : 9;
        break;
      case 4:
        // An option nobody consumes has no "next consumer", so the next hop is not it: protect it.
        step = q.peer === q.nextHop || q.nextHop !== nextConsumer ? 6 : 9;
        break;
      case 5:
        step = q.neededForRemoval ? 9 : 6;
        break;
      case 6:
        step = q.option === OPT.URI_HOST || q.option === OPT.URI_PORT ? 7 : 8;
        break;
      case 7:
        step = q.proxyScheme ? 8 : 9;
        break;
      case 8:
        return { classE: true, steps };
      default:
        return { classE: false, steps };
    }
  }
}

export interface OptionRoute {
  addedBy: string;
  consumers: readonly string[];
  neededForRemoval?: boolean;
}

/** What the endpoint applying a layer knows about the path (OCP-07 §2.2 "to the best of the sender's knowledge"). */
export interface LayerView {
  sender: string;
  peer: string;
  nextHop: string;
  route(option: number): OptionRoute;
}

const nameOf = (num: number): string | undefined => optionDef(num)?.name;

function isProxySchemeOption(num: number): boolean {
  return num === OPT.PROXY_SCHEME || nameOf(num) === 'Proxy-Scheme-Number';
}

/** Options a forward / group proxy consumes (OCP-07 §2.2 examples; GCP-07 §2-§3; MNP-02 §4; RFC 8768). */
const PROXY_CONSUMED = new Set(['Proxy-Uri', 'Proxy-Scheme', 'Proxy-Cri', 'Proxy-Scheme-Number', 'Multicast-Timeout', 'Group-ETag', 'Listen-To-Multicast-Responses', 'Hop-Limit']);
/** Options a group proxy adds to the responses it relays (GCP-07 §3; the legacy tp_info form of GCP-00). */
const PROXY_ADDED = new Set(['Reply-From', 'Response-Forwarding', 'Multicast-Timeout']);

export function isProxyConsumedOption(num: number): boolean {
  const n = nameOf(num);
  return n !== undefined && PROXY_CONSUMED.has(n);
}

/** The client's knowledge on the path client -> forward proxy -> server(s). */
export function clientViaProxyRoute(num: number): OptionRoute {
  if (num === OPT.URI_HOST || num === OPT.URI_PORT) return { addedBy: 'client', consumers: ['proxy', 'server'] };
  if (isProxyConsumedOption(num)) return { addedBy: 'client', consumers: ['proxy'] };
  // Everything else, including the OSCORE option of the end-to-end layer, is for the server.
  return { addedBy: 'client', consumers: ['server'] };
}

/** Client, end-to-end layer for the server(s) through a proxy (applied first, OCP-07 §2.3). */
export const END_TO_END_VIEW: LayerView = { sender: 'client', peer: 'server', nextHop: 'proxy', route: clientViaProxyRoute };
/** Client, layer for the proxy (applied last: the proxy is the first hop). */
export const CLIENT_TO_PROXY_VIEW: LayerView = { sender: 'client', peer: 'proxy', nextHop: 'proxy', route: clientViaProxyRoute };
/** Proxy, layer for the client on a relayed response: the proxy adds Reply-From, the server added the rest. */
export const PROXY_TO_CLIENT_VIEW: LayerView = {
  sender: 'proxy',
  peer: 'client',
  nextHop: 'client',
  route: (num) => ({ addedBy: PROXY_ADDED.has(nameOf(num) ?? '') ? 'proxy' : 'server', consumers: ['client'] }),
};

/** The class U/I options of `options` that `view`'s layer protects as class E (§2.2), sorted. */
export function escalatedOptions(options: readonly CoapOption[], view: LayerView): number[] {
  const proxyScheme = options.some((o) => isProxySchemeOption(o.number));
  const out = new Set<number>();
  for (const o of options) {
    if (out.has(o.number) || oscoreClass(o.number) !== 'U') continue;
    const r = escalate({ option: o.number, sender: view.sender, peer: view.peer, nextHop: view.nextHop, proxyScheme, ...view.route(o.number) });
    if (r.classE) out.add(o.number);
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * The options a proxy expects Inner in the layer a client applied for it, so that Outer copies are discarded on
 * removal (RFC 8613 §8.2 step 1): the proxy-consumed options that §2.2 always escalates for the next hop. Uri-Host
 * and Uri-Port are not in it: without Proxy-Scheme they stay class U (steps 6-7), e.g. towards a reverse proxy.
 */
export function proxyInboundClassE(): number[] {
  const out: number[] = [];
  for (const name of PROXY_CONSUMED) {
    const def = optionDef(name);
    if (def) out.push(def.number);
  }
  return out.sort((a, b) => a - b);
}

/** The options a client expects Inner in a proxy's layer of a relayed response (everything the proxy adds). */
export function proxyResponseClassE(): number[] {
  const out = new Set(proxyInboundClassE());
  for (const name of PROXY_ADDED) {
    const def = optionDef(name);
    if (def) out.add(def.number);
  }
  return [...out].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------------------
// §2.2 last paragraphs: a proxy that is an OSCORE endpoint must recognize every option it protects

/** The first option that is neither in the option table nor in `understood`, or undefined. */
export function firstUnrecognizedOption(options: readonly CoapOption[] | undefined, understood?: Iterable<number>): number | undefined {
  const extra = new Set(understood ?? []);
  for (const o of options ?? []) if (!optionDef(o.number) && !extra.has(o.number)) return o.number;
  return undefined;
}

/** OCP-07 §2.2: stop with 4.02 (Bad Option) for a request, 5.02 (Bad Gateway) for a response. */
export function assertRecognized(msg: { options?: CoapOption[] }, kind: 'request' | 'response', understood?: Iterable<number>): void {
  const unknown = firstUnrecognizedOption(msg.options, understood);
  if (unknown === undefined) return;
  const responseCode = kind === 'request' ? CODES.BAD_OPTION : CODES.BAD_GATEWAY;
  throw new LayerError('ERR_OSCORE_UNRECOGNIZED_OPTION', `option ${unknown} is not recognized, so it cannot be protected`, { responseCode });
}

// ---------------------------------------------------------------------------------------------------------------
// §2.3: an outgoing request with several layers

export interface RequestLayer {
  context: RequestContext;
  /** where the layer's peer sits, for the escalation of §2.2 (without view and classE nothing is escalated) */
  view?: LayerView;
  /** escalated options given directly (merged with the view's result) */
  classE?: Iterable<number>;
  /** options the sender adds for this layer's peer just before applying it (e.g. an Echo the proxy asked for) */
  addOptions?: CoapOption[];
  kidContext?: boolean;
  /** the request may get several responses on this layer (OCP-07 §2.6.1) */
  multipleResponses?: boolean;
  outerOptions?: CoapOption[];
}

export interface AppliedLayer {
  binding: ClientBinding;
  context: RequestContext;
  /** the options this layer protected as class E although they are class U */
  classE: number[];
}

/**
 * Protect a request with `layers` in application order: the end-to-end layer first, then one per intermediary
 * from the one closest to the destination to the one closest to the sender (OCP-07 §2.3). The last layer is the
 * outermost, for the first hop. More layers than `maxLayers` abort the sending before any Sequence Number is used.
 */
export function protectRequestLayers<T extends MessageParts>(msg: T, layers: readonly RequestLayer[], opts: { maxLayers?: number } = {}): { message: Protected<T>; layers: AppliedLayer[] } {
  const max = opts.maxLayers ?? DEFAULT_MAX_LAYERS;
  if (layers.length > max) throw new LayerError('ERR_OSCORE_LAYER_LIMIT', `${layers.length} OSCORE layers exceed this endpoint's limit of ${max}: not sent`);
  if (layers.length === 0) throw new LayerError('ERR_OSCORE_LAYER_LIMIT', 'no OSCORE layer to apply');
  let current: MessageParts = msg;
  const applied: AppliedLayer[] = [];
  for (const layer of layers) {
    const options = [...(current.options ?? []), ...(layer.addOptions ?? [])];
    const classE = new Set<number>([...(layer.view ? escalatedOptions(options, layer.view) : []), ...(layer.classE ?? [])]);
    const { message, binding } = protectRequest(layer.context, { ...current, options }, { classE, kidContext: layer.kidContext, multipleResponses: layer.multipleResponses, outerOptions: layer.outerOptions });
    applied.push({ binding, context: layer.context, classE: [...classE].sort((a, b) => a - b) });
    current = message;
  }
  return { message: current as Protected<T>, layers: applied };
}

// ---------------------------------------------------------------------------------------------------------------
// §2.4: the incoming request loop

/**
 * Where the Recipient Context for a kid (+ kid context) comes from. A function can implement source-based
 * policies (OCP-07 §2.4.1): return undefined for a context not acceptable from `source`, which gives the same
 * 4.01 "Security context not found" as an unknown kid, so the two cannot be told apart.
 */
export type ContextLookup =
  | PeerContext
  | ContextSource
  | ((kid: Buffer, kidContext: Buffer | undefined, source: RemoteAddress | undefined, depth: number, group: boolean) => PeerContext | undefined);

export interface RemovedLayer {
  context: PeerContext;
  binding: ServerBinding;
  /** 0 = the outermost layer (removed first) */
  depth: number;
}

export interface RequestLayersOptions {
  contexts: ContextLookup;
  /** the request's source, for source-based policies */
  source?: RemoteAddress;
  /** most layers removed from one request (default 2); one more gives 4.01 protected with those removed (§2.1) */
  maxLayers?: number;
  /**
   * Steps 1-3: whether the request as decrypted so far carries proxy-related options this endpoint acts on as a
   * forward or reverse proxy. The loop then stops and the caller does step 4 (acceptability check, forwarding, or
   * 5.05 when it is not a forward proxy). Default: never (an origin server).
   */
  proxyRelated?: (message: CoapMessage, removed: readonly RemovedLayer[]) => boolean;
  /** options expected Inner in the layer at `depth` (its Outer copies are discarded, RFC 8613 §8.2 step 1) */
  classE?: (depth: number) => Iterable<number> | undefined;
}

export interface RequestLayersResult {
  message: CoapMessage;
  /** the layers removed, outermost first */
  layers: RemovedLayer[];
  /** stopped at proxy-related options (step 4 is the caller's) rather than with a request for the application */
  proxied: boolean;
}

function resolverFor(contexts: ContextLookup, source: RemoteAddress | undefined, depth: number): PeerContext | ContextResolver {
  if (typeof contexts === 'function') return (kid, kidContext, group) => contexts(kid, kidContext, source, depth, group);
  if ('resolve' in contexts) return (kid, kidContext, group) => contexts.resolve(kid, kidContext, group);
  return contexts; // one association: matched by Recipient ID and ID Context in protect.ts
}

/**
 * OCP-07 §2.4 steps 1-6: remove OSCORE layers until the request carries proxy-related options or no OSCORE option.
 * An OSCORE option inside a decrypted request is not an error. Throws LayerError whose `response` is the answer to
 * send: the RFC 8613 §8.2 error of the failing layer (unprotected at that layer; a protected 4.01 + Echo for App.
 * B.1.2) or the 4.01 of the layer limit, in both cases protected with the layers removed before (§2.1, §2.5).
 */
export function removeRequestLayers(msg: CoapMessage, opts: RequestLayersOptions): RequestLayersResult {
  const max = opts.maxLayers ?? DEFAULT_MAX_LAYERS;
  const layers: RemovedLayer[] = [];
  let message = msg;
  for (;;) {
    // Steps 1-4.
    if (opts.proxyRelated?.(message, layers)) return { message, layers, proxied: true };
    // Step 5: nothing left to remove: the request is for the application.
    if (!isProtected(message)) return { message, layers, proxied: false };
    const depth = layers.length;
    // §2.1: one more layer than allowed.
    if (depth >= max) {
      const responseCode = CODES.UNAUTHORIZED;
      const response = protectResponseLayers(layers, { code: responseCode, options: [], payload: Buffer.from('Too many OSCORE layers', 'utf8') });
      throw new LayerError('ERR_OSCORE_LAYER_LIMIT', `request has more than ${max} OSCORE layers`, { response, responseCode, layers });
    }
    // Step 6.
    let verified;
    try {
      verified = unprotectRequest(resolverFor(opts.contexts, opts.source, depth), message, { classE: opts.classE?.(depth) });
    } catch (err) {
      if (!(err instanceof OscoreError)) throw err;
      // §8.2 at this layer (App. B.1.2: a 4.01 + Echo already protected with it), then the layers removed before.
      const inner = answerOscoreError(err);
      const response = inner ? protectResponseLayers(layers, inner) : undefined;
      throw new LayerError('ERR_OSCORE_LAYER_FAILED', `OSCORE layer ${depth + 1}: ${err.message}`, { response, ...(err.noResponse ? {} : { responseCode: err.responseCode }), layers, cause: err });
    }
    layers.push({ context: verified.context, binding: verified.binding, depth });
    message = verified.message;
  }
}

/** "Proxy-related options" of OCP-07 §1.1: (a) Proxy-Uri / Proxy-Cri, (b) Proxy-Scheme(-Number) with Uri-*, (c) Uri-* alone (for a reverse proxy). */
export function proxyRelatedKind(msg: { options: CoapOption[] }): 'forward' | 'reverse' | undefined {
  const has = (num: number) => getOption(msg, num) !== undefined;
  if (has(OPT.PROXY_URI) || msg.options.some((o) => nameOf(o.number) === 'Proxy-Cri')) return 'forward';
  const uri = has(OPT.URI_HOST) || has(OPT.URI_PORT) || has(OPT.URI_PATH) || msg.options.some((o) => nameOf(o.number) === 'Uri-Path-Abbrev');
  if (msg.options.some((o) => isProxySchemeOption(o.number))) return 'forward';
  return uri ? 'reverse' : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// §2.5: outgoing responses

export interface ResponseLayersOptions {
  /**
   * Options protected as class E in the layer at `depth`. Default: every class U option except Uri-Host / Uri-Port,
   * which is what §2.2 gives for a response when the options are for, or pass through, the previous hop X.
   */
  classE?: (depth: number, message: MessageParts) => Iterable<number>;
  /** RFC 8613 §8.3 step 3 per layer; default 'auto': the first response to the request may reuse its nonce, every later one carries a Partial IV (OCP-07 §2.5.1) */
  partialIv?: boolean | 'auto';
  /** Outer-only options for the outermost layer */
  outerOptions?: CoapOption[];
  /** the resource is observable (ProtectResponseOptions.observable, draft-ietf-core-cacheable-oscore-02 §3.4.4 step 3) */
  observable?: boolean;
}

function defaultResponseClassE(msg: MessageParts): number[] {
  return (msg.options ?? []).filter((o) => oscoreClass(o.number) === 'U' && o.number !== OPT.URI_HOST && o.number !== OPT.URI_PORT).map((o) => o.number);
}

/**
 * Protect a response with the layers removed from its request, in reverse order (OCP-07 §2.5): the innermost
 * removed layer first, the outermost (the previous hop's) last. Also for error responses, with the layers that
 * were removed successfully.
 */
export function protectResponseLayers<T extends MessageParts>(layers: readonly RemovedLayer[], msg: T, opts: ResponseLayersOptions = {}): Protected<T> {
  let current: MessageParts = { ...msg, options: msg.options ?? [], payload: msg.payload ?? EMPTY };
  for (let i = layers.length - 1; i >= 0; i--) {
    const classE = opts.classE ? opts.classE(layers[i].depth, current) : defaultResponseClassE(current);
    current = protectResponse(layers[i].binding, current, { classE, partialIv: opts.partialIv, outerOptions: i === 0 ? opts.outerOptions : undefined, ...(opts.observable ? { observable: true } : {}) });
  }
  return current as Protected<T>;
}

// ---------------------------------------------------------------------------------------------------------------
// §2.6: incoming responses

export interface ResponseLayer {
  /**
   * The binding of this layer, or a function that picks it once the outer layers are removed (e.g. one server's
   * Recipient Context, chosen by Reply-From). Bindings made with multipleResponses accept at most one response
   * without Partial IV, treated as the oldest (OCP-07 §2.6.1): per binding, i.e. per source OSCORE endpoint.
   */
  binding: ClientBinding | ((message: CoapMessage) => ClientBinding | undefined);
  classE?: Iterable<number>;
}

/**
 * Remove the layers of a response in reverse order of application: `layers` is given in the order they were
 * applied to the request (end-to-end first), so the last one is removed first. An OSCORE option left afterwards
 * stops processing (§2.6). Throws OscoreError (RFC 8613 §8.4: no response is sent) or LayerError.
 */
export function unprotectResponseLayers(msg: CoapMessage, layers: readonly ResponseLayer[]): { message: CoapMessage; verified: VerifiedResponse[] } {
  let message = msg;
  const verified: VerifiedResponse[] = [];
  for (let i = layers.length - 1; i >= 0; i--) {
    const l = layers[i];
    const binding = typeof l.binding === 'function' ? l.binding(message) : l.binding;
    if (!binding) throw new LayerError('ERR_OSCORE_UNEXPECTED_LAYER', `no security context for OSCORE layer ${i + 1} of the response`);
    const v = unprotectResponse(binding, message, { classE: l.classE });
    verified.push(v);
    message = v.message;
  }
  if (isProtected(message)) throw new LayerError('ERR_OSCORE_UNEXPECTED_LAYER', 'an OSCORE option is left after removing every layer added to the request');
  return { message, verified };
}

/** A ClientBinding for another Recipient Context of the same request (same kid, Partial IV and nonce, §8.1 step 6). */
export function rebindResponses(template: ClientBinding, context: RequestContext, opts: { multipleResponses?: boolean } = {}): ClientBinding {
  return new ClientBinding({
    context,
    kid: template.kid,
    piv: template.piv,
    nonce: template.nonce,
    kidContext: template.kidContext,
    observe: template.observe,
    multipleResponses: opts.multipleResponses ?? template.multipleResponses,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Identities and an OSCORE server endpoint

/** The identity of the peer of a context: hex Recipient ID, with "@" and the hex ID Context when there is one. */
export function oscoreClientId(ctx: Pick<CanUnprotect, 'recipientId' | 'idContext'>): string {
  const kid = ctx.recipientId.toString('hex');
  return ctx.idContext ? `${kid}@${ctx.idContext.toString('hex')}` : kid;
}

export type UnwrappedRequest =
  | { request: IncomingRequest; protect?: (response: { code: number; options: CoapOption[]; payload: Buffer }, hints?: { observable?: boolean }) => { code: number; options: CoapOption[]; payload: Buffer }; layers?: RemovedLayer[] }
  | { reject: { code: number; options: CoapOption[]; payload: Buffer } | undefined; /** the reject is the protected 4.01 + Echo (RFC 10021 §9) */ challenge?: boolean };

export interface ServerLayersOptions {
  contexts: ContextLookup;
  maxLayers?: number;
  /** a request without any OSCORE layer gets 4.01 (default true) */
  required?: boolean;
}

/**
 * An origin server's side of §2.4 / §2.5 as a request transform (fits GroupServer's `requestTransform`): remove
 * every layer (step 5 hands the result to the application), and protect each response with the same layers in
 * reverse order, every response but the first with its own Partial IV.
 */
export function oscoreServerTransform(opts: ServerLayersOptions): (req: IncomingRequest) => UnwrappedRequest {
  return (req) => {
    let r: RequestLayersResult;
    try {
      r = removeRequestLayers(req.message, { contexts: opts.contexts, source: req.remote, maxLayers: opts.maxLayers });
    } catch (err) {
      if (!(err instanceof LayerError)) throw err;
      const res = err.response;
      const challenge = err.cause instanceof EchoRequiredError;
      return { reject: res ? { code: res.code, options: res.options ?? [], payload: res.payload ?? EMPTY } : undefined, ...(challenge ? { challenge } : {}) };
    }
    if (r.layers.length === 0) {
      if (opts.required === false) return { request: req };
      return { reject: { code: CODES.UNAUTHORIZED, options: [], payload: Buffer.from('OSCORE required', 'utf8') } };
    }
    const layers = r.layers;
    return { request: { ...req, message: r.message }, protect: (response, hints) => protectResponseLayers(layers, response, hints?.observable ? { observable: true } : {}), layers };
  };
}
