// CoAP codes (RFC 7252 §12.1) as numbers: class << 5 | detail, so 2.05 is 0x45. Helpers turn them into the
// dotted text a flow author reads, and back.

export const CODES = {
  EMPTY: 0x00,
  GET: 0x01, POST: 0x02, PUT: 0x03, DELETE: 0x04, FETCH: 0x05, PATCH: 0x06, IPATCH: 0x07,
  CREATED: 0x41, DELETED: 0x42, VALID: 0x43, CHANGED: 0x44, CONTENT: 0x45, CONTINUE: 0x5f,
  BAD_REQUEST: 0x80, UNAUTHORIZED: 0x81, BAD_OPTION: 0x82, FORBIDDEN: 0x83, NOT_FOUND: 0x84,
  METHOD_NOT_ALLOWED: 0x85, NOT_ACCEPTABLE: 0x86, REQUEST_ENTITY_INCOMPLETE: 0x88, CONFLICT: 0x89,
  PRECONDITION_FAILED: 0x8c, REQUEST_ENTITY_TOO_LARGE: 0x8d, UNSUPPORTED_CONTENT_FORMAT: 0x8f, TOO_MANY_REQUESTS: 0x9d,
  INTERNAL_SERVER_ERROR: 0xa0, NOT_IMPLEMENTED: 0xa1, BAD_GATEWAY: 0xa2, SERVICE_UNAVAILABLE: 0xa3,
  GATEWAY_TIMEOUT: 0xa4, PROXYING_NOT_SUPPORTED: 0xa5, HOP_LIMIT_REACHED: 0xa8,
} as const;

const METHOD_NAMES: Record<number, string> = { 1: 'GET', 2: 'POST', 3: 'PUT', 4: 'DELETE', 5: 'FETCH', 6: 'PATCH', 7: 'iPATCH' };

export const codeClass = (code: number): number => code >> 5;
export const isRequestCode = (code: number): boolean => code >= 1 && code <= 31;
export const isResponseCode = (code: number): boolean => code >= 0x40 && code <= 0xbf;
export const isSuccessCode = (code: number): boolean => codeClass(code) === 2;
export const isErrorCode = (code: number): boolean => codeClass(code) === 4 || codeClass(code) === 5;

/** "2.05" for 0x45; "GET" for 1 when `methods` is true. */
export function codeToString(code: number, methods = false): string {
  if (methods && METHOD_NAMES[code]) return METHOD_NAMES[code];
  return `${code >> 5}.${String(code & 31).padStart(2, '0')}`;
}

/** Accepts "2.05", "205", "GET", "get", 69, 0x45. */
export function parseCode(input: string | number): number {
  if (typeof input === 'number') {
    if (Number.isInteger(input) && input >= 0 && input <= 255) return input;
    throw new RangeError(`invalid CoAP code ${input}`);
  }
  const upper = input.trim().toUpperCase();
  for (const [num, name] of Object.entries(METHOD_NAMES)) if (name.toUpperCase() === upper) return Number(num);
  const m = /^([0-7])\.?([0-3][0-9])$/.exec(upper);
  if (m && Number(m[2]) <= 31) return (Number(m[1]) << 5) | Number(m[2]);
  throw new RangeError(`invalid CoAP code ${JSON.stringify(input)}`);
}
