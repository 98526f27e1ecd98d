// OSCORE option classes (RFC 8613 §4.1, Figure 5): E = Inner (encrypted and integrity-protected), U = Outer
// (unprotected), EU = both, with special processing. Unknown options are E (§4.1). Classes set by later documents:
// Hop-Limit U (oscore-capable-proxies-07 §3), EDHOC U (RFC 9668 §3.1), Multicast-Timeout, Reply-From, Group-ETag U
// (groupcomm-proxy-07), Listen-To-Multicast-Responses U (multicast-notifications-proxy-02), Feedback-Divider E
// (observe-multicast-notifications-15). Draft options are looked up by name because their numbers are configurable.

import { OPT, optionDef } from '../coap/options';

export type OscoreClass = 'E' | 'U' | 'EU';

const FIXED: ReadonlyMap<number, OscoreClass> = new Map<number, OscoreClass>([
  [OPT.IF_MATCH, 'E'],
  [OPT.URI_HOST, 'U'],
  [OPT.ETAG, 'E'],
  [OPT.IF_NONE_MATCH, 'E'],
  [OPT.OBSERVE, 'EU'],
  [OPT.URI_PORT, 'U'],
  [OPT.LOCATION_PATH, 'E'],
  [OPT.OSCORE, 'U'],
  [OPT.URI_PATH, 'E'],
  [OPT.CONTENT_FORMAT, 'E'],
  [OPT.MAX_AGE, 'EU'],
  [OPT.URI_QUERY, 'E'],
  [OPT.HOP_LIMIT, 'U'],
  [OPT.ACCEPT, 'E'],
  [OPT.LOCATION_QUERY, 'E'],
  [OPT.EDHOC, 'U'], // EDHOC (RFC 9668 §3.1): needed before OSCORE processing
  [OPT.BLOCK2, 'EU'],
  [OPT.BLOCK1, 'EU'],
  [OPT.SIZE2, 'EU'],
  [OPT.PROXY_URI, 'U'],
  [OPT.PROXY_SCHEME, 'U'],
  [OPT.SIZE1, 'EU'],
  [OPT.NO_RESPONSE, 'EU'],
]);

// Request-Hash is U in Deterministic Requests (draft-ietf-core-cacheable-oscore-02 §3.3); in their responses it is
// Class I, bound by protect.ts from the request binding.
const DRAFT_U = ['Multicast-Timeout', 'Reply-From', 'Group-ETag', 'Listen-To-Multicast-Responses', 'Response-Forwarding', 'Request-Hash'];
// Padding is Class E (draft-ietf-core-cacheable-oscore-02 App. A.1), like the payload it stands in for.
const DRAFT_E = ['Feedback-Divider', 'Padding'];

function draftClass(num: number): OscoreClass | undefined {
  const def = optionDef(num);
  if (!def) return undefined;
  if (DRAFT_U.includes(def.name)) return 'U';
  if (DRAFT_E.includes(def.name)) return 'E';
  return undefined;
}

/** The RFC 8613 class of an option number (before any per-layer escalation). */
export function oscoreClass(num: number): OscoreClass {
  return FIXED.get(num) ?? draftClass(num) ?? 'E';
}

/**
 * The class in one OSCORE layer. `classE` holds the options the caller escalates to E for this layer (the
 * class U/I options that oscore-capable-proxies-07 §2.2 says to encrypt for peer X, e.g. Uri-Host and
 * Proxy-Scheme for an OSCORE-capable proxy). An OSCORE option already in the message, produced by an inner
 * layer, is always E for the next layer (oscore-capable-proxies-07 §2.2).
 */
export function layerClass(num: number, classE?: ReadonlySet<number>): OscoreClass {
  if (num === OPT.OSCORE) return 'E';
  const c = oscoreClass(num);
  if (c === 'U' && classE?.has(num)) return 'E';
  return c;
}
