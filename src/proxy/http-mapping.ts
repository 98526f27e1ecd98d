// The HTTP-CoAP mapping of the HTTP front (RFC 8075, RFC 7252 §10.2, groupcomm-proxy-07 §9.2-§9.6): methods (RFC
// 7252 §10.2, FETCH/PATCH of RFC 8132), Content-Type -> Content-Format and Accept -> Accept (RFC 8075 §6.1, §6.4;
// RFC 7252 §10.2.2), conditional requests (RFC 7252 §10.2.2, §5.10.6, §5.10.8), the Hosting HTTP URI in the default
// mapping of RFC 8075 §5.3 (`/hc/coap://...`) and the query template of §5.4.1.1 (`/hc?target_uri=coap://...`),
// CoAP response codes -> HTTP status (RFC 8075 §7, Table 2), the response header mapping, the groupcomm-proxy-07
// headers (Multicast-Timeout, Group-ETag, Reply-From, §9.2-§9.3) and the OSCORE header field (RFC 8613 §11.1-§11.3).

import { decodeCborSequence, encodeCbor } from '../cbor/cbor';
import { decodeBlock } from '../coap/block';
import { CODES, codeClass } from '../coap/codes';
import { CONTENT_FORMATS, contentFormatName } from '../coap/content-formats';
import { CoapOption } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { parseByteSequenceList, serializeByteSequenceList } from '../http/structured-fields';
import { MessageParts } from '../oscore/protect';

/** An HTTP refusal: the status RFC 8075 gives, and a fixed reason phrase (never client bytes). */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly code = 'ERR_HTTP_PROXY',
  ) {
    super(reason);
  }
}

/**
 * RFC 7252 §10.2: the HTTP methods that map to CoAP (FETCH and PATCH: RFC 8132); HEAD is a GET whose response has no
 * body (§10.2.3; node:http drops the body of a response to HEAD). Any other method, OPTIONS, TRACE and CONNECT
 * among them (§10.2.1, §10.2.7), gets 501.
 */
const METHODS: Record<string, number> = { GET: CODES.GET, HEAD: CODES.GET, POST: CODES.POST, PUT: CODES.PUT, DELETE: CODES.DELETE, FETCH: CODES.FETCH, PATCH: CODES.PATCH };

export function coapMethod(method: string | undefined): number {
  const name = (method ?? '').toUpperCase();
  const m = Object.hasOwn(METHODS, name) ? METHODS[name] : undefined;
  if (m === undefined) throw new HttpStatusError(501, 'method not mapped to CoAP', 'ERR_HTTP_METHOD');
  return m;
}

/** RFC 8613 §11.1: a message protected with OSCORE travels as application/oscore; not a CoAP Content-Format. */
export const OSCORE_MEDIA_TYPE = 'application/oscore';

/** RFC 8075 §6.2: the media type for a Content-Format the proxy has no name for (`application/coap-payload;cf=N`). */
export const COAP_PAYLOAD_MEDIA_TYPE = 'application/coap-payload';

/** One media type of a Content-Type or Accept field: type/subtype in lower case, its parameters, its q weight. */
interface MediaRange {
  type: string;
  params: Record<string, string>;
  q: number;
}

function parseMediaRange(text: string): MediaRange | undefined {
  const [type, ...rest] = text.split(';').map((x) => x.trim());
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+*-]+$/i.test(type) && type !== '*/*') return undefined;
  const params: Record<string, string> = {};
  let q = 1;
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq <= 0) continue;
    const k = p.slice(0, eq).trim().toLowerCase();
    const v = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    if (k === 'q') q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(v) ? Number(v) : 1;
    else params[k] = v.toLowerCase();
  }
  return { type: type.toLowerCase(), params, q };
}

/**
 * RFC 8075 §6.4: one media type -> its Content-Format, or undefined when there is none. text/plain is Content-Format 0
 * only in UTF-8 (or without a charset); other parameters are not part of the registry's entries and are dropped.
 */
function mediaTypeToContentFormat(m: MediaRange): number | undefined {
  if (m.type === 'text/plain') return m.params.charset === undefined || m.params.charset === 'utf-8' ? 0 : undefined;
  return CONTENT_FORMATS[m.type];
}

/**
 * RFC 8075 §6.1: Content-Type (with Content-Encoding) -> Content-Format; a combination the proxy cannot map gets 415.
 * Only the identity coding is mapped. RFC 8075 §6.2: application/coap-payload is not passed through (a client
 * error, here 415).
 */
