// OSCORE message processing (RFC 8613 §8) on the CoapMessage model: protect / verify requests (§8.1, §8.2) and
// responses (§8.3, §8.4), with Observe (§4.1.3.5, §7.4.1), Proxy-Uri (§4.1.3.3), caller-requested Outer options and
// Echo recovery (App. B.1.2). One call = one layer; nested layers (oscore-capable-proxies-07 §2) are repeated calls,
// each with its own context and set of U options escalated to E. Server-side failures carry the §8.2 response
// code; client-side ones none (§8.4: stop processing).

import { codeToString, CODES, isRequestCode, isResponseCode } from '../coap/codes';
import { CoapFormatError, decodeCodeOptionsPayload, encodeCodeOptionsPayload } from '../coap/codec';
import { CoapMessage, CoapOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint } from '../coap/options';
import { ClientBinding, ServerBinding } from './binding';
import type { CanProtect, MessageBinding, PeerContext, ProtectionMode, RequestContext } from './capabilities';
import { OscoreOptionFields, decodeOscoreOption, decodePartialIv, encodeOscoreOption, encodePartialIv } from './cose';
import { DIAGNOSTICS, EchoRequiredError, OscoreError, UnsafeDeterministicRequestError } from './errors';
import { mergeOptions, splitOptions } from './option-split';

/** The parts of a message OSCORE transforms; type, message ID and token pass through untouched (class U, §4.2). */
export interface MessageParts {
  code: number;
  options?: CoapOption[];
  payload?: Buffer;
}

type Protected<T> = Omit<T, 'code' | 'options' | 'payload'> & { code: number; options: CoapOption[]; payload: Buffer };

export interface LayerOptions {
  /**
   * Option numbers that are class U (or I) by default but are protected as class E in this layer, as decided by
   * the escalation algorithm of oscore-capable-proxies-07 §2.2 (e.g. Uri-Host and Proxy-Scheme meant for an
   * OSCORE-capable proxy). Receivers pass the same set so Outer copies are discarded.
   */
  classE?: Iterable<number>;
}

export interface ProtectOptions extends LayerOptions {
  /**
   * Options added to the OSCORE message as Outer only: an Outer Max-Age (§4.1.3.1), Outer Block / Size options for
   * hop-by-hop fragmentation (§4.1.3.4.2), an Outer No-Response copy (§4.1.3.6), Hop-Limit, ...
   */
  outerOptions?: CoapOption[];
}

export interface ProtectRequestOptions extends ProtectOptions {
  /** send `kid context` (default: the context's sendKidContext setting, and only if it has an ID Context) */
  kidContext?: boolean;
  /** the request may get several responses (a proxy relaying many, oscore-capable-proxies-07 §2.6.1) */
  multipleResponses?: boolean;
  /** drop notifications older than the Notification Number (RFC 8613 §7.4.1 "Applications MAY ...") */
  onlyNewerNotifications?: boolean;
}

export interface ProtectResponseOptions extends ProtectOptions {
  /**
   * Answer in another mode of the same group than the request used (RFC 10021 §8: a server may answer a group-mode
   * request in pairwise mode). Default: the request's mode.
   */
  mode?: ProtectionMode;
  /**
   * §8.3 step 3: true = new Partial IV, false = reuse the request nonce (allowed once, and only for a fresh request),
   * 'auto' (default) = reuse for the first response, a new Partial IV for every later one (§4.1.3.5.2 notifications).
   */
  partialIv?: boolean | 'auto';
  /**
   * The resource is observable (RFC 7641). Only consulted for a response to a Deterministic Request that carried an
   * Inner Observe but no Outer one: a successful response then gets an Inner Observe (draft-ietf-core-cacheable-
   * oscore-02 §3.4.4 step 3). Default false.
   */
  observable?: boolean;
}

