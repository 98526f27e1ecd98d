// The proxy's refusals as CoAP responses (RFC 7252 §5.9, groupcomm-proxy-07 §5.2.1, RFC 8768 §3, RFC 9175 §2.4):
// each subclass of CoapResponseError carries a short fixed diagnostic, never bytes the client sent, so an answer to
// an unidentified source stays small (the 3x limit of RFC 9000 §8.1 is enforced by the front, see admission.ts).

import { CODES } from '../coap/codes';
import { CoapResponseError } from '../coap/errors';
import { CoapOption } from '../coap/message';
import { OPT, encodeUint, optionNumber } from '../coap/options';

/** groupcomm-proxy-07 §5.2.1 step 2 (REQ1/REQ2): not allow-listed, or not identified. */
export class NotAllowedError extends CoapResponseError {
  constructor(message = 'client not allowed') {
    super({ responseCode: CODES.UNAUTHORIZED, diagnostic: 'not allowed', code: 'ERR_PROXY_NOT_ALLOWED' }, message);
  }
}

/** RFC 9175 §2.4 item 3: prove that you are reachable at your source address; repeat the request with this Echo. */
export class EchoRequiredError extends CoapResponseError {
  constructor(echo: Buffer) {
    super({ responseCode: CODES.UNAUTHORIZED, options: [{ number: OPT.ECHO, value: echo }], code: 'ERR_PROXY_ECHO_REQUIRED' }, 'address not verified: Echo sent');
  }
}

/** A request the proxy cannot make sense of (4.00), with an optional option such as an empty Multicast-Timeout. */
export class BadProxyRequestError extends CoapResponseError {
  constructor(diagnostic: string, options: CoapOption[] = [], code = 'ERR_PROXY_BAD_REQUEST') {
    super({ responseCode: CODES.BAD_REQUEST, diagnostic, options, code });
  }
}

/** groupcomm-proxy-07 §5.2.1 step 3: Multicast-Timeout missing: 4.00 with an empty Multicast-Timeout. */
export class MulticastTimeoutRequiredError extends BadProxyRequestError {
  constructor() {
    super('Please use Multicast-Timeout', [{ number: optionNumber('Multicast-Timeout'), value: Buffer.alloc(0) }], 'ERR_NO_MULTICAST_TIMEOUT');
  }
}

/** groupcomm-proxy-07 §5.2.1 step 4: T' above the proxy's maximum: 4.00 with Multicast-Timeout = the maximum. */
export class MulticastTimeoutTooLargeError extends BadProxyRequestError {
  constructor(readonly maximum: number) {
    super('Multicast-Timeout too large', [{ number: optionNumber('Multicast-Timeout'), value: encodeUint(maximum) }], 'ERR_MULTICAST_TIMEOUT_TOO_LARGE');
  }
}

/** A target the proxy does not serve: 4.04, 5.02, 5.05 (RFC 7252 §5.7.2, §5.10.2). Only after the allow-list. */
export class TargetError extends CoapResponseError {
  constructor(responseCode: number, diagnostic: string, code = 'ERR_PROXY_TARGET', message?: string) {
    super({ responseCode, diagnostic, code }, message ?? diagnostic);
  }
}

/** RFC 8768 §3: 5.08 (Hop Limit Reached); the diagnostic names the proxy that stopped the request. */
export class HopLimitError extends CoapResponseError {
  constructor(proxyName: string) {
    super({ responseCode: CODES.HOP_LIMIT_REACHED, diagnostic: proxyName, code: 'ERR_HOP_LIMIT' }, `Hop-Limit reached at ${proxyName}`);
  }
}

/** groupcomm-proxy-07 §8.1: no T'' fits: 5.05 with Multicast-Timeout = this proxy's own minimum. */
export class ChainTimeoutError extends CoapResponseError {
  constructor(readonly minimum: number) {
    super({ responseCode: CODES.PROXYING_NOT_SUPPORTED, diagnostic: 'Multicast-Timeout too small', options: [{ number: optionNumber('Multicast-Timeout'), value: encodeUint(minimum) }], code: 'ERR_CHAIN_TIMEOUT' });
  }
}

/** A limit was hit: 4.29 with Max-Age (RFC 8516 §3, per client) or 5.03 with Max-Age (RFC 7252 §5.9.3.4, global). */
export class LimitError extends CoapResponseError {
  constructor(
    readonly limit: string,
    retryAfter: number,
    global = false,
  ) {
    super(
      { responseCode: global ? CODES.SERVICE_UNAVAILABLE : CODES.TOO_MANY_REQUESTS, diagnostic: global ? 'proxy busy' : 'too many requests', options: [{ number: OPT.MAX_AGE, value: encodeUint(Math.max(1, Math.ceil(retryAfter))) }], code: 'ERR_LIMIT' },
      `limit reached: ${limit}`,
    );
  }
}
