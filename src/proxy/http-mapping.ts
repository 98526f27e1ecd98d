// The HTTP-CoAP mapping of the HTTP front (RFC 8075, groupcomm-proxy-07 §9.2-§9.6): methods (RFC 8075 §6.1),
// Content-Type <-> Content-Format (§6.2), the Hosting HTTP URI in both forms of §5 (`?target_uri=coap://...` and
// the path form `/hc/coap://...`), CoAP response codes -> HTTP status (§7, Table 4), the response header mapping,
// the groupcomm-proxy-07 headers (Multicast-Timeout, Group-ETag, Reply-From, §9.2-§9.3) and the OSCORE header of
// RFC 8613 §11.1 (the option value in base64url without padding).

import { decodeCborSequence, encodeCbor } from '../cbor/cbor';
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

/** RFC 8075 §6.1: the HTTP methods that map to CoAP; any other gets 501. */
const METHODS: Record<string, number> = { GET: CODES.GET, POST: CODES.POST, PUT: CODES.PUT, DELETE: CODES.DELETE, FETCH: CODES.FETCH, PATCH: CODES.PATCH };

export function coapMethod(method: string | undefined): number {
  const m = METHODS[(method ?? '').toUpperCase()];
  if (m === undefined) throw new HttpStatusError(501, 'method not mapped to CoAP', 'ERR_HTTP_METHOD');
  return m;
}

/** RFC 8613 §11.1: a message protected with OSCORE travels as application/oscore; not a CoAP Content-Format. */
export const OSCORE_MEDIA_TYPE = 'application/oscore';

/** RFC 8075 §6.2: Content-Type -> Content-Format; unknown media types get 415. */
export function contentFormatOf(contentType: string | undefined): number | undefined {
  if (contentType === undefined || contentType.trim() === '') return undefined;
  const norm = contentType.toLowerCase().replace(/\s+/g, '');
  const bare = norm.split(';')[0];
  if (bare === OSCORE_MEDIA_TYPE) return undefined;
  const n = CONTENT_FORMATS[norm] ?? (bare === 'text/plain' ? 0 : CONTENT_FORMATS[bare]);
  if (n === undefined) throw new HttpStatusError(415, 'media type not mapped to CoAP', 'ERR_HTTP_MEDIA_TYPE');
  return n;
}