export function contentFormatOf(contentType: string | undefined, contentEncoding?: string | string[]): number | undefined {
  const coding = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : contentEncoding ?? '').trim().toLowerCase();
  if (coding !== '' && coding !== 'identity') throw new HttpStatusError(415, 'content coding not mapped to CoAP', 'ERR_HTTP_MEDIA_TYPE');
  if (contentType === undefined || contentType.trim() === '') return undefined;
  const m = parseMediaRange(contentType);
  if (m?.type === OSCORE_MEDIA_TYPE) return undefined;
  const n = m && m.type !== '*/*' ? mediaTypeToContentFormat(m) : undefined;
  if (n === undefined) throw new HttpStatusError(415, 'media type not mapped to CoAP', 'ERR_HTTP_MEDIA_TYPE');
  return n;
}

/**
 * The Accept option for an HTTP Accept field. RFC 7252 §10.2.2: the most-preferred media type becomes the Accept
 * option; RFC 8075 §6.1: a field that cannot be mapped is silently ignored (no Accept option), and so is the full
 * range (any type). So only the types of the highest q are looked at (in the client's order, the first with a
 * Content-Format wins); a browser's `text/html, ..., application/xml;q=0.9` asks for HTML most, which CoAP has no
 * format for: no Accept option, rather than XML the client likes less. Ranges (`text/*`) are not supported by the
 * CoAP Accept option. application/coap-payload is refused (RFC 8075 §6.2: the proxy SHOULD NOT forward it; 406).
 */
export function acceptOption(field: string | string[] | undefined): CoapOption | undefined {
  if (field === undefined) return undefined;
  const ranges = (Array.isArray(field) ? field.join(',') : field)
    .split(',')
    .slice(0, 32)
    .map((t) => parseMediaRange(t))
    .filter((m): m is MediaRange => m !== undefined && m.q > 0);
  if (ranges.some((m) => m.type === COAP_PAYLOAD_MEDIA_TYPE)) throw new HttpStatusError(406, 'application/coap-payload not forwarded', 'ERR_HTTP_ACCEPT');
  const top = Math.max(...ranges.map((m) => m.q));
  const preferred = ranges.filter((m) => m.q === top);
  if (preferred.some((m) => m.type === '*/*')) return undefined;
  for (const m of preferred) {
    const cf = mediaTypeToContentFormat(m);
    if (cf !== undefined) return { number: OPT.ACCEPT, value: encodeUint(cf) };
  }
  return undefined;
}

/** An entity-tag this front wrote (`"<hex of the CoAP ETag>"`, see toHttpResponse) back as the CoAP ETag value. */
function etagValue(tag: string): Buffer {
  const m = /^"((?:[0-9a-f]{2}){1,8})"$/i.exec(tag.trim());
  // a weak tag (W/"...") or one that no CoAP ETag became has no CoAP counterpart: the condition cannot be mapped
  if (!m) throw new HttpStatusError(400, 'entity-tag not mapped to CoAP', 'ERR_HTTP_ETAG');
  return Buffer.from(m[1], 'hex');
}

function tagList(field: string | string[]): string[] {
  return (Array.isArray(field) ? field.join(',') : field).split(',').map((t) => t.trim()).filter((t) => t !== '');
}

/**
 * Conditional requests (RFC 7252 §10.2.2; the options of §5.10.6 and §5.10.8). Mapped: `If-Match: *` -> one empty
 * If-Match, `If-Match: "t1", "t2"` -> one If-Match per tag; `If-None-Match: *` -> If-None-Match; `If-None-Match:
 * "t1", ...` on GET / HEAD / FETCH -> one ETag option per tag (validation, §5.10.6.2: a server whose current ETag is
 * among them answers 2.03, which becomes a 304 part). Refused with 400: weak or foreign entity-tags, and tags in
 * If-None-Match on other methods (CoAP's If-None-Match carries no value). If-Modified-Since and If-Unmodified-Since
 * have no CoAP counterpart and are ignored (§10.2.2: a caching proxy's local business). Each member of a group
 * evaluates the conditions on its own; the group-level validator is Group-ETag (groupcomm-proxy-07 §9.3).
 */
