// What coap-oscore-layer needs from a context config node, whatever kind of OSCORE context it holds: an RFC 8613
// coap-oscore-context, or a Group OSCORE context node (RFC 10021), which protects requests in group mode (or
// pairwise mode towards one member) and verifies requests from every member. Config nodes implement it; the
// layer never asks which kind it has.

import type { ContextResolver, PeerContext, RequestContext } from '../../src/oscore';
import type { OscoreExchanges } from './oscore-exchanges';

export interface OscoreLayerSource {
  /** Request/response bindings shared by the coap-oscore-layer nodes using this context. */
  readonly exchanges: OscoreExchanges;
  /**
   * The context a request is protected with. `recipient` (a member's Sender ID) asks a group for its pairwise
   * association with that member; undefined for a group means group mode. Throws the configuration error.
   */
  requestContext(recipient?: Buffer): RequestContext;
  /** What verifies incoming requests: one association, or a resolver over kid / kid context / Group Flag. */
  requestVerifier(): PeerContext | ContextResolver;
}
