// CoAP URIs (RFC 7252 §6) and group URIs (groupcomm-bis §2.2.1.1 / RFC 10020): IPv4, IPv6 with zone ids
// (RFC 6874, accepting both "%25eth0" and the bare "%eth0" people type), default port 5683, and the mapping
// between a URI and the Uri-* options (§6.4, §6.5). Written by hand because WHATWG URL rejects zone ids.

import net from 'node:net';
import { CODES } from './codes';
import { CoapResponseError } from './errors';
import { CoapOption } from './message';
import { OPT, decodeUint, encodeUint } from './options';

export const DEFAULT_PORT = 5683;
export const DEFAULT_SECURE_PORT = 5684;

export interface CoapUri {
  scheme: string;
  /** host without brackets and without zone id */
  host: string;
  /** IPv6 zone id (interface name or index), if any */
  zone?: string;
  port: number;
  /** decoded path segments */
  path: string[];
  /** decoded query parameters, in order */
  query: string[];
  family: 4 | 6 | 0; // 0 = host name
}

/**
 * A URI that cannot be used. Its text is fixed (it never quotes the URI: a proxy answers a client's bad URI with
 * this as a 4.00 diagnostic, RFC 7252 §5.5.2, and must not echo the client's bytes).
 */
export class UriError extends CoapResponseError {
  override name = 'UriError';
  constructor(diagnostic: string) {
    super({ responseCode: CODES.BAD_REQUEST, diagnostic, code: 'ERR_COAP_URI' });
  }
}

const SCHEMES: Record<string, number> = { coap: DEFAULT_PORT, coaps: DEFAULT_SECURE_PORT, 'coap+tcp': DEFAULT_PORT, 'coaps+tcp': DEFAULT_SECURE_PORT };

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new UriError('bad percent-encoding in URI');
  }
}

