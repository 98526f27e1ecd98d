// One error type for the whole core that knows which CoAP response it becomes (the shape of aiocoap's error.py):
// a response code, options and a short diagnostic (RFC 7252 §5.5.2), rendered by `toResponse()`. Diagnostics are
// fixed texts chosen by the code that throws, never bytes taken from the peer's message, so an error response can
// never echo (and so amplify) what a client sent.

import { CODES, codeToString } from './codes';
import { CoapMessage, CoapOption, sortOptions } from './message';

/** Longest diagnostic payload we ever send: short fixed texts only (well under RFC 7252 §4.6's datagram limit). */
export const MAX_DIAGNOSTIC_BYTES = 64;

export interface CoapErrorInit {
  /** CoAP response code (class << 5 | detail), e.g. CODES.UNAUTHORIZED */
  responseCode: number;
  /** a fixed diagnostic text (RFC 7252 §5.5.2); never built from client-controlled bytes */
  diagnostic?: string;
  /** options the response carries (e.g. Multicast-Timeout, Max-Age, Echo) */
  options?: CoapOption[];
  /** a stable machine-readable code, e.g. 'ERR_PROXY_NOT_ALLOWED' */
  code?: string;
  /**
   * true for an error of this family that no response answers (RFC 8613 §8.4 "stop processing", a programming or
   * configuration error): a server that meets one anyway treats it as an unexpected exception (empty 5.00, reported).
   */
  noResponse?: boolean;
}

/**
 * An error that becomes a CoAP error response. `message` is for logs (it may be longer and name internals);
 * only `diagnostic` is ever put on the wire, truncated to MAX_DIAGNOSTIC_BYTES.
 */
export class CoapResponseError extends Error {
  override name = 'CoapResponseError';
  readonly responseCode: number;
  readonly diagnostic?: string;
  readonly options: CoapOption[];
  readonly code: string;
  /** see CoapErrorInit.noResponse; `responseCode` is then 5.00 and `toResponse()` the empty 5.00 of any fault */
  readonly noResponse: boolean;

  constructor(init: CoapErrorInit, message?: string) {
    super(message ?? init.diagnostic ?? `CoAP ${codeToString(init.responseCode)}`);
    this.responseCode = init.responseCode;
    if (init.diagnostic !== undefined) this.diagnostic = init.diagnostic;
    this.options = init.options ?? [];
    this.code = init.code ?? 'ERR_COAP_RESPONSE';
    this.noResponse = init.noResponse === true;
  }

  /** The response this error becomes (code, options, diagnostic payload); the message layer fills type, MID, token. */
  toResponse(): Partial<CoapMessage> & { code: number } {
    const payload = this.diagnostic ? Buffer.from(this.diagnostic, 'utf8').subarray(0, MAX_DIAGNOSTIC_BYTES) : Buffer.alloc(0);
    return { code: this.responseCode, options: sortOptions([...this.options]), payload };
  }
}

/** Whether a handler's error is an expected answer (its own response) rather than a fault to report. */
export function isResponseError(err: unknown): err is CoapResponseError {
  return err instanceof CoapResponseError && !err.noResponse;
}

/** Anything thrown that is not a CoapResponseError becomes an empty 5.00: its message stays internal. */
export function toErrorResponse(err: unknown): Partial<CoapMessage> & { code: number } {
  if (err instanceof CoapResponseError) return err.toResponse();
  return { code: CODES.INTERNAL_SERVER_ERROR, options: [], payload: Buffer.alloc(0) };
}
