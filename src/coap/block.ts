// Block-wise transfer option values (RFC 7959 §2.2): NUM << 4 | M << 3 | SZX, block size 2^(SZX+4).

import { decodeUint, encodeUint } from './options';

export interface BlockValue {
  num: number;
  more: boolean;
  szx: number;
}

export const blockSize = (szx: number): number => 1 << (szx + 4);

export function decodeBlock(value: Buffer): BlockValue {
  const v = decodeUint(value);
  return { num: Math.floor(v / 16), more: (v & 8) === 8, szx: v & 7 };
}

export function encodeBlock(b: BlockValue): Buffer {
  if (b.szx < 0 || b.szx > 6) throw new RangeError('SZX 7 is reserved (RFC 7959 §2.2)');
  return encodeUint(b.num * 16 + (b.more ? 8 : 0) + b.szx);
}

/** Largest SZX whose block size is <= bytes. */
export function szxFor(bytes: number): number {
  let szx = 6;
  while (szx > 0 && blockSize(szx) > bytes) szx--;
  return szx;
}
