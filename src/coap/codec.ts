// CoAP datagram codec (RFC 7252 §3), written here as single passes, with coap-packet (the codec of the `coap`
// package) kept as the reference that tests compare against. Decoding: coap-packet's `parse` silently truncates
// an option that runs past the end, accepts a payload marker with no payload and RFC 8974 token lengths (all
// message format errors under RFC 7252 §3) and keeps its cursor in a module global; every rejection here names
// its reason so the transport can count it. Encoding: coap-packet's `generate` allocates a buffer per option,
// re-sorts with parseInt and round-trips the code through text, which profiling showed as a main cost of the
// message layer (docs/BENCHMARKS.md §3); `encode` below computes the size once and writes into one buffer.

import { generate } from 'coap-packet';
import { codeToString } from './codes';
import { CoapMessage, CoapOption, MessageType, TYPES } from './message';

export type FormatErrorReason =
  | 'too-short'
  | 'bad-version'
  | 'bad-token-length'
  | 'truncated-token'
  | 'empty-message-not-empty'
  | 'reserved-code-class'
  | 'reserved-option-delta'
  | 'reserved-option-length'
  | 'truncated-option'
  | 'empty-payload'
  | 'too-large';

/** A datagram that is not a well-formed CoAP message. `messageId`/`type` are set when the header was readable. */
export class CoapFormatError extends Error {
  readonly code = 'ERR_COAP_FORMAT';
  constructor(
    readonly reason: FormatErrorReason,
    readonly type?: MessageType,
    readonly messageId?: number,
  ) {
    super(`malformed CoAP message: ${reason}`);
  }
}

export const MAX_DATAGRAM = 65507;

const TYPE_BITS: Record<MessageType, number> = { CON: 0, NON: 1, ACK: 2, RST: 3 };

function isSorted(options: CoapOption[]): boolean {
  for (let i = 1; i < options.length; i++) if (options[i].number < options[i - 1].number) return false;
  return true;
}

function extSize(n: number): number {
  return n < 13 ? 0 : n < 269 ? 1 : 2;
}

/** RFC 7252 §3.1: the 4-bit field for an option delta or length (13 and 14 announce 1 or 2 extended bytes). */
function nibble(n: number): number {
  return n < 13 ? n : n < 269 ? 13 : 14;
}

/** Write the extended bytes that `field` announces for `n`; returns the new offset. */
function writeExtended(buf: Buffer, i: number, n: number, field: number): number {
  if (field === 13) buf[i++] = n - 13;
  else if (field === 14) {
    buf.writeUInt16BE(n - 269, i);
    i += 2;
  }
  return i;
}

/** Encode a message (options in the order of their numbers; a copy is sorted if they are not). */
export function encode(msg: CoapMessage): Buffer {
  const { token, payload } = msg;
  // Only an unsorted list costs a (stable-sorted) copy; the caller's array is never reordered.
  const options = isSorted(msg.options) ? msg.options : msg.options.slice().sort((a, b) => a.number - b.number);
  if (token.length > 8) throw new CoapFormatError('bad-token-length', msg.type, msg.messageId);
  let size = 4 + token.length;
  let prev = 0;
  for (const o of options) {
    const delta = o.number - prev;
    size += 1 + extSize(delta) + extSize(o.value.length) + o.value.length;
    prev = o.number;
  }
  if (payload.length > 0 && msg.code !== 0) size += 1 + payload.length;
  if (size > MAX_DATAGRAM) throw new CoapFormatError('too-large', msg.type, msg.messageId);
  const buf = Buffer.allocUnsafe(size);
  buf[0] = 0x40 | (TYPE_BITS[msg.type] << 4) | token.length;
  buf[1] = msg.code;
  buf.writeUInt16BE(msg.messageId & 0xffff, 2);
  let i = 4;
  if (token.length) i += token.copy(buf, i);
  prev = 0;
  for (const o of options) {
    const delta = o.number - prev;
    const len = o.value.length;
    const head = i++;
    const d = nibble(delta);
    i = writeExtended(buf, i, delta, d);
    const l = nibble(len);
    i = writeExtended(buf, i, len, l);
    buf[head] = (d << 4) | l;
    if (len) i += o.value.copy(buf, i);
    prev = o.number;
  }
  if (payload.length > 0 && msg.code !== 0) {
    buf[i++] = 0xff;
    payload.copy(buf, i);
  }
  return buf;
}

