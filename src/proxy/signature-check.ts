// The proxy as an external signature checker (RFC 10021 §7.5; groupcomm-proxy-07 §10): before fanning a request
// out to a group, verify the Group OSCORE countersignature of a group-mode request of a group the proxy has a
// checker for, without being able to decrypt it, and drop a forged one; then check every group-mode response to it
// before relaying (a response without Partial IV takes the request's, §7.5). What follows a failed check is left to
// the application by RFC 10021: this proxy answers a forged request with 4.00 and forwards nothing, and drops a
// forged response. Pairwise-mode responses carry no signature and pass unchecked (the client verifies them).

import type { CoapMessage } from '../coap/message';
import { OPT } from '../coap/options';
import { decodeOscoreOption } from '../oscore/cose';
import type { CheckedRequest, SignatureChecker } from '../oscore/group/signature-checker';

// The fixed diagnostic and the error it becomes live with the proxy's other refusals (errors.ts).
export { SIGNATURE_CHECK_FAILED, SignatureCheckError } from './errors';

export type RequestVerdict = { kind: 'unchecked' } | { kind: 'ok'; checker: SignatureChecker; request: CheckedRequest } | { kind: 'failed'; reason: string };

function groupFields(msg: { options: CoapMessage['options'] }): ReturnType<typeof decodeOscoreOption> | undefined {
  const value = msg.options.find((o) => o.number === OPT.OSCORE)?.value;
  if (value === undefined) return undefined;
  try {
    const f = decodeOscoreOption(value);
    return f.group ? f : undefined;
  } catch {
    return undefined; // not readable as OSCORE: the servers answer that (RFC 8613 §8.2 step 2)
  }
}

/** A request: 'unchecked' when it is not a group-mode request of a group with a checker (forwarded as it is). */
export function checkGroupRequest(checkers: readonly SignatureChecker[], msg: CoapMessage): RequestVerdict {
  const f = groupFields(msg);
  const gid = f?.kidContext;
  const checker = gid ? checkers.find((c) => c.idContext.equals(gid)) : undefined;
  if (!f || !checker) return { kind: 'unchecked' };
  try {
    checker.checkRequest(msg);
  } catch (err) {
    return { kind: 'failed', reason: (err as Error).message };
  }
  return { kind: 'ok', checker, request: { kid: f.kid!, piv: f.piv!, ...(f.kidContext ? { kidContext: f.kidContext } : {}) } };
}

/** A response to a checked request: group mode is verified; pairwise mode and unprotected responses pass. */
export function checkGroupResponse(checker: SignatureChecker, request: CheckedRequest, msg: CoapMessage): 'unchecked' | 'ok' | { failed: string } {
  if (!groupFields(msg)) return 'unchecked';
  try {
    checker.checkResponse(msg, request);
    return 'ok';
  } catch (err) {
    return { failed: (err as Error).message };
  }
}