export function conditionalOptions(headers: { 'if-match'?: string | string[]; 'if-none-match'?: string | string[] }, code: number): CoapOption[] {
  const out: CoapOption[] = [];
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    const tags = tagList(ifMatch);
    if (tags.length > 8) throw new HttpStatusError(400, 'too many entity-tags', 'ERR_HTTP_ETAG');
    if (tags.length === 1 && tags[0] === '*') out.push({ number: OPT.IF_MATCH, value: Buffer.alloc(0) });
    else for (const t of tags) out.push({ number: OPT.IF_MATCH, value: etagValue(t) });
  }
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    const tags = tagList(ifNoneMatch);
    if (tags.length > 8) throw new HttpStatusError(400, 'too many entity-tags', 'ERR_HTTP_ETAG');
    if (tags.length === 1 && tags[0] === '*') out.push({ number: OPT.IF_NONE_MATCH, value: Buffer.alloc(0) });
    else if (code === CODES.GET || code === CODES.FETCH) for (const t of tags) out.push({ number: OPT.ETAG, value: etagValue(t) });
    else if (tags.length) throw new HttpStatusError(400, 'If-None-Match with entity-tags not mapped to CoAP for this method', 'ERR_HTTP_ETAG');
  }
  return out;
}

/**
 * The target CoAP URI from a Hosting HTTP URI, the request target relative to `base`. Two forms:
 * - RFC 8075 §5.4.1.1 example 1 (template `?target_uri={+tu}`): the rest of the query. {+tu} copies the URI as it
 *   is, reserved characters included, so everything after `target_uri=` is the target (a query of its own and `+`
 *   stay intact); a client that percent-encoded it as one query value (`coap%3A%2F%2F...`) is decoded.
 * - RFC 8075 §5.3 (the default mapping): the target appended as it is; only the square brackets of an IPv6 literal
 *   are percent-encoded and reverted here (§5.3.2); everything else is copied verbatim. A target encoded as one
 *   path segment (`/hc/coap%3A%2F%2F...`) is decoded.
 */
