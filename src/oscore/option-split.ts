// Splitting a message's options into Inner and Outer (RFC 8613 §4.1) for one OSCORE layer, and merging them back
// after verification (§8.2 step 1 and 7, §8.4 step 1 and 7). Special cases: Observe is both (§4.1.3.5; Inner value
// empty in notifications), Proxy-Uri is decomposed (§4.1.3.3), the other E+U options (Max-Age, Block*, Size*,
// No-Response) go Inner and get an Outer copy only when the caller asks for one (§4.1.3.1, §4.1.3.4, §4.1.3.6).

import { CoapOption, sortOptions } from '../coap/message';
import { OPT } from '../coap/options';
import { OscoreError } from './errors';
import { layerClass } from './option-classes';
import { isAuthorityOnly, joinProxyUri, splitProxyUri } from './proxy-uri';

export interface SplitOptions {
  inner: CoapOption[];
  outer: CoapOption[];
}

const EMPTY = Buffer.alloc(0);

export function splitOptions(options: CoapOption[], isRequest: boolean, classE?: ReadonlySet<number>): SplitOptions {
  const inner: CoapOption[] = [];
  const outer: CoapOption[] = [];
  for (const o of options) {
    const cls = layerClass(o.number, classE);
    if (o.number === OPT.PROXY_URI && cls === 'U') {
      // §4.1.3.3: Uri-Path / Uri-Query go Inner, scheme + authority stay in an Outer Proxy-Uri.
      if (options.some((x) => x.number === OPT.URI_PATH || x.number === OPT.URI_QUERY)) {
        throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'Proxy-Uri together with Uri-Path / Uri-Query (RFC 7252 §5.10.2)');
      }
      let split;
      try {
        split = splitProxyUri(o.value.toString('utf8'));
      } catch (err) {
        throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `cannot decompose Proxy-Uri: ${(err as Error).message}`);
      }
      outer.push({ number: OPT.PROXY_URI, value: Buffer.from(split.outer, 'utf8') });
      inner.push(...split.inner);
      continue;
    }
    if (cls === 'E') inner.push(o);
    else if (cls === 'U') outer.push(o);
    else if (o.number === OPT.OBSERVE) {
      // §4.1.3.5.1: requests carry the same value Inner and Outer. §4.1.3.5.2: notifications carry an empty Inner
      // Observe; the Outer one keeps the original value for intermediaries.
      inner.push(isRequest ? o : { number: OPT.OBSERVE, value: EMPTY });
      outer.push(o);
    } else inner.push(o);
  }
  return { inner: sortOptions(inner), outer: sortOptions(outer) };
}

export interface MergedOptions {
  options: CoapOption[];
  /** Outer options dropped by §8.2/§8.4 step 1 (class E in this layer), for inspection (e.g. Outer Max-Age 0) */
  discarded: CoapOption[];
  /** whether the received message had an Outer Observe */
  outerObserve: boolean;
}

/**
 * §8.2 / §8.4 steps 1 and 7: keep the Outer options that are class U in this layer (the OSCORE option of this layer
 * is removed), discard the Outer instances of class E options, and add the Inner options. An Inner instance wins
 * over an Outer one of the same number (an option escalated to E in this layer, oscore-capable-proxies-07 §2.2).
 */
export function mergeOptions(outerOptions: CoapOption[], inner: CoapOption[], classE?: ReadonlySet<number>): MergedOptions {
  const innerNumbers = new Set(inner.map((o) => o.number));
  const kept: CoapOption[] = [];
  const discarded: CoapOption[] = [];
  let outerObserve = false;
  for (const o of outerOptions) {
    if (o.number === OPT.OSCORE) continue;
    if (o.number === OPT.OBSERVE) outerObserve = true;
    if (layerClass(o.number, classE) === 'U' && !innerNumbers.has(o.number)) kept.push(o);
    else discarded.push(o);
  }
  let options = sortOptions([...inner, ...kept]);
  // Inverse of §4.1.3.3 for an endpoint that receives the Outer Proxy-Uri itself (a forward proxy that is the
  // OSCORE endpoint): RFC 7252 §5.10.2 forbids Proxy-Uri next to Uri-Path / Uri-Query, so put the URI together.
  const proxyUri = options.find((o) => o.number === OPT.PROXY_URI);
  if (proxyUri && innerNumbers.has(OPT.PROXY_URI) === false && isAuthorityOnly(proxyUri.value.toString('utf8'))) {
    const path = options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
    const query = options.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString('utf8'));
    if (path.length || query.length) {
      const joined = joinProxyUri(proxyUri.value.toString('utf8'), path, query);
      options = options
        .filter((o) => o.number !== OPT.URI_PATH && o.number !== OPT.URI_QUERY)
        .map((o) => (o === proxyUri ? { number: OPT.PROXY_URI, value: Buffer.from(joined, 'utf8') } : o));
    }
  }
  return { options, discarded, outerObserve };
}
