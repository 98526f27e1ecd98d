// The hooks by which a security protocol protects a group observation (observe-multicast-notifications-15 §9):
// the server protects the phantom request and every notification bound to it (§9.2), the client protects its
// registration, verifies the phantom request without replay check (§9.3.1) and every notification through it. The
// Group OSCORE implementation of these hooks is observe/group-oscore.ts; the observers themselves know no crypto.

import type { CoapMessage, CoapOption } from '../coap/message';
import type { RemoteAddress } from '../transport/udp-transport';

/** Code, options and payload of a message (the parts OSCORE transforms). */
export interface ProtectedParts {
  code: number;
  options: CoapOption[];
  payload: Buffer;
}

/** Server side (§9.2). */
export interface GroupObservationSecurity {
  /**
   * §9.2.1: protect the phantom request (GET + Observe 0 on the resource) in group mode with the server's own Sender
   * Context; returns its protected parts (outer FETCH, outer options, ciphertext and signature) and the protector of
   * the notifications of this observation (§9.2.3: bound to the phantom request's kid, Partial IV and kid context;
   * also the cancellation of §9.2.4).
   */
  protectPhantom(plain: ProtectedParts): { phantom: ProtectedParts; protectNotification(n: ProtectedParts): ProtectedParts };
}

/** What a client keeps for one protected exchange with the server: turns what comes back into the plain message. */
export interface ResponseVerifier {
  /** throws when the message does not verify; never returns an unverified message */
  verify(m: CoapMessage): CoapMessage;
}

/** Client side (§9.3). */
export interface MulticastObserverSecurity {
  /** protect a request to the server (the registration, a Feedback-Divider confirmation, a deregistration) */
  protectRequest(m: CoapMessage): { message: CoapMessage; responses: ResponseVerifier };
  /**
   * §9.3.1: verify ph_req (as a request from `server`, without replay check and without touching the replay window)
   * and keep its kid, Partial IV and kid context; the verifier checks notifications against them.
   */
  verifyPhantom(phReq: ProtectedParts, server: RemoteAddress): ResponseVerifier;
}