export function targetFromHostingUri(requestTarget: string, base: string): string {
  if (!requestTarget.startsWith(base)) throw new HttpStatusError(404, 'not a proxy resource', 'ERR_HTTP_NOT_FOUND');
  const rest = requestTarget.slice(base.length).replace(/^\//, '');
  const encodedWhole = (t: string) => /^coaps?%3a/i.test(t);
  const decode = (t: string) => {
    try {
      return decodeURIComponent(t);
    } catch {
      throw new HttpStatusError(400, 'target URI not parseable', 'ERR_HTTP_TARGET');
    }
  };
  if (rest === '' || rest.startsWith('?')) {
    const m = /^\?target_uri=(.*)$/s.exec(rest);
    if (!m || m[1] === '') throw new HttpStatusError(400, 'no target URI', 'ERR_HTTP_NO_TARGET');
    return encodedWhole(m[1]) ? decode(m[1]) : m[1].replace(/%5b/gi, '[').replace(/%5d/gi, ']');
  }
  return encodedWhole(rest) ? decode(rest) : rest.replace(/%5b/gi, '[').replace(/%5d/gi, ']');
}

/**
 * RFC 8075 §5.3.1: a target without its scheme (no local default is agreed) is a client error, 400 here, as is an
 * unparseable one or one of a scheme that is not CoAP's. A coaps target is a CoAP URI this proxy cannot serve (no
 * DTLS, and RFC 8075 §10.3 rejects it without a security policy mapping): 501, as RFC 7252 §10.2 says for a
 * request with a CoAP URI the proxy is unable or unwilling to service.
 */
export function checkTarget(target: string): string {
  let u: URL;
  try {
    u = new URL(target);
  } catch {
    throw new HttpStatusError(400, 'target URI not parseable', 'ERR_HTTP_TARGET');
  }
  if (u.protocol === 'coaps:') throw new HttpStatusError(501, 'coaps not supported', 'ERR_HTTP_SCHEME');
  if (u.protocol !== 'coap:') throw new HttpStatusError(400, 'target URI scheme not supported', 'ERR_HTTP_SCHEME');
  if (!u.hostname) throw new HttpStatusError(400, 'target URI not parseable', 'ERR_HTTP_TARGET');
  return target;
}

/**
 * groupcomm-proxy-07 §9.2: Multicast-Timeout = *DIGIT, an empty field means 0. Absent stays absent (the proxy then
 * refuses as §5.2.1 step 3 says); anything but digits is a 400.
 */
export function multicastTimeoutOption(field: string | string[] | undefined): CoapOption | undefined {
  if (field === undefined) return undefined;
  const v = (Array.isArray(field) ? field.join(',') : field).trim();
  if (!/^\d*$/.test(v) || v.length > 10) throw new HttpStatusError(400, 'bad Multicast-Timeout', 'ERR_HTTP_MULTICAST_TIMEOUT');
  const n = v === '' ? 0 : Number(v);
  if (n > 0xffffffff) throw new HttpStatusError(400, 'bad Multicast-Timeout', 'ERR_HTTP_MULTICAST_TIMEOUT');
  return { number: optionNumber('Multicast-Timeout'), value: encodeUint(n) };
}

/** groupcomm-proxy-07 §9.3: Group-ETag in a request, an SF List with at least one member; other forms are ignored. */
export function groupEtagOptions(field: string | string[] | undefined): CoapOption[] {
  const items = parseByteSequenceList(field);
  if (!items || items.length === 0) return [];
  // RFC 7252 §5.10 bounds the Group-ETag option like ETag (1-8 bytes); a member outside them voids the field.
  if (items.some((b) => b.length < 1 || b.length > 8)) return [];
  return items.map((value) => ({ number: optionNumber('Group-ETag'), value }));
}

/**
 * RFC 8613 §11.3: the OSCORE header field (`2*base64url-char`, §11.1) -> the option value; `AA` (one zero byte)
 * stands for the empty option. The header is used only in POST requests (§11.1): with another method it is a 400.
 */
export function oscoreOption(field: string | string[] | undefined, method = 'POST'): CoapOption | undefined {
  if (field === undefined) return undefined;
  const v = (Array.isArray(field) ? field[0] : field).trim();
  if (!/^[A-Za-z0-9_-]{2,340}$/.test(v) || v.length % 4 === 1) throw new HttpStatusError(400, 'bad OSCORE header', 'ERR_HTTP_OSCORE');
  if (method.toUpperCase() !== 'POST') throw new HttpStatusError(400, 'OSCORE header only in POST', 'ERR_HTTP_OSCORE');
  const value = Buffer.from(v, 'base64url');
  return { number: OPT.OSCORE, value: value.length === 1 && value[0] === 0 ? Buffer.alloc(0) : value };
}

/** RFC 8613 §11.2: the OSCORE option -> the header field: `AA` for the empty option, else base64url without padding. */
export function oscoreHeader(value: Buffer): string {
  return value.length === 0 ? 'AA' : value.toString('base64url');
}

/** Reason phrases that differ from the status's usual one (RFC 8075 §7 note 7). */
const REASON_405 = 'CoAP server returned 4.05';

/**
 * RFC 8075 §7, Table 2: CoAP response code -> HTTP status. Where the table gives two, the notes decide: 2.02 / 2.04
 * are 200 with a payload and 204 without (note 2); 2.03 is 304, since this proxy sends 2.03-eliciting validators only
 * when the HTTP client made a conditional request (note 3; it has no local HTTP cache, note 4); 4.02 is 500, since
 * the proxy cannot tell whether the bad option came from a client header (note 6). 2.31 and 4.08 belong to block-wise
 * transfers between proxy and server and are never translated (note 10); this proxy sends no Block1, so a server
 * that answers with them is not understood: 502 (RFC 7252 §10.2). Codes after RFC 8075, outside Table 2: 4.09
 * Conflict (RFC 8132) -> 409, 4.29 Too Many Requests (RFC 8516) -> 429, 5.08 Hop Limit Reached (RFC 8768) -> 508
 * Loop Detected: the HTTP status of the same meaning. Other codes by class: 2.xx 200, 4.xx 400, 5.xx 500.
 */
export function httpStatus(code: number, hasPayload: boolean): number {
  switch (code) {
    case CODES.CREATED: return 201;
    case CODES.DELETED:
    case CODES.CHANGED: return hasPayload ? 200 : 204;
    case CODES.VALID: return 304;
    case CODES.CONTENT: return 200;
    case CODES.CONTINUE: return 502;
    case CODES.BAD_REQUEST: return 400;
    case CODES.UNAUTHORIZED: return 403;
    case CODES.BAD_OPTION: return 500;
    case CODES.FORBIDDEN: return 403;
    case CODES.NOT_FOUND: return 404;
    case CODES.METHOD_NOT_ALLOWED: return 400;
    case CODES.NOT_ACCEPTABLE: return 406;
    case CODES.REQUEST_ENTITY_INCOMPLETE: return 502;
    case CODES.CONFLICT: return 409;
    case CODES.PRECONDITION_FAILED: return 412;
    case CODES.REQUEST_ENTITY_TOO_LARGE: return 413;
    case CODES.UNSUPPORTED_CONTENT_FORMAT: return 415;
    case CODES.TOO_MANY_REQUESTS: return 429;
    case CODES.INTERNAL_SERVER_ERROR: return 500;
    case CODES.NOT_IMPLEMENTED: return 501;
    case CODES.BAD_GATEWAY: return 502;
    case CODES.SERVICE_UNAVAILABLE: return 503;
    case CODES.GATEWAY_TIMEOUT: return 504;
    case CODES.PROXYING_NOT_SUPPORTED: return 502;
    case CODES.HOP_LIMIT_REACHED: return 508;
  }
  const cls = codeClass(code);
  return cls === 2 ? 200 : cls === 4 ? 400 : 500;
}

export const REASONS: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 406: 'Not Acceptable', 409: 'Conflict',
  412: 'Precondition Failed', 413: 'Content Too Large', 414: 'URI Too Long', 415: 'Unsupported Media Type', 429: 'Too Many Requests', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout', 508: 'Loop Detected',
};