/**
 * Finds the Recipient Context for a request's kid and kid context; `group` is the request's Group Flag (RFC 10021
 * §6 "Message Reception"), so a Group OSCORE context can hand out its group-mode or pairwise-mode
 * association. May throw an OscoreError that carries its response (e.g. 5.03 for an unknown credential).
 */
export type ContextResolver = (kid: Buffer, kidContext: Buffer | undefined, group: boolean) => PeerContext | undefined;

const EMPTY = Buffer.alloc(0);
/** Request-Hash, draft-ietf-core-cacheable-oscore-02 §3.3 [SUGGESTED 548] */
const OPT_REQUEST_HASH = 548;
const ZERO_PIV = Buffer.from([0]);

function toSet(numbers?: Iterable<number>): ReadonlySet<number> | undefined {
  return numbers ? new Set(numbers) : undefined;
}

function finish<T extends MessageParts>(msg: T, code: number, options: CoapOption[], payload: Buffer): Protected<T> {
  return { ...msg, code, options, payload };
}

function encodePlaintext(code: number, inner: CoapOption[], payload: Buffer): Buffer {
  try {
    // §5.3: Code | class E options | 0xff payload, exactly CoAP's "no header" form.
    return encodeCodeOptionsPayload(code, inner, payload);
  } catch (err) {
    throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `cannot encode plaintext: ${(err as Error).message}`);
  }
}

function outerWith(outer: CoapOption[], oscore: Buffer, extra?: CoapOption[]): CoapOption[] {
  for (const o of extra ?? []) {
    if (o.number === OPT.OSCORE) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'outerOptions must not contain an OSCORE option');
  }
  return sortOptions([...outer, { number: OPT.OSCORE, value: oscore }, ...(extra ?? [])]);
}

// ---------------------------------------------------------------------------------------------------------------
// §8.1 Protecting the request (client)

export function protectRequest<T extends MessageParts>(ctx: RequestContext, msg: T, opts: ProtectRequestOptions = {}): { message: Protected<T>; binding: ClientBinding } {
  if (!isRequestCode(msg.code)) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `protectRequest needs a request code, got ${codeToString(msg.code)}`);
  // draft-ietf-core-cacheable-oscore-02 §3.4.2: the Deterministic Client composes its request itself.
  if (ctx.buildRequest) {
    const built = ctx.buildRequest(msg, opts);
    return { message: finish(msg, built.message.code, built.message.options, built.message.payload), binding: built.binding };
  }
  const options = msg.options ?? [];
  const { inner, outer } = splitOptions(options, true, toSet(opts.classE));
  const plaintext = encodePlaintext(msg.code, inner, msg.payload ?? EMPTY);
  const observeOpt = inner.find((o) => o.number === OPT.OBSERVE);
  // Step 3: take the Sender Sequence Number only once nothing else can fail before it is used.
  const piv = encodePartialIv(ctx.sequence.next());
  const kid = ctx.senderId;
  // RFC 10021 §3.2: a Group OSCORE request always carries kid context (the Gid).
  const sendKidContext = (opts.kidContext ?? ctx.sendKidContext) || ctx.mode !== 'oscore';
  const kidContext = sendKidContext && ctx.idContext ? ctx.idContext : undefined;
  const nonce = ctx.senderNonce(piv);
  // RFC 10021 §3.4: the OSCORE option is final before encryption and signing (it is in the external_aad).
  const oscore = encodeOscoreOption({ piv, kid, ...(kidContext ? { kidContext } : {}), ...(ctx.mode === 'group' ? { group: true } : {}) });
  const payload = ctx.seal(plaintext, { nonce, piv, pivId: kid, isRequest: true, requestKid: kid, requestPiv: piv, ...(kidContext ? { requestKidContext: kidContext } : {}), oscoreOption: oscore });
  // §4.2: Outer Code POST, or FETCH when Observe is present (§4.1.3.5.1).
  const code = observeOpt ? CODES.FETCH : CODES.POST;
  const binding = new ClientBinding({
    context: ctx,
    kid,
    piv,
    nonce,
    kidContext,
    observe: observeOpt !== undefined && decodeUint(observeOpt.value) === 0,
    multipleResponses: opts.multipleResponses ?? ctx.manyResponders,
    onlyNewerNotifications: opts.onlyNewerNotifications,
  });
  return { message: finish(msg, code, outerWith(outer, oscore, opts.outerOptions), payload), binding };
}

