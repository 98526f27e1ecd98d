// Proxy-Uri under OSCORE (RFC 8613 §4.1.3.3): the sender splits Proxy-Uri into Proxy-Scheme, Uri-Host, Uri-Port
// (class U, recomposed into the Outer Proxy-Uri per RFC 7252 §6.5) and Uri-Path, Uri-Query (class E, Inner). The
// receiver that finds an Outer Proxy-Uri next to Inner Uri-Path / Uri-Query (a forward proxy that is the OSCORE
// endpoint, oscore-capable-proxies-07 §2.4) puts the URI back together. CoAP schemes go through coap/uri.ts;
// other schemes (a CoAP-to-HTTP proxy) are split generically per RFC 3986 Appendix B.

import { CoapOption } from '../coap/message';
import { OPT } from '../coap/options';
import { parseUri, formatUri, UriError } from '../coap/uri';

export interface SplitProxyUri {
  /** scheme://authority, as the Outer Proxy-Uri */
  outer: string;
  /** Uri-Path and Uri-Query options for the plaintext, in order */
  inner: CoapOption[];
}

const COAP_SCHEMES = new Set(['coap', 'coaps', 'coap+tcp', 'coaps+tcp']);
// RFC 3986 Appendix B.
const RFC3986 = /^(?:([^:/?#]+):)?(?:\/\/([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/;

function segmentOptions(path: string[], query: string[]): CoapOption[] {
  return [
    ...path.map((p) => ({ number: OPT.URI_PATH, value: Buffer.from(p, 'utf8') })),
    ...query.map((q) => ({ number: OPT.URI_QUERY, value: Buffer.from(q, 'utf8') })),
  ];
}

/** Throws UriError for a value that is not an absolute URI. */
export function splitProxyUri(proxyUri: string): SplitProxyUri {
  const m = RFC3986.exec(proxyUri.trim());
  if (!m || !m[1] || m[2] === undefined) throw new UriError(`Proxy-Uri is not an absolute URI: ${JSON.stringify(proxyUri)}`);
  const scheme = m[1].toLowerCase();
  if (COAP_SCHEMES.has(scheme)) {
    // RFC 7252 §6.4 decomposition (host lower-cased, default port dropped, "/" = no Uri-Path), then §6.5 composition.
    const uri = parseUri(proxyUri);
    return { outer: formatUri({ scheme: uri.scheme, host: uri.host, zone: uri.zone, port: uri.port }), inner: segmentOptions(uri.path, uri.query) };
  }
  if (m[5] !== undefined) throw new UriError('Proxy-Uri must not have a fragment');
  const rawPath = m[3] ?? '';
  const path = rawPath === '' || rawPath === '/' ? [] : rawPath.replace(/^\//, '').split('/').map(decodeURIComponent);
  const query = m[4] !== undefined && m[4] !== '' ? m[4].split('&').map(decodeURIComponent) : [];
  return { outer: `${scheme}://${m[2]}`, inner: segmentOptions(path, query) };
}

function encodeSegment(s: string): string {
  return encodeURIComponent(s).replace(/%3A/gi, ':').replace(/%40/gi, '@');
}

/** True for "scheme://authority" with no path, query or fragment: the form splitProxyUri produces. */
export function isAuthorityOnly(uri: string): boolean {
  const m = RFC3986.exec(uri);
  return !!m && !!m[1] && m[2] !== undefined && (m[3] ?? '') === '' && m[4] === undefined && m[5] === undefined;
}

/** The inverse of splitProxyUri: scheme://authority + Uri-Path + Uri-Query back into one Proxy-Uri. */
export function joinProxyUri(outer: string, path: string[], query: string[]): string {
  let text = outer;
  if (path.length) text += '/' + path.map(encodeSegment).join('/');
  if (query.length) text += '?' + query.map(encodeSegment).join('&');
  return text;
}