/** The fixed reason and body of a block-wise CoAP response, which this front does not reassemble. */
export const BLOCKWISE_REASON = 'Block-wise CoAP response not supported';
const BLOCKWISE_BODY = 'the server answered block-wise (Block2); this front does not fetch the further blocks';

export interface HttpResponseParts {
  status: number;
  /** a reason phrase other than the status's usual one (never client or server bytes) */
  reason?: string;
  headers: [string, string][];
  body: Buffer;
}

/**
 * A CoAP response as an HTTP response: the status of RFC 8075 §7 (Table 2); Content-Format -> Content-Type (RFC 8075
 * §6.1, `application/coap-payload;cf=N` for a number without a name, §6.2); Max-Age -> `Cache-Control: max-age`
 * (RFC 7252 §10.2.2; a 2.05 without Max-Age is fresh for the default 60 s, §5.10.5), but -> `Retry-After` on 5.03
 * (RFC 8075 §7 note 8) and 4.29 (RFC 8516 gives Max-Age the same meaning there); ETag -> ETag; Location-* ->
 * Location (§10.2.4); a diagnostic payload of an error goes to the body as UTF-8 text (RFC 8075 §6.5.3), never into
 * the reason phrase; Reply-From and Group-ETag per groupcomm-proxy-07 §9.2-§9.3; OSCORE per RFC 8613 §11.2: the
 * header, body application/oscore, status 200 (§11.1: the header travels only in 200 responses; the outer 2.04 is a
 * 200 by Table 2 anyway).
 */