/** The same message through coap-packet's `generate` (the reference encoder; tests compare the two). */
export function encodeWithCoapPacket(msg: CoapMessage): Buffer {
  return generate(
    {
      code: codeToString(msg.code),
      confirmable: msg.type === 'CON',
      ack: msg.type === 'ACK',
      reset: msg.type === 'RST',
      messageId: msg.messageId,
      token: msg.token,
      // coap-packet sorts this array in place; hand it a copy.
      options: msg.options.map((o) => ({ name: o.number, value: o.value })),
      payload: msg.payload,
    },
    MAX_DATAGRAM,
  );
}

export function decode(buf: Buffer): CoapMessage {
  if (buf.length < 4) throw new CoapFormatError('too-short');
  const b0 = buf[0];
  const type = TYPES[(b0 >> 4) & 3];
  const messageId = buf.readUInt16BE(2);
  // RFC 7252 §3: unknown version numbers MUST be silently ignored (reported as a format error without RST).
  if (b0 >> 6 !== 1) throw new CoapFormatError('bad-version');
  const tkl = b0 & 0x0f;
  const code = buf[1];
  if (tkl > 8) throw new CoapFormatError('bad-token-length', type, messageId);
  if (code === 0) {
    // §4.1: an Empty message has only the 4-byte header.
    if (buf.length !== 4 || tkl !== 0) throw new CoapFormatError('empty-message-not-empty', type, messageId);
    return { type, code, messageId, token: EMPTY, options: [], payload: EMPTY };
  }
  const cls = code >> 5;
  if (cls === 1 || cls === 6 || cls === 7) throw new CoapFormatError('reserved-code-class', type, messageId);
  if (buf.length < 4 + tkl) throw new CoapFormatError('truncated-token', type, messageId);
  const token = buf.subarray(4, 4 + tkl);
  const { options, payload } = decodeOptionsAndPayload(buf, 4 + tkl, type, messageId);
  return { type, code, messageId, token, options, payload };
}

function decodeOptionsAndPayload(buf: Buffer, start: number, type?: MessageType, messageId?: number): { options: CoapOption[]; payload: Buffer } {
  const options: CoapOption[] = [];
  let i = start;
  let number = 0;
  const end = buf.length;
  while (i < end) {
    const byte = buf[i++];
    if (byte === 0xff) {
      if (i === end) throw new CoapFormatError('empty-payload', type, messageId);
      return { options, payload: buf.subarray(i) };
    }
    let delta = byte >> 4;
    let length = byte & 0x0f;
    if (delta === 15) throw new CoapFormatError('reserved-option-delta', type, messageId);
    if (length === 15) throw new CoapFormatError('reserved-option-length', type, messageId);
    if (delta === 13) {
      if (i + 1 > end) throw new CoapFormatError('truncated-option', type, messageId);
      delta = buf[i++] + 13;
    } else if (delta === 14) {
      if (i + 2 > end) throw new CoapFormatError('truncated-option', type, messageId);
      delta = buf.readUInt16BE(i) + 269;
      i += 2;
    }
    if (length === 13) {
      if (i + 1 > end) throw new CoapFormatError('truncated-option', type, messageId);
      length = buf[i++] + 13;
    } else if (length === 14) {
      if (i + 2 > end) throw new CoapFormatError('truncated-option', type, messageId);
      length = buf.readUInt16BE(i) + 269;
      i += 2;
    }
    number += delta;
    if (number > 65535 || i + length > end) throw new CoapFormatError('truncated-option', type, messageId);
    options.push({ number, value: buf.subarray(i, i + length) });
    i += length;
  }
  return { options, payload: EMPTY };
}

/**
 * The transport-independent form "Code | options | 0xff payload" used for OSCORE plaintexts (RFC 8613 §5.3) and
 * for ph_req / last_notif in informative responses (observe-multicast-notifications-15 §4.2.2).
 */
export function encodeCodeOptionsPayload(code: number, options: CoapOption[], payload: Buffer): Buffer {
  const full = encode({ type: 'CON', code, messageId: 0, token: EMPTY, options, payload });
  full[3] = code; // reuse the last header byte as the leading code byte
  return full.subarray(3);
}

export function decodeCodeOptionsPayload(bytes: Buffer): { code: number; options: CoapOption[]; payload: Buffer } {
  if (bytes.length < 1) throw new CoapFormatError('too-short');
  const { options, payload } = decodeOptionsAndPayload(bytes, 1);
  return { code: bytes[0], options, payload };
}

const EMPTY = Buffer.alloc(0);
