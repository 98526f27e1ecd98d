// Group OSCORE (RFC 10021) for group observations (observe-multicast-notifications-15 §9): the hooks of
// observe-security.ts built on the OSCORE core. Server: the phantom request protected in group mode with the
// server's own Sender Context (§9.2.1), every notification protected in group mode with a new Partial IV and the
// phantom request's kid, Partial IV and kid context in its external_aad (§9.2.3). Client: the registration
// protected like any request, ph_req verified as a request without replay check and without touching the replay
// window (§9.3.1), and every notification verified through what ph_req carried, from that server only.

import { CoapMessage } from '../coap/message';
import { OPT } from '../coap/options';
import type { PeerContext, RequestContext } from '../oscore/capabilities';
import { decodeOscoreOption } from '../oscore/cose';
import { OscoreError } from '../oscore/errors';
import { GroupContext } from '../oscore/group/group-context';
import { bindOwnRequest, protectRequest, protectResponse, unprotectRequest, unprotectResponse } from '../oscore/protect';
import { ReplayWindow } from '../oscore/replay';
import type { GroupObservationSecurity, MulticastObserverSecurity, ProtectedParts, ResponseVerifier } from './observe-security';

/** Server side: OMN-15 §9.2 with the server's Group OSCORE context. */
export function groupObservationSecurity(group: GroupContext): GroupObservationSecurity {
  return {
    protectPhantom(plain: ProtectedParts) {
      // §9.2.1: group mode, the server's own Sender Context; its Sender Sequence Number gives the Partial IV.
      const { message } = protectRequest(group.groupRequests(), plain);
      // §9.2.3: every notification is a response to the phantom request, sealed with the server's own group-mode
      // Sender Context and always with its own Partial IV (the request's nonce is never reused).
      const responses = bindOwnRequest(group.groupRequests(), message).server;
      return {
        phantom: { code: message.code, options: message.options, payload: message.payload },
        protectNotification: (n: ProtectedParts) => {
          const p = protectResponse(responses, n, { partialIv: true });
          return { code: p.code, options: p.options, payload: p.payload };
        },
      };
    },
  };
}

export interface ObserverSecurityOptions {
  /** the association that protects the registration: group mode to the group (default), or one server's (pairwise) */
  request?: RequestContext;
}

/** Client side: OMN-15 §9.3 with the client's Group OSCORE context. */
export function multicastObserverSecurity(group: GroupContext, opts: ObserverSecurityOptions = {}): MulticastObserverSecurity {
  return {
    protectRequest(m: CoapMessage) {
      const { message, binding } = protectRequest(opts.request ?? group.groupRequests(), m, { multipleResponses: false });
      return { message: { ...m, code: message.code, options: message.options, payload: message.payload }, responses: { verify: (r) => unprotectResponse(binding, r).message } };
    },
    verifyPhantom(phReq: ProtectedParts): ResponseVerifier {
      return verifyPhantomRequest(group, phReq);
    },
  };
}

/**
 * §9.3.1: ph_req verified as a group-mode request of its server (RFC 10021 §8.2), except that the replay check is
 * skipped and the replay window left as it is: the server's window is given a throwaway stand-in for this one
 * verification. The returned verifier checks notifications against the kid, Partial IV and kid context of ph_req,
 * and only from the server that made it (another member could sign a notification bound to the same values).
 */
export function verifyPhantomRequest(group: GroupContext, phReq: ProtectedParts): ResponseVerifier {
  const value = phReq.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) throw new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'ph_req is not protected');
  const f = decodeOscoreOption(value);
  if (!f.group) throw new OscoreError('ERR_OSCORE_DECODE', 'ph_req is not protected in group mode (OMN-15 §9.2.1)');
  if (!f.kid || !f.piv) throw new OscoreError('ERR_OSCORE_DECODE', 'ph_req without kid or Partial IV');
  const serverKid = f.kid;
  const peer = group.peer(serverKid, 'group');
  if (!peer) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'ph_req from a sender that is not a member of the group');
  const scratch = new ReplayWindow({ initialized: true });
  const noReplayCheck: PeerContext = Object.create(peer, { replay: { value: scratch } });
  // throws unless the countersignature and the ciphertext verify
  unprotectRequest(
    (kid, kidContext, isGroup) => (isGroup && kid.equals(serverKid) && kidContext !== undefined && kidContext.equals(group.idContext) ? noReplayCheck : undefined),
    { type: 'NON', code: phReq.code, messageId: 0, token: Buffer.alloc(0), options: phReq.options, payload: phReq.payload },
  );
  // One Notification Number for that server (RFC 10021 §5.1 of -28): replayed notifications are refused.
  const binding = bindOwnRequest(group.groupRequests(), phReq).client;
  return {
    verify(n: CoapMessage): CoapMessage {
      const v = unprotectResponse(binding, n);
      if (!v.responder.recipientId.equals(serverKid)) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'notification from another member than the server of ph_req');
      return v.message;
    },
  };
}
