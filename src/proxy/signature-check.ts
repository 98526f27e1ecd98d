// The proxy as an external signature checker (RFC 10021 §7.5; groupcomm-proxy-07 §10): before fanning a request
// out to a group, verify the Group OSCORE countersignature of a group-mode request of a group the proxy has a
// checker for, without being able to decrypt it, and drop a forged one. What happens after a failed check is left
// to the application by RFC 10021; this proxy answers the requester 4.00 and forwards nothing.

import type { CoapMessage } from '../coap/message';
import { OPT } from '../coap/options';
import { decodeOscoreOption } from '../oscore/cose';
import type { SignatureChecker } from '../oscore/group/signature-checker';

/** Fixed diagnostic: never anything from the request. */
export const SIGNATURE_CHECK_FAILED = 'Group OSCORE signature check failed';

/**
 * 'unchecked': not a group-mode request of a group with a checker (forwarded as it is); 'ok': verified; otherwise
 * the failure (forged, unknown sender, malformed).
 */
export function checkGroupSignature(checkers: readonly SignatureChecker[], msg: CoapMessage): 'unchecked' | 'ok' | { failed: string } {
  const value = msg.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) return 'unchecked';
  let gid: Buffer | undefined;
  let group = false;
  try {
    const f = decodeOscoreOption(value);
    gid = f.kidContext;
    group = f.group === true;
  } catch {
    return 'unchecked'; // not readable as OSCORE: the servers answer that (RFC 8613 §8.2 step 2)
  }
  const checker = group && gid ? checkers.find((c) => c.idContext.equals(gid!)) : undefined;
  if (!checker) return 'unchecked';
  try {
    checker.checkRequest(msg);
    return 'ok';
  } catch (err) {
    return { failed: (err as Error).message };
  }
}
