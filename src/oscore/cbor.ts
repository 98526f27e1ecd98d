// Minimal deterministic CBOR writer (RFC 8949 §4.2.1) for the fixed-shape structures OSCORE feeds to its crypto:
// `info` (RFC 8613 §3.2.1; the keystream info of RFC 10021 §4.2 with its bool), `aad_array` and the Enc_structure (§5.4, RFC 9052 §5.3). Hand-written because the bytes
// must be canonical and the shapes are tiny (uint/nint, bstr, tstr, null, arrays), while cbor-x tags Uint8Arrays
// (tag 64) by default and writes integers above 2^32 as float64. Tests compare it with cbor-x (untagged) on random
// values and with the RFC 8613 App. C bytes.

export type CborValue = number | bigint | string | boolean | Uint8Array | null | CborValue[];

function head(major: number, value: number | bigint, out: number[]): void {
  const v = BigInt(value);
  if (v < 0n) throw new RangeError('CBOR head value must be non-negative');
  const m = major << 5;
  if (v < 24n) out.push(m | Number(v));
  else if (v < 0x100n) out.push(m | 24, Number(v));
  else if (v < 0x10000n) out.push(m | 25, Number(v >> 8n), Number(v & 0xffn));
  else if (v < 0x100000000n) {
    out.push(m | 26);
    for (let s = 24n; s >= 0n; s -= 8n) out.push(Number((v >> s) & 0xffn));
  } else if (v < 0x10000000000000000n) {
    out.push(m | 27);
    for (let s = 56n; s >= 0n; s -= 8n) out.push(Number((v >> s) & 0xffn));
  } else throw new RangeError('CBOR integer out of range');
}

function write(value: CborValue, out: number[]): void {
  if (value === null) {
    out.push(0xf6);
  } else if (typeof value === 'boolean') {
    out.push(value ? 0xf5 : 0xf4); // RFC 8949 §3.3 simple values true / false
  } else if (typeof value === 'number' || typeof value === 'bigint') {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new RangeError('only integers are supported');
    const v = BigInt(value);
    if (v >= 0n) head(0, v, out);
    else head(1, -1n - v, out); // major type 1 encodes -1 - n
  } else if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    head(3, bytes.length, out);
    for (const b of bytes) out.push(b);
  } else if (value instanceof Uint8Array) {
    head(2, value.length, out);
    for (const b of value) out.push(b);
  } else if (Array.isArray(value)) {
    head(4, value.length, out);
    for (const item of value) write(item, out);
  } else {
    throw new TypeError('unsupported CBOR value');
  }
}

export function encodeCbor(value: CborValue): Buffer {
  const out: number[] = [];
  write(value, out);
  return Buffer.from(out);
}