// ---------------------------------------------------------------------------------------------------------------
// §8.2 Verifying the request (server)

export interface VerifiedRequest {
  message: CoapMessage;
  /** the association that verified the request (its mode is the request's) */
  context: PeerContext;
  binding: ServerBinding;
  /** Outer options discarded in step 1 (e.g. an Outer If-Match or Block option) */
  discarded: CoapOption[];
}

const bad = (why: string) => new OscoreError('ERR_OSCORE_DECODE', why, DIAGNOSTICS.DECODE);

function decodeForRequest(value: Buffer, payload: Buffer): Required<Pick<OscoreOptionFields, 'piv' | 'kid'>> & OscoreOptionFields {
  const f = decodeOscoreOption(value); // throws ERR_OSCORE_DECODE with 4.02
  // §5: Partial IV and kid SHALL be present in requests.
  if (!f.piv) throw bad('request without Partial IV');
  if (f.kid === undefined) throw bad('request without kid');
  // §2: an OSCORE message without payload is malformed.
  if (payload.length === 0) throw bad('OSCORE message without payload');
  return f as Required<Pick<OscoreOptionFields, 'piv' | 'kid'>> & OscoreOptionFields;
}

function lookup(resolver: PeerContext | ContextResolver, kid: Buffer, kidContext: Buffer | undefined, group: boolean): PeerContext {
  let ctx: PeerContext | undefined;
  if (typeof resolver === 'function') {
    ctx = resolver(kid, kidContext, group);
  } else {
    if (group && resolver.mode === 'oscore') throw bad('Group Flag set in a plain OSCORE request');
    const idOk = resolver.recipientId.equals(kid);
    // RFC 10021 §3.2: a Group OSCORE request always carries the Gid as kid context; only RFC 8613 may omit it.
    const ctxOk = kidContext === undefined ? resolver.mode === 'oscore' : resolver.idContext !== undefined && resolver.idContext.equals(kidContext);
    ctx = idOk && ctxOk ? resolver : undefined;
  }
  if (!ctx) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'no security context for this kid / kid context', DIAGNOSTICS.CONTEXT_NOT_FOUND);
  // RFC 10021 §6 ("Message Reception"): the Group Flag selects the mode; a mode the context lacks, or the flag
  // on a plain RFC 8613 context, means the message is discarded.
  if (group !== (ctx.mode === 'group')) {
    if (ctx.mode === 'oscore') throw bad('Group Flag set in a plain OSCORE request');
    const other = ctx.withMode(group ? 'group' : 'pairwise');
    if (!other) throw bad(`${group ? 'group' : 'pairwise'} mode is not used in this group`);
    ctx = other;
  }
  return ctx;
}

function openOrThrow(ctx: PeerContext, payload: Buffer, m: MessageBinding, withResponse: boolean): Buffer {
  try {
    return ctx.open(payload, m);
  } catch (err) {
    // §8.2 step 6 / RFC 10021 §7.2: the error carries its 4.00 "Decryption failed"; §8.4: a client only stops.
    if (!(err instanceof OscoreError) || withResponse) throw err;
    throw err.withoutResponse();
  }
}

const BAD_PLAINTEXT = { responseCode: CODES.BAD_REQUEST };

