// Typed OSCORE errors (RFC 8613 §7.4, §8.2, §8.4), CoapResponseErrors of the core. An error raised while verifying
// a *request* renders as the CoAP response RFC 8613 §8.2 suggests (code and diagnostic text); errors on the client
// side (§8.4 step 8: "stop processing") and programming errors are `noResponse`. Messages never contain key material.

import { CODES } from '../coap/codes';
import { CoapResponseError } from '../coap/errors';
import { OPT } from '../coap/options';
import type { ServerBinding } from './binding';

export type OscoreErrorCode =
  /** COSE object or OSCORE option value cannot be decoded (§8.2 step 2): 4.02 "Failed to decode COSE" */
  | 'ERR_OSCORE_DECODE'
  /** no Recipient Context for kid / kid context (§8.2 step 2): 4.01 "Security context not found" */
  | 'ERR_OSCORE_CONTEXT_NOT_FOUND'
  /** Partial IV already seen or outside the window (§7.4): 4.01 "Replay detected" */
  | 'ERR_OSCORE_REPLAY'
  /** AEAD verification failed (§8.2 step 6): 4.00 "Decryption failed" */
  | 'ERR_OSCORE_DECRYPT'
  /** request verified, but the replay window is not initialized (App. B.1.2): answer with a protected 4.01 + Echo */
  | 'ERR_OSCORE_ECHO_REQUIRED'
  /** decrypted plaintext is not a well-formed "Code | options | payload" of the right kind */
  | 'ERR_OSCORE_INNER_FORMAT'
  /** the message carries no OSCORE option */
  | 'ERR_OSCORE_NOT_PROTECTED'
  /** Observe in a response to a non-Observe request (§8.4.2), or a notification for a non-Observe binding */
  | 'ERR_OSCORE_UNEXPECTED_OBSERVE'
  /** Sender Sequence Number space used up (§7.2.1): a new security context is needed */
  | 'ERR_OSCORE_SEQUENCE_EXHAUSTED'
  /** the persistent sequence number store could not be read or written */
  | 'ERR_OSCORE_SEQUENCE_STORE'
  /** invalid security context parameters (§3.2, §3.3) */
  | 'ERR_OSCORE_CONFIG'
  /** AEAD or HKDF algorithm not supported */
  | 'ERR_OSCORE_UNSUPPORTED_ALGORITHM'
  /** caller handed protect() something it cannot protect (bad Proxy-Uri, forbidden nonce reuse, ...) */
  | 'ERR_OSCORE_INVALID_INPUT'
  /** Group OSCORE: countersignature verification failed (RFC 10021 §7.2, §7.4): 4.00 "Decryption failed", window untouched */
  | 'ERR_OSCORE_SIGNATURE'
  /** Group OSCORE: known group, but no authentication credential for this kid (RFC 10021 §7.2): 5.03 */
  | 'ERR_OSCORE_CREDENTIAL_UNKNOWN'
  /** a Deterministic Request whose inner method is not safe (draft-ietf-core-cacheable-oscore-02 §3.4.3): protected 4.01 */
  | 'ERR_OSCORE_NOT_SAFE';

const EMPTY = Buffer.alloc(0); // Max-Age 0 is the empty uint (RFC 7252 §3.2)

/** The response an OscoreError becomes: RFC 8613 §8.2's code and diagnostic text. */
export interface OscoreErrorResponse {
  responseCode: number;
  diagnostic?: string;
}

/**
 * One OSCORE failure. With a `response` it renders (toResponse) as the unprotected error response of RFC 8613 §8.2
 * / §7.4: its code, an Outer Max-Age of 0 so intermediaries do not cache it (§4.1.3.1), and the diagnostic text. A
 * 5.03 has no Max-Age: there it is the time after which to retry (RFC 10021 §7.2, RFC 7252 §5.9.3.4), and 0 would
 * invite an immediate retry; without it the client waits the default 60 s (RFC 7252 §5.10.5). Without a `response`
 * the error is `noResponse`: the client side of §8.4 ("stop processing") and programming or configuration errors.
 */
export class OscoreError extends CoapResponseError {
  override name = 'OscoreError';
  declare readonly code: OscoreErrorCode;

  constructor(code: OscoreErrorCode, message: string, response?: OscoreErrorResponse) {
    super(
      response
        ? {
            code,
            responseCode: response.responseCode,
            ...(response.diagnostic !== undefined ? { diagnostic: response.diagnostic } : {}),
            options: response.responseCode === CODES.SERVICE_UNAVAILABLE ? [] : [{ number: OPT.MAX_AGE, value: EMPTY }],
          }
        : { code, responseCode: CODES.INTERNAL_SERVER_ERROR, noResponse: true },
      message,
    );
  }

  /** The same failure where no response is due (a client verifying a response, RFC 8613 §8.4). */
  withoutResponse(): OscoreError {
    return this.noResponse ? this : new OscoreError(this.code, this.message);
  }
}

// RFC 8613 §8.2 / §7.4: the response each request-side verification failure MAY produce.
export const DIAGNOSTICS = {
  DECODE: { responseCode: CODES.BAD_OPTION, diagnostic: 'Failed to decode COSE' },
  CONTEXT_NOT_FOUND: { responseCode: CODES.UNAUTHORIZED, diagnostic: 'Security context not found' },
  REPLAY: { responseCode: CODES.UNAUTHORIZED, diagnostic: 'Replay detected' },
  DECRYPT: { responseCode: CODES.BAD_REQUEST, diagnostic: 'Decryption failed' },
} as const;

export function isOscoreError(err: unknown): err is OscoreError {
  return err instanceof OscoreError;
}

/**
 * RFC 8613 App. B.1.2: the request decrypted, but the replay window is not initialized, so its freshness is unknown.
 * Answer with the protected 4.01 + Echo that `echoChallenge(err)` builds (it uses the server's own Partial IV);
 * the client's retry carrying `echo` initializes the window. Its toResponse() (a plain 4.01 without the Echo) is
 * not that answer: `answerOscoreError` in protect.ts chooses.
 */
export class EchoRequiredError extends OscoreError {
  constructor(
    readonly binding: ServerBinding,
    readonly echo: Buffer,
  ) {
    super('ERR_OSCORE_ECHO_REQUIRED', 'replay window not initialized: request must be repeated with Echo', { responseCode: CODES.UNAUTHORIZED });
  }
}

/**
 * draft-ietf-core-cacheable-oscore-02 §3.4.3: a Deterministic Request verified, but its inner method is not safe. The
 * server MUST discard it and SHOULD answer with a *protected* 4.01 (Unauthorized), which `answerOscoreError` in
 * protect.ts builds from `binding` as any response to a Deterministic Request (§3.4.4: group mode, the server's own
 * Partial IV, Request-Hash bound as Class I, outer 2.05 and Max-Age). Its toResponse() (a plain 4.01) is not that
 * answer.
 */
export class UnsafeDeterministicRequestError extends OscoreError {
  constructor(
    readonly binding: ServerBinding,
    readonly method: string,
  ) {
    super('ERR_OSCORE_NOT_SAFE', `Deterministic Request with the unsafe method ${method}`, { responseCode: CODES.UNAUTHORIZED });
  }
}