export function toHttpResponse(parts: MessageParts): HttpResponseParts {
  const options = parts.options ?? [];
  const body = parts.payload ?? Buffer.alloc(0);
  const headers: [string, string][] = [];
  const oscore = options.find((o) => o.number === OPT.OSCORE);
  let status = httpStatus(parts.code, body.length > 0);
  let reason: string | undefined;
  if (oscore) {
    status = 200;
    headers.push(['OSCORE', oscoreHeader(oscore.value)]);
    headers.push(['Content-Type', OSCORE_MEDIA_TYPE]);
  } else if (parts.code === CODES.METHOD_NOT_ALLOWED) reason = REASON_405;
  const rfNum = optionNumber('Reply-From');
  const getNum = optionNumber('Group-ETag');
  const mtNum = optionNumber('Multicast-Timeout');
  const retry = parts.code === CODES.SERVICE_UNAVAILABLE || parts.code === CODES.TOO_MANY_REQUESTS;
  let typed = false;
  let maxAge = false;
  for (const o of options) {
    if (o.number === OPT.CONTENT_FORMAT && !oscore) {
      const n = o.value.length <= 2 ? decodeUint(o.value) : -1;
      if (n < 0) continue;
      typed = true;
      headers.push(['Content-Type', n === 0 ? 'text/plain; charset=utf-8' : contentFormatName(n) ?? `${COAP_PAYLOAD_MEDIA_TYPE};cf=${n}`]);
    } else if (o.number === OPT.MAX_AGE && o.value.length <= 4) {
      maxAge = true;
      headers.push(retry ? ['Retry-After', String(decodeUint(o.value))] : ['Cache-Control', `max-age=${decodeUint(o.value)}`]);
    } else if (o.number === OPT.ETAG) headers.push(['ETag', `"${o.value.toString('hex')}"`]);
    else if (o.number === rfNum) {
      const items = replyFromItems(o.value);
      if (items) headers.push(['Reply-From', serializeByteSequenceList(items)]);
    } else if (o.number === getNum) headers.push(['Group-ETag', serializeByteSequenceList([o.value])]);
    // groupcomm-proxy-07 §9.2: the option maps 1:1 to the header, an empty option to an empty field.
    else if (o.number === mtNum && o.value.length <= 4) headers.push(['Multicast-Timeout', o.value.length ? String(decodeUint(o.value)) : '']);
  }
  // RFC 7252 §5.10.5: no Max-Age means 60 s of freshness, which §10.2.2 has the proxy state.
  if (!oscore && !maxAge && parts.code === CODES.CONTENT) headers.push(['Cache-Control', 'max-age=60']);
  // RFC 7252 §5.5.2: the payload of an error response without a Content-Format is a UTF-8 diagnostic message.
  if (!oscore && !typed && body.length > 0 && codeClass(parts.code) >= 4) headers.push(['Content-Type', 'text/plain; charset=utf-8']);
  const location = locationOf(options);
  if (location) headers.push(['Location', location]);
  // RFC 7959 §2.2: Block2 with M=1 is the first block of a larger representation. This front does not fetch the
  // other blocks (RFC 8075 §8.3), so the response cannot be translated whole: 502 (RFC 8075 §7), never a truncated
  // 200. Reply-From still names the server. Under OSCORE the Block2 seen here is outer (RFC 8613 §4.1.3.4) and the
  // client reads the whole exchange itself.
  const block2 = oscore ? undefined : options.find((o) => o.number === OPT.BLOCK2);
  if (block2 && block2.value.length <= 3 && decodeBlock(block2.value).more) {
    return { status: 502, reason: BLOCKWISE_REASON, headers: [...headers.filter(([k]) => k === 'Reply-From'), ['Content-Type', 'text/plain; charset=utf-8']], body: Buffer.from(BLOCKWISE_BODY) };
  }
  return reason ? { status, reason, headers, body } : { status, headers, body };
}

/** RFC 3986 §3.3 pchar: what percent-encoding may leave as it is in a path segment (plus "/" "?" in a query, §3.4). */
function encodeComponent(v: Buffer, query: boolean): string {
  const keep = query ? /%(21|24|27|28|29|2A|2B|2C|3B|3D|3A|40|2F|3F)/g : /%(21|24|26|27|28|29|2A|2B|2C|3B|3D|3A|40)/g;
  return encodeURIComponent(v.toString('utf8')).replace(keep, (m) => decodeURIComponent(m));
}

/** RFC 7252 §6.5 steps 7-8, for the Location header of §10.2.4: the Location-* options as a relative URI. */
function locationOf(options: CoapOption[]): string | undefined {
  const path = options.filter((o) => o.number === OPT.LOCATION_PATH).map((o) => encodeComponent(o.value, false));
  const query = options.filter((o) => o.number === OPT.LOCATION_QUERY).map((o) => encodeComponent(o.value, true));
  if (!path.length && !query.length) return undefined;
  return `/${path.join('/')}${query.length ? `?${query.join('&')}` : ''}`;
}

/** groupcomm-proxy-07 §9.2: item i of the header is the bytes of CBOR array i of the Reply-From option. */
export function replyFromItems(value: Buffer): Buffer[] | undefined {
  try {
    const arrays = decodeCborSequence(value);
    if (arrays.length < 1 || arrays.length > 2) return undefined;
    return arrays.map((a) => encodeCbor(a));
  } catch {
    return undefined;
  }
}

/** The other direction, for clients: the Reply-From header as the CoAP option value (undefined when malformed). */
export function replyFromValue(field: string | string[] | undefined): Buffer | undefined {
  const items = parseByteSequenceList(field);
  // §9.2: exactly 1 or 2 Byte Sequences; any other form means the field is ignored.
  if (!items || items.length < 1 || items.length > 2) return undefined;
  return Buffer.concat(items);
}