function parsePlaintext(plaintext: Buffer, request: boolean, withResponse: boolean): { code: number; options: CoapOption[]; payload: Buffer } {
  let inner;
  try {
    inner = decodeCodeOptionsPayload(plaintext);
  } catch (err) {
    if (!(err instanceof CoapFormatError)) throw err;
    // Authenticated, yet not a message: the peer is broken rather than an attacker. 4.00 as for other malformed
    // requests (RFC 7252 §4.2 rejects them; §5.9.2.1 gives 4.00 for requests the server cannot make sense of).
    throw new OscoreError('ERR_OSCORE_INNER_FORMAT', `malformed plaintext: ${err.reason}`, withResponse ? BAD_PLAINTEXT : undefined);
  }
  const ok = request ? isRequestCode(inner.code) : isResponseCode(inner.code);
  if (!ok) {
    throw new OscoreError('ERR_OSCORE_INNER_FORMAT', `inner code ${codeToString(inner.code)} in a ${request ? 'request' : 'response'}`, withResponse ? BAD_PLAINTEXT : undefined);
  }
  return inner;
}

export function unprotectRequest(resolver: PeerContext | ContextResolver, msg: CoapMessage, opts: LayerOptions = {}): VerifiedRequest {
  const value = msg.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) throw new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'request has no OSCORE option');
  // Step 2: decompress, then find the Recipient Context.
  const f = decodeForRequest(value, msg.payload);
  const ctx = lookup(resolver, f.kid, f.kidContext, f.group === true);
  // draft-ietf-core-cacheable-oscore-02 §3.4.3: the Deterministic Client's requests are verified by its own steps.
  if (ctx.verifyRequest) return ctx.verifyRequest(msg, opts);
  const seq = decodePartialIv(f.piv);
  // Step 3: replay check (skipped while the window is lost; App. B.1.2 then demands Echo below).
  const windowKnown = ctx.replay.initialized;
  if (windowKnown) ctx.replay.check(seq);
  // Steps 4-6. The nonce uses the Recipient ID, which equals the kid for a context found by kid.
  const nonce = ctx.recipientNonce(f.piv);
  const m: MessageBinding = { nonce, piv: f.piv, pivId: f.kid, isRequest: true, requestKid: f.kid, requestPiv: f.piv, ...(f.kidContext ? { requestKidContext: f.kidContext } : {}), oscoreOption: value };
  // RFC 10021 §7.2: a bad countersignature stops here, before the replay window is updated.
  const plaintext = openOrThrow(ctx, msg.payload, m, true);
  if (windowKnown) ctx.replay.update(seq);
  const inner = parsePlaintext(plaintext, true, true);
  let innerOptions = inner.options;
  let fresh = windowKnown;
  if (!windowKnown) {
    // App. B.1.2: accept only a request that returns an Echo value this context issued; it sets the window.
    const echo = innerOptions.find((o) => o.number === OPT.ECHO);
    if (echo && ctx.echo.redeem(echo.value)) {
      ctx.replay.initializeFrom(seq);
      ctx.echo.clear();
      innerOptions = innerOptions.filter((o) => o !== echo); // consumed by this layer
      fresh = true;
    }
  }
  const merged = mergeOptions(msg.options, innerOptions, toSet(opts.classE));
  let options = merged.options;
  // §4.1.3.5.1: a proxy may have removed the Outer Observe; the server then treats the request as non-Observe.
  if (!merged.outerObserve && options.some((o) => o.number === OPT.OBSERVE)) options = options.filter((o) => o.number !== OPT.OBSERVE);
  const observe = options.find((o) => o.number === OPT.OBSERVE);
  const binding = new ServerBinding({
    context: ctx,
    kid: f.kid,
    piv: f.piv,
    nonce,
    kidContext: f.kidContext,
    observe: observe !== undefined && decodeUint(observe.value) === 0,
    requestFresh: fresh,
  });
  if (!fresh) throw new EchoRequiredError(binding, ctx.echo.issue());
  return {
    message: { type: msg.type, code: inner.code, messageId: msg.messageId, token: msg.token, options, payload: inner.payload },
    context: ctx,
    binding,
    discarded: merged.discarded,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// §8.3 Protecting the response (server)

export function protectResponse<T extends MessageParts>(binding: ServerBinding, msg: T, opts: ProtectResponseOptions = {}): Protected<T> {
  if (!isResponseCode(msg.code)) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `protectResponse needs a response code, got ${codeToString(msg.code)}`);
  let ctx: CanProtect = binding.context;
  if (opts.mode !== undefined && opts.mode !== ctx.mode) {
    const other = binding.context.withMode?.(opts.mode);
    if (!other) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `this context has no ${opts.mode} mode`);
    ctx = other;
  }
  // draft-ietf-core-cacheable-oscore-02 §3.4.4 step 7: Request-Hash is Class I in the response, elided from it.
  const options = binding.requestHash ? (msg.options ?? []).filter((o) => o.number !== OPT_REQUEST_HASH) : msg.options ?? [];
  let notification = options.some((o) => o.number === OPT.OBSERVE);
  const innerObserveOnly = binding.innerObserveOnly && binding.requestHash !== undefined;
  if (notification && !binding.observe && !innerObserveOnly) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'Observe in a response to a request that did not register an observation');
  const split = splitOptions(options, false, toSet(opts.classE));
  let { inner, outer } = split;
  if (innerObserveOnly) {
    // draft-ietf-core-cacheable-oscore-02 §3.4.4 step 3: an Inner Observe in a successful response of an observable
    // resource (empty, as in a notification, RFC 8613 §4.1.3.5.2); step 8: never an Outer Observe.
    notification = false;
    outer = outer.filter((o) => o.number !== OPT.OBSERVE);
    inner = inner.filter((o) => o.number !== OPT.OBSERVE);
    if (opts.observable && Math.floor(msg.code / 32) === 2) inner = sortOptions([...inner, { number: OPT.OBSERVE, value: EMPTY }]);
  }
  if (binding.requestHash) {
    // draft-ietf-core-cacheable-oscore-02 §3.4.4 step 1: no Inner Max-Age 0; step 5: always the server's own Partial IV.
    const maxAge = inner.find((o) => o.number === OPT.MAX_AGE);
    if (maxAge && decodeUint(maxAge.value) === 0) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'a response to a Deterministic Request must not carry Max-Age 0');
    if (opts.partialIv === false) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'a response to a Deterministic Request needs its own Partial IV');
  }
  const plaintext = encodePlaintext(msg.code, inner, msg.payload ?? EMPTY);
  const mode = binding.requestHash ? true : opts.partialIv ?? 'auto';
  // Step 3: reusing the request nonce twice, or for a request not known to be fresh, would repeat a nonce.
  if (mode === false && !binding.canReuseRequestNonce) {
    throw new OscoreError('ERR_OSCORE_INVALID_INPUT', binding.requestFresh ? 'the request nonce was already used by an earlier response' : 'request not verified as fresh: the response needs its own Partial IV (App. B.1.2)');
  }
  // A response in another mode than the request (RFC 10021 §8) may use an AEAD with another nonce length; the
  // request's nonce does not fit it then, so the response takes its own Partial IV.
  const nonceFits = ctx === binding.context || ctx.senderNonce(ZERO_PIV).length === binding.nonce.length;
  const usePiv = mode === true || (mode === 'auto' && (!binding.canReuseRequestNonce || !nonceFits));
  if (mode === false && !nonceFits) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'the request nonce does not fit the AEAD of this mode');
  const piv = usePiv ? encodePartialIv(ctx.sequence.next()) : undefined;
  const nonce = piv ? ctx.senderNonce(piv) : binding.nonce;
  // RFC 10021 §3.2: kid in every response to a Group OSCORE request; the Group Flag in group mode (§4.1).
  const oscore = encodeOscoreOption({ ...(piv ? { piv } : {}), ...(ctx.kidInResponses ? { kid: ctx.senderId } : {}), ...(ctx.mode === 'group' ? { group: true } : {}) });
  // §5.4 / RFC 10021 §3.4: request_kid, request_piv and request_kid_context are those of the request. Without its
  // own Partial IV the response uses the request's, generated by the client (RFC 10021 §4.2 keystream).
  const payload = ctx.seal(plaintext, {
    nonce,
    piv: piv ?? binding.piv,
    pivId: piv ? ctx.senderId : binding.kid,
    isRequest: false,
    requestKid: binding.kid,
    requestPiv: binding.piv,
    ...(binding.kidContext ? { requestKidContext: binding.kidContext } : {}),
    oscoreOption: oscore,
    ...(binding.classI ? { classI: binding.classI } : {}),
  });
  binding.recordResponse(!piv);
  if (binding.requestHash) {
    // draft-ietf-core-cacheable-oscore-02 §3.4.4 steps 6 and 9: outer 2.05 and an Outer Max-Age equal to the Inner
    // one (default 60, RFC 7252 §5.10.5), so a proxy can cache the response.
    const maxAge = inner.find((o) => o.number === OPT.MAX_AGE);
    const extra = [...(opts.outerOptions ?? []).filter((o) => o.number !== OPT.MAX_AGE), { number: OPT.MAX_AGE, value: maxAge ? maxAge.value : encodeUint(60) }];
    return finish(msg, CODES.CONTENT, outerWith(outer, oscore, extra), payload);
  }
  // §4.2: Outer Code 2.04, or 2.05 for notifications (§4.1.3.5).
  return finish(msg, notification ? CODES.CONTENT : CODES.CHANGED, outerWith(outer, oscore, opts.outerOptions), payload);
}