export function parseUri(text: string): CoapUri {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(\[[^\]]*\]|[^/:?#]*)(?::(\d*))?([^?#]*)(?:\?([^#]*))?(#.*)?$/.exec(text.trim());
  if (!m) throw new UriError('not an absolute CoAP URI');
  const scheme = m[1].toLowerCase();
  if (!(scheme in SCHEMES)) throw new UriError('unsupported URI scheme');
  // RFC 7252 §6.4 step 1: a fragment is not allowed.
  if (m[6]) throw new UriError('a CoAP URI must not have a fragment');
  let host = m[2];
  let zone: string | undefined;
  let family: 4 | 6 | 0;
  if (host.startsWith('[')) {
    host = host.slice(1, -1);
    const pct = host.indexOf('%');
    if (pct >= 0) {
      zone = decode(host.slice(pct + 1).replace(/^25/, ''));
      host = host.slice(0, pct);
      if (!zone) throw new UriError('empty IPv6 zone id');
    }
    if (!net.isIPv6(host)) throw new UriError('invalid IPv6 literal');
    host = host.toLowerCase();
    family = 6;
  } else {
    host = decode(host).toLowerCase();
    if (!host) throw new UriError('a CoAP URI needs a host');
    // RFC 7252 §6.1: no userinfo in coap URIs.
    if (host.includes('@')) throw new UriError('a CoAP URI has no userinfo');
    family = net.isIPv4(host) ? 4 : 0;
  }
  const port = m[3] ? Number(m[3]) : SCHEMES[scheme];
  // Port 0 names no destination (a socket cannot send to it).
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UriError('invalid port');
  const rawPath = m[4] ?? '';
  const path = rawPath === '' || rawPath === '/' ? [] : rawPath.replace(/^\//, '').split('/').map(decode);
  const query = m[5] !== undefined && m[5] !== '' ? m[5].split('&').map(decode) : [];
  return { scheme, host, zone, port, path, query, family };
}

/** IPv4 224/4 or IPv6 ff00::/8; a zone id ("ff02::fd%eth0") is ignored. */
export function isMulticastAddress(address: string): boolean {
  address = address.split('%')[0];
  if (net.isIPv4(address)) {
    const first = Number(address.split('.')[0]);
    return first >= 224 && first <= 239;
  }
  return net.isIPv6(address) && /^ff/i.test(address);
}

export function isGroupUri(uri: CoapUri): boolean {
  return uri.family !== 0 && isMulticastAddress(uri.host);
}

// RFC 3986 pchar keeps ":" and "@" (and sub-delims); "=" stays readable in query items, "&" separates them.
function encodeSegment(s: string): string {
  return encodeURIComponent(s).replace(/%3A/gi, ':').replace(/%40/gi, '@');
}
function encodeQueryItem(s: string): string {
  return encodeSegment(s).replace(/%3D/gi, '=').replace(/%2F/gi, '/').replace(/%3F/gi, '?');
}

/** Authority text for an address as it appears in a URI: "[::1%25lo]:5683" / "127.0.0.2:5683". */
export function formatAuthority(host: string, port: number, zone?: string, defaultPort = DEFAULT_PORT): string {
  const h = net.isIPv6(host) ? `[${host}${zone ? '%25' + encodeURIComponent(zone) : ''}]` : host;
  return port === defaultPort ? h : `${h}:${port}`;
}

export function formatUri(uri: Partial<CoapUri> & { host: string }): string {
  const scheme = uri.scheme ?? 'coap';
  const port = uri.port ?? SCHEMES[scheme] ?? DEFAULT_PORT;
  let text = `${scheme}://${formatAuthority(uri.host, port, uri.zone, SCHEMES[scheme])}`;
  if (uri.path && uri.path.length) text += '/' + uri.path.map(encodeSegment).join('/');
  if (uri.query && uri.query.length) text += '?' + uri.query.map(encodeQueryItem).join('&');
  return text;
}

/** Origin URI of a server seen at address:port, as msg.topic shows it. */
export function originUri(address: string, port: number, scheme = 'coap'): string {
  const pct = address.indexOf('%');
  return formatUri({ scheme, host: pct >= 0 ? address.slice(0, pct) : address, zone: pct >= 0 ? address.slice(pct + 1) : undefined, port });
}

/**
 * RFC 7252 §6.4: the Uri-* options for a request to `uri`. Uri-Host is left out when the host is an IP literal
 * (the destination address already says it) and Uri-Port when it equals the destination port.
 */
export function uriToOptions(uri: CoapUri, opts: { includeHost?: boolean; destinationPort?: number } = {}): CoapOption[] {
  const out: CoapOption[] = [];
  const includeHost = opts.includeHost ?? uri.family === 0;
  if (includeHost) out.push({ number: OPT.URI_HOST, value: Buffer.from(uri.host, 'utf8') });
  if (opts.destinationPort !== undefined && uri.port !== opts.destinationPort) out.push({ number: OPT.URI_PORT, value: encodeUint(uri.port) });
  for (const seg of uri.path) out.push({ number: OPT.URI_PATH, value: Buffer.from(seg, 'utf8') });
  for (const q of uri.query) out.push({ number: OPT.URI_QUERY, value: Buffer.from(q, 'utf8') });
  return out;
}

/** RFC 7252 §6.5: rebuild a URI from a request's options and the address it arrived on. */
export function optionsToUri(options: CoapOption[], scheme: string, destHost: string, destPort: number): CoapUri {
  let host = destHost;
  let port = destPort;
  const path: string[] = [];
  const query: string[] = [];
  for (const o of options) {
    if (o.number === OPT.URI_HOST) host = o.value.toString('utf8').toLowerCase();
    else if (o.number === OPT.URI_PORT) port = decodeUint(o.value);
    else if (o.number === OPT.URI_PATH) path.push(o.value.toString('utf8'));
    else if (o.number === OPT.URI_QUERY) query.push(o.value.toString('utf8'));
  }
  const bare = host.replace(/^\[|\]$/g, '');
  const pct = bare.indexOf('%');
  const h = pct >= 0 ? bare.slice(0, pct) : bare;
  return { scheme, host: h, zone: pct >= 0 ? bare.slice(pct + 1) : undefined, port, path, query, family: net.isIPv4(h) ? 4 : net.isIPv6(h) ? 6 : 0 };
}

/**
 * The Uri-Host value for a host (RFC 7252 §6.4 step 5: the host component of the URI): an IPv6 literal goes in
 * brackets, as an IP-literal of RFC 3986 §3.2.2, with its zone id ("fe80::1%eth0" -> "[fe80::1%eth0]", which
 * optionsToUri reads back); IPv4 literals and host names as they are.
 */
export function uriHostValue(host: string, zone?: string): Buffer {
  const pct = host.indexOf('%');
  const bare = pct >= 0 ? host.slice(0, pct) : host;
  const z = zone ?? (pct >= 0 ? host.slice(pct + 1) : undefined);
  return Buffer.from(net.isIPv6(bare) ? `[${bare}${z ? '%' + z : ''}]` : bare, 'utf8');
}

/** Address string for node:dgram: IPv6 link-local / multicast with a zone become "ff02::fd%eth0". */
export function socketAddress(uri: Pick<CoapUri, 'host' | 'zone'>): string {
  return uri.zone ? `${uri.host}%${uri.zone}` : uri.host;
}
