// The relayed response of groupcomm-proxy-07 §5.4 built by patching the server's datagram (RFC 7252 §3) instead of
// building and encoding a new message: a new header (type, the proxy's Message ID, the client's token), the options
// the proxy adds (Reply-From, §3; the legacy Response-Forwarding) inserted at their place in number order, and the
// rest of the server's options, payload marker and payload copied as they came. Only the option right after an
// inserted one gets a new header (its delta changes). The result is byte for byte what encoding the message the
// full path builds would give (test/unit/relay-datagram.test.ts compares the two); anything that does not fit the
// simple case returns undefined and the caller takes the full path.

import { CoapMessage, CoapOption } from '../coap/message';

const nibble = (n: number): number => (n < 13 ? n : n < 269 ? 13 : 14);

/** Write one option (header with delta `delta`, then its value); returns the new offset. */
function writeOption(buf: Buffer, i: number, delta: number, value: Buffer): number {
  const len = value.length;
  const d = nibble(delta);
  const l = nibble(len);
  buf[i++] = (d << 4) | l;
  if (d === 13) buf[i++] = delta - 13;
  else if (d === 14) {
    buf.writeUInt16BE(delta - 269, i);
    i += 2;
  }
  if (l === 13) buf[i++] = len - 13;
  else if (l === 14) {
    buf.writeUInt16BE(len - 269, i);
    i += 2;
  }
  return i + (len ? value.copy(buf, i) : 0);
}

/**
 * The datagram `data` (decoded as `m`, whose option values and payload are views into it) relayed as a message of
 * type `typeBits` (RFC 7252 §3: 0 CON, 1 NON) with `messageId` and `token`, and the options `added` (in any order,
 * numbers distinct and not among the server's) inserted. Undefined when `m` is not a view of `data`, a number of
 * `added` is already there, or the token is too long: the caller then builds the message in full.
 */
export function relayDatagram(data: Buffer, m: CoapMessage, typeBits: number, messageId: number, token: Buffer, added: readonly CoapOption[]): Buffer | undefined {
  if (token.length > 8 || data.length < 4) return undefined;
  const add = added.length > 1 ? added.slice().sort((a, b) => a.number - b.number) : added;
  const opts = m.options;
  const base = data.byteOffset;
  const buffer = data.buffer;
  const optStart = 4 + (data[0] & 0x0f);
  // the server's options end where the payload marker is (or at the end of the datagram)
  let optEnd = data.length;
  if (m.payload.length) {
    if (m.payload.buffer !== buffer) return undefined;
    optEnd = m.payload.byteOffset - base - 1;
    if (optEnd < optStart || data[optEnd] !== 0xff || optEnd + 1 + m.payload.length !== data.length) return undefined;
  }
  // Upper bound: the inserted options take at most 5 header bytes each; a server's option after an inserted one
  // only gets a smaller delta, so its header never grows.
  let bound = 4 + token.length + (data.length - optStart);
  for (const a of add) bound += 5 + a.value.length;
  const out = Buffer.allocUnsafe(bound);
  out[0] = 0x40 | (typeBits << 4) | token.length;
  out[1] = data[1];
  out.writeUInt16BE(messageId & 0xffff, 2);
  let w = 4 + token.copy(out, 4);
  let prevOut = 0;
  let prevIn = 0;
  /** where the server's current option starts in `data` (its header), and a run of them copied as they are */
  let at = optStart;
  let runStart = optStart;
  let j = 0;
  for (let i = 0; i < opts.length; i++) {
    const o = opts[i];
    // in wire order (as decoded from `data`), and a view into `data`
    if (o.number < prevIn) return undefined;
    const v = o.value;
    if (v.buffer !== buffer) return undefined;
    const valueStart = v.byteOffset - base;
    const valueEnd = valueStart + v.length;
    // an option header takes 1 to 5 bytes before its value
    if (valueStart - at < 1 || valueStart - at > 5 || valueEnd > optEnd) return undefined;
    if (j < add.length && add[j].number <= o.number) {
      // the run so far goes out unchanged, then the inserted options
      w += data.copy(out, w, runStart, at);
      while (j < add.length && add[j].number <= o.number) {
        if (add[j].number === o.number) return undefined;
        w = writeOption(out, w, add[j].number - prevOut, add[j].value);
        prevOut = add[j++].number;
      }
      // this option follows an inserted one: a new header (smaller delta), its value as it was
      w = writeOption(out, w, o.number - prevOut, v);
      runStart = valueEnd;
    }
    prevIn = prevOut = o.number;
    at = valueEnd;
  }
  if (at !== optEnd) return undefined;
  w += data.copy(out, w, runStart, optEnd);
  while (j < add.length) {
    w = writeOption(out, w, add[j].number - prevOut, add[j].value);
    prevOut = add[j++].number;
  }
  // payload marker and payload, as they came
  if (optEnd < data.length) w += data.copy(out, w, optEnd, data.length);
  return w === bound ? out : out.subarray(0, w);
}