/** App. B.1.2: the protected 4.01 (Unauthorized) with an Inner Echo, always with the server's own Partial IV. */
export function echoChallenge(err: EchoRequiredError, opts: ProtectOptions = {}): Protected<MessageParts> {
  return protectResponse(err.binding, { code: CODES.UNAUTHORIZED, options: [{ number: OPT.ECHO, value: err.echo }], payload: EMPTY }, { ...opts, partialIv: true });
}

/**
 * draft-ietf-core-cacheable-oscore-02 §3.4.3: the protected 4.01 (Unauthorized) to a Deterministic Request whose
 * inner method is not safe; protected as every response to a Deterministic Request (§3.4.4).
 */
export function unsafeMethodAnswer(err: UnsafeDeterministicRequestError, opts: ProtectOptions = {}): Protected<MessageParts> {
  return protectResponse(err.binding, { code: CODES.UNAUTHORIZED, options: [], payload: Buffer.from('Deterministic Request with an unsafe method', 'utf8') }, opts);
}

/**
 * The unprotected error response for an OSCORE error on a request (§8.2, §7.4): `err.toResponse()` (the code, an
 * Outer Max-Age of 0 except on a 5.03, the diagnostic). undefined when the error is not one that becomes a response
 * (`noResponse`) or needs a protected one (EchoRequiredError, UnsafeDeterministicRequestError).
 */