/** The target CoAP URI from a Hosting HTTP URI (RFC 8075 §5.3-§5.4), the request target relative to `base`. */
export function targetFromHostingUri(requestTarget: string, base: string): string {
  if (!requestTarget.startsWith(base)) throw new HttpStatusError(404, 'not a proxy resource', 'ERR_HTTP_NOT_FOUND');
  const rest = requestTarget.slice(base.length).replace(/^\//, '');
  const q = rest.indexOf('?');
  // §5.3 (default template "?target_uri={+tu}"): the query form, percent-decoded.
  if (rest === '' || rest.startsWith('?')) {
    const params = new URLSearchParams(q >= 0 ? rest.slice(q + 1) : '');
    const t = params.get('target_uri');
    if (!t) throw new HttpStatusError(400, 'no target URI', 'ERR_HTTP_NO_TARGET');
    return t;
  }
  // §5.4 (template "{+tu}"): the target URI follows the base as a path.
  let t: string;
  try {
    t = decodeURIComponent(rest);
  } catch {
    throw new HttpStatusError(400, 'target URI not parseable', 'ERR_HTTP_TARGET');
  }
  return t;
}

/** RFC 8075 §5: the scheme must be one the proxy maps to; an unparseable URI is a 400. */
export function checkTarget(target: string): string {
  let u: URL;
  try {
    u = new URL(target);
  } catch {
    throw new HttpStatusError(400, 'target URI not parseable', 'ERR_HTTP_TARGET');
  }
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

/** RFC 8613 §11.1: the OSCORE header field is the option value in base64url without padding ("" for an empty one). */
export function oscoreOption(field: string | string[] | undefined): CoapOption | undefined {
  if (field === undefined) return undefined;
  const v = (Array.isArray(field) ? field[0] : field).trim();
  if (!/^[A-Za-z0-9_-]*$/.test(v) || v.length > 340) throw new HttpStatusError(400, 'bad OSCORE header', 'ERR_HTTP_OSCORE');
  return { number: OPT.OSCORE, value: Buffer.from(v, 'base64url') };
}

/** RFC 8075 §7, Table 4: CoAP response code -> HTTP status. */
export function httpStatus(code: number, hasPayload: boolean): number {
  switch (code) {
    case CODES.CREATED: return 201;
    case CODES.DELETED:
    case CODES.CHANGED: return hasPayload ? 200 : 204;
    case CODES.VALID: return 304;
    case CODES.CONTENT: return 200;
    case CODES.UNAUTHORIZED:
    case CODES.FORBIDDEN: return 403;
    case CODES.NOT_FOUND: return 404;
    case CODES.NOT_ACCEPTABLE: return 406;
    case CODES.PRECONDITION_FAILED: return 412;
    case CODES.REQUEST_ENTITY_TOO_LARGE: return 413;
    case CODES.UNSUPPORTED_CONTENT_FORMAT: return 415;
    case CODES.TOO_MANY_REQUESTS: return 429;
    case CODES.NOT_IMPLEMENTED: return 501;
    case CODES.BAD_GATEWAY:
    case CODES.PROXYING_NOT_SUPPORTED: return 502;
    case CODES.SERVICE_UNAVAILABLE: return 503;
    case CODES.GATEWAY_TIMEOUT: return 504;
    case CODES.HOP_LIMIT_REACHED: return 508;
  }
  const cls = codeClass(code);
  return cls === 2 ? 200 : cls === 4 ? 400 : 500;
}

export const REASONS: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 406: 'Not Acceptable', 412: 'Precondition Failed',
  413: 'Content Too Large', 415: 'Unsupported Media Type', 429: 'Too Many Requests', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout', 508: 'Loop Detected',
};

export interface HttpResponseParts {
  status: number;
  headers: [string, string][];
  body: Buffer;
}

/**
 * A CoAP response as an HTTP response (RFC 8075 §7 and §6.3 for the options; groupcomm-proxy-07 §9.2-§9.3 for
 * Reply-From and Group-ETag; RFC 8613 §11.1 for OSCORE, whose outer code 2.04 maps to 200 and whose body is
 * application/oscore).
 */
export function toHttpResponse(parts: MessageParts): HttpResponseParts {
  const options = parts.options ?? [];
  const body = parts.payload ?? Buffer.alloc(0);
  const headers: [string, string][] = [];
  const oscore = options.find((o) => o.number === OPT.OSCORE);
  let status = httpStatus(parts.code, body.length > 0);
  if (oscore) {
    status = 200;
    headers.push(['OSCORE', oscore.value.toString('base64url')]);
    headers.push(['Content-Type', OSCORE_MEDIA_TYPE]);
  }
  const rfNum = optionNumber('Reply-From');
  const getNum = optionNumber('Group-ETag');
  const mtNum = optionNumber('Multicast-Timeout');
  for (const o of options) {
    if (o.number === OPT.CONTENT_FORMAT && !oscore) {
      const n = o.value.length <= 2 ? decodeUint(o.value) : -1;
      headers.push(['Content-Type', n === 0 ? 'text/plain; charset=utf-8' : contentFormatName(n) ?? 'application/octet-stream']);
    } else if (o.number === OPT.MAX_AGE && o.value.length <= 4) headers.push(['Cache-Control', `max-age=${decodeUint(o.value)}`]);
    else if (o.number === OPT.ETAG) headers.push(['ETag', `"${o.value.toString('hex')}"`]);
    else if (o.number === rfNum) {
      const items = replyFromItems(o.value);
      if (items) headers.push(['Reply-From', serializeByteSequenceList(items)]);
    } else if (o.number === getNum) headers.push(['Group-ETag', serializeByteSequenceList([o.value])]);
    // groupcomm-proxy-07 §9.2: the option maps 1:1 to the header, an empty option to an empty field.
    else if (o.number === mtNum && o.value.length <= 4) headers.push(['Multicast-Timeout', o.value.length ? String(decodeUint(o.value)) : '']);
  }
  const location = locationOf(options);
  if (location) headers.push(['Location', location]);
  return { status, headers, body };
}

function locationOf(options: CoapOption[]): string | undefined {
  const path = options.filter((o) => o.number === OPT.LOCATION_PATH).map((o) => encodeURIComponent(o.value.toString('utf8')));
  const query = options.filter((o) => o.number === OPT.LOCATION_QUERY).map((o) => encodeURIComponent(o.value.toString('utf8')));
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
