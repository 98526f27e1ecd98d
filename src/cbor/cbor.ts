// The one cbor-x configuration of the package (RFC 8949 on cbor-x), shared by the protocol structures (CRIs,
// Reply-From, tp_info, informative responses) and by flow payloads: maps decode as Map (integer keys stay
// integers), byte strings are encoded without the typed-array tag, no records extension, integers up to 64 bits
// decode as numbers. Flow payloads get plain objects from `toPlain()` on top of the same decoder.

import { Decoder, Encoder, Tag } from 'cbor-x';

export { Tag };

const options = { useRecords: false, tagUint8Array: false, mapsAsObjects: false, variableMapSize: true, int64AsType: 'number' };
const encoder = new Encoder(options as never);
const decoder = new Decoder(options as never);

/** Encode one CBOR data item. */
export function encodeCbor(value: unknown): Buffer {
  return Buffer.from(encoder.encode(value));
}

/** Decode exactly one CBOR data item (throws on malformed input or trailing bytes). */
export function decodeCbor(data: Uint8Array): unknown {
  return decoder.decode(data);
}

/** Decode a CBOR sequence (RFC 8742): every data item in `data`, in order. */
export function decodeCborSequence(data: Uint8Array): unknown[] {
  const items = decoder.decodeMultiple(data) as unknown;
  return Array.isArray(items) ? items : [];
}

/**
 * A decoded value as a flow author reads it: maps whose keys are all text or numbers become plain objects (keys
 * as strings, as JSON would show them); maps with other keys stay Maps. Arrays and nested values are converted too.
 */
export function toPlain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toPlain);
  if (value instanceof Map) {
    const keys = [...value.keys()];
    if (!keys.every((k) => typeof k === 'string' || typeof k === 'number')) {
      return new Map([...value.entries()].map(([k, v]) => [k, toPlain(v)]));
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of value) {
      // a key such as "__proto__" must become an own property, never the prototype
      Object.defineProperty(out, String(k), { value: toPlain(v), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}