export function oscoreErrorResponse(err: unknown): Protected<MessageParts> | undefined {
  if (!(err instanceof OscoreError) || err.noResponse || err instanceof EchoRequiredError || err instanceof UnsafeDeterministicRequestError) return undefined;
  const r = err.toResponse();
  return { code: r.code, options: r.options ?? [], payload: r.payload ?? EMPTY };
}

/**
 * The answer to a request whose verification threw `err`: the protected 4.01 + Echo of App. B.1.2, the protected
 * 4.01 to an unsafe Deterministic Request (draft-ietf-core-cacheable-oscore-02 §3.4.3), or the plain §8.2 error
 * response, or undefined where none is due (not an OscoreError, or a `noResponse` one).
 */
export function answerOscoreError(err: unknown, opts: ProtectOptions = {}): Protected<MessageParts> | undefined {
  if (err instanceof EchoRequiredError) return echoChallenge(err, opts);
  if (err instanceof UnsafeDeterministicRequestError) return unsafeMethodAnswer(err, opts);
  return oscoreErrorResponse(err);
}

// ---------------------------------------------------------------------------------------------------------------
// §8.4 Verifying the response (client)

export interface VerifiedResponse {
  message: CoapMessage;
  /** the association that verified the response: who sent it (its recipientId) and in which mode */
  responder: PeerContext;
  /** the response's own Partial IV, if it carried one */
  piv?: number;
  /** a notification (Outer Observe on a response to an Observe registration) */
  notification: boolean;
  /** newer than every response accepted before on this binding (§7.4.1) */
  newest: boolean;
  discarded: CoapOption[];
}

