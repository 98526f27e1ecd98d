// Payload conversion by Content-Format (RFC 7252 §5.10.3, §12.3): bodies a flow author can read (text, JSON, CBOR
// via cbor-x) and bodies a flow author can hand in (Buffer, string, object). Decoding never throws: a body that
// does not parse as its declared format is returned as a Buffer with the reason.

import { decodeCbor, encodeCbor, toPlain } from '../cbor/cbor';

export type PayloadMode = 'buffer' | 'string' | 'auto';

const TEXT_FORMATS = new Set([0, 40, 41]);
const JSON_FORMATS = new Set([50, 51, 52, 110]);
const CBOR_FORMATS = new Set([60, 112]);

export interface DecodedPayload {
  value: unknown;
  /** set when auto-decoding failed and the raw Buffer was kept */
  error?: string;
}

export function decodePayload(payload: Buffer, contentFormat: number | undefined, mode: PayloadMode): DecodedPayload {
  if (mode === 'buffer') return { value: payload };
  if (mode === 'string') return { value: payload.toString('utf8') };
  if (payload.length === 0) return { value: contentFormat === undefined ? '' : payload };
  if (contentFormat === undefined || TEXT_FORMATS.has(contentFormat)) {
    // RFC 7252 §5.5.2: no Content-Format means the body is opaque, but most group resources send text; show text
    // when it is valid UTF-8.
    const text = payload.toString('utf8');
    if (contentFormat !== undefined || Buffer.from(text, 'utf8').equals(payload)) return { value: text };
    return { value: payload };
  }
  try {
    if (JSON_FORMATS.has(contentFormat)) return { value: JSON.parse(payload.toString('utf8')) };
    if (CBOR_FORMATS.has(contentFormat)) return { value: toPlain(decodeCbor(payload)) };
  } catch (err) {
    return { value: payload, error: `payload is not valid for Content-Format ${contentFormat}: ${(err as Error).message}` };
  }
  return { value: payload };
}

/** Turn a flow value into a body. Objects become JSON, or CBOR when the content format says so. */
export function encodePayload(value: unknown, contentFormat?: number): Buffer {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (contentFormat !== undefined && CBOR_FORMATS.has(contentFormat)) return encodeCbor(value);
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (typeof value === 'number' || typeof value === 'boolean') return Buffer.from(String(value), 'utf8');
  return Buffer.from(JSON.stringify(value), 'utf8');
}