function clientError(code: 'ERR_OSCORE_DECODE' | 'ERR_OSCORE_CONTEXT_NOT_FOUND', why: string): OscoreError {
  return new OscoreError(code, why);
}

export function unprotectResponse(binding: ClientBinding, msg: CoapMessage, opts: LayerOptions = {}): VerifiedResponse {
  const value = msg.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) throw new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'response has no OSCORE option');
  if (binding.done) throw new OscoreError('ERR_OSCORE_REPLAY', 'a response to this request was already accepted');
  const ctx = binding.context;
  let f: OscoreOptionFields;
  try {
    f = decodeOscoreOption(value);
  } catch (err) {
    // §8.4 step 2: the client only stops processing; no response code.
    throw clientError('ERR_OSCORE_DECODE', (err as Error).message);
  }
  // §6.1: kid context SHALL NOT be present in responses; RFC 10021 §7.3 allows the group's (new) Gid.
  if (f.kidContext !== undefined && (ctx.mode === 'oscore' || !ctx.idContext || !f.kidContext.equals(ctx.idContext))) throw clientError('ERR_OSCORE_DECODE', 'unexpected kid context in a response');
  const peer = ctx.responder(f.kid, f.group === true);
  if (!peer) {
    if (f.group && ctx.mode === 'oscore') throw clientError('ERR_OSCORE_DECODE', 'Group Flag set in a plain OSCORE response');
    throw clientError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'response kid does not match a Recipient ID');
  }
  if (msg.payload.length === 0) throw clientError('ERR_OSCORE_DECODE', 'OSCORE message without payload');
  // draft-ietf-core-cacheable-oscore-02 §3.4.4 (client) step 2: a Request-Hash in the response must be the request's.
  const requestHashes = binding.requestHash ? msg.options.filter((o) => o.number === OPT_REQUEST_HASH) : [];
  // Request-Hash is not repeatable (draft-ietf-core-cacheable-oscore-02 §3.3): a second one would reach the
  // application as an unauthenticated outer option.
  if (requestHashes.length > 1) throw clientError('ERR_OSCORE_DECODE', 'more than one Request-Hash in the response');
  const requestHash = requestHashes[0];
  if (requestHash && !requestHash.value.equals(binding.requestHash!)) throw clientError('ERR_OSCORE_DECODE', 'Request-Hash of the response differs from the request\'s');
  // draft-ietf-core-cacheable-oscore-02 §3.4.4 step 5: the server MUST answer a Deterministic Request with its own
  // Partial IV; a response on the request's nonce (shared by every client of that request) is not accepted.
  if (binding.requestHash && !f.piv) throw clientError('ERR_OSCORE_DECODE', 'response to a Deterministic Request without the server\'s Partial IV');
  const notification = msg.options.some((o) => o.number === OPT.OBSERVE);
  // §4.1.3.5.2 / §8.4.2: Observe in a response to a non-Observe request: stop processing.
  if (notification && !binding.observe) throw new OscoreError('ERR_OSCORE_UNEXPECTED_OBSERVE', 'Observe in a response to a request without Observe registration');
  const seq = f.piv ? decodePartialIv(f.piv) : undefined;
  const tracked = binding.tracks(notification);
  // RFC 10021 §5.3.1 ("Replay Protection of Responses"): one Response Number per server.
  const responderKey = peer.recipientId.toString('hex');
  binding.checkResponse(seq, tracked, responderKey);
  // §8.4 step 4: own Partial IV → nonce from the Recipient ID; none → the request's nonce.
  const nonce = f.piv ? peer.recipientNonce(f.piv) : binding.nonce;
  const m: MessageBinding = {
    nonce,
    piv: f.piv ?? binding.piv,
    pivId: f.piv ? peer.recipientId : binding.kid,
    isRequest: false,
    requestKid: binding.kid,
    requestPiv: binding.piv,
    ...(binding.kidContext ? { requestKidContext: binding.kidContext } : {}),
    oscoreOption: value,
    ...(binding.classI ? { classI: binding.classI } : {}),
  };
  const plaintext = openOrThrow(peer, msg.payload, m, false);
  const inner = parsePlaintext(plaintext, false, false);
  const { newest } = binding.acceptResponse(seq, tracked, responderKey);
  const merged = mergeOptions(binding.requestHash ? msg.options.filter((o) => o !== requestHash) : msg.options, inner.options, toSet(opts.classE));
  let options = merged.options;
  if (notification) {
    // §7.4.1: ordering follows the Partial IV, not the Outer Observe. Copy its low 24 bits into the Observe value so
    // RFC 7641 reordering above this layer agrees with OSCORE's order.
    if (seq !== undefined) options = options.map((o) => (o.number === OPT.OBSERVE ? { number: OPT.OBSERVE, value: encodeUint(seq % 0x1000000) } : o));
  } else if (options.some((o) => o.number === OPT.OBSERVE)) {
    // No Outer Observe: verified as a non-Observe response (§4.1.3.5.2), so no Observe reaches the application.
    options = options.filter((o) => o.number !== OPT.OBSERVE);
  }
  return {
    message: { type: msg.type, code: inner.code, messageId: msg.messageId, token: msg.token, options, payload: inner.payload },
    responder: peer,
    ...(seq !== undefined ? { piv: seq } : {}),
    notification,
    newest,
    discarded: merged.discarded,
  };
}

/** Whether a message carries the OSCORE option (and so is for unprotectRequest / unprotectResponse). */
export function isProtected(msg: { options: CoapOption[] }): boolean {
  return msg.options.some((o) => o.number === OPT.OSCORE);
}

/**
 * Bindings for a request this endpoint protected but will answer itself, or that a client learned without sending
 * it: the phantom request of observe-multicast-notifications-15 §9, protected in group mode by the server. The
 * server protects its notifications with `server` (its own Sender Context; the request nonce is never reused, every
 * notification has its own Partial IV); a client, also a late joiner that got the phantom request from an
 * informative response, verifies them with `client`, whose kid / Partial IV / kid context are the phantom
 * request's (bound into every notification's external_aad). No replay check is made on the request itself (§9).
 */
export function bindOwnRequest(ctx: RequestContext, request: { options: CoapOption[] }): { client: ClientBinding; server: ServerBinding } {
  const value = request.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) throw new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'request has no OSCORE option');
  const f = decodeOscoreOption(value);
  if (!f.piv || f.kid === undefined) throw new OscoreError('ERR_OSCORE_DECODE', 'request without kid or Partial IV');
  const own = f.kid.equals(ctx.senderId);
  // The nonce of the request, from the Sender ID of its generator (RFC 8613 §5.2).
  const nonce = own ? ctx.senderNonce(f.piv) : ctx.responder(f.kid, f.group === true)?.recipientNonce(f.piv);
  if (!nonce) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'the request\'s kid is not a member of this context');
  const init = { kid: f.kid, piv: f.piv, nonce, ...(f.kidContext ? { kidContext: f.kidContext } : {}), observe: true };
  return {
    client: new ClientBinding({ ...init, context: ctx, multipleResponses: true }),
    // requestFresh false: the request nonce is never reused, each notification carries a Partial IV
    server: new ServerBinding({ ...init, context: ctx, requestFresh: false }),
  };
}
