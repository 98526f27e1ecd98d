// The informative response payload of observe-multicast-notifications-15 §4.2 (keys pinned to -15, §11:
// tp_info 0, ph_req 1, last_notif 2, next_not_before 3, ending 4), with tp_info for CoAP over UDP (§4.2.1.1):
// [tpi_server, tpi_client, tpi_token], each CRI-no-local with a nested authority (the flat form of the draft's
// examples is accepted when decoding). A tp_info of [tpi_server] alone (§4.2.1: tpi_details is optional) decodes
// to `tpServer` without `tpInfo`. The Content-Format has no number yet (TBD, §14.2).

import { decodeCbor, encodeCbor } from './cbor';
import { CborStructureError, CriAuthority, criArray, decodeCriArray } from './cri';

/** Informative-response keys of OMN-15 (they were renumbered three times: never use another version's keys). */
export const IR_KEYS = { tp_info: 0, ph_req: 1, last_notif: 2, next_not_before: 3, ending: 4, join_uri: 5, sec_gp: 6 } as const;

/** No IANA number yet; an Experimental Use value (RFC 7252 §12.3: 65000-65535), overridable. */
export let INFORMATIVE_RESPONSE_CONTENT_FORMAT = 65000;
export function setInformativeResponseContentFormat(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new RangeError('content format out of range');
  INFORMATIVE_RESPONSE_CONTENT_FORMAT = n;
}

export interface TpInfoUdp {
  /** source of the notifications (must equal the informative response's source) */
  server: { host: string; port: number; zone?: string };
  /** destination of the notifications: the group */
  client: { host: string; port: number; zone?: string };
  token: Buffer;
}

export interface InformativeResponse {
  /** a complete tp_info for CoAP over UDP */
  tpInfo?: TpInfoUdp;
  /** tpi_server, whenever tp_info is present (also when it carries no tpi_details, §4.2.1) */
  tpServer?: TpInfoUdp['server'];
  /** transport-independent bytes of the phantom request */
  phReq?: Buffer;
  /** transport-independent bytes of the latest notification */
  lastNotif?: Buffer;
  nextNotBefore?: number;
  /** NumericDate of the planned cancellation */
  ending?: number;
  /** keys this implementation does not interpret, kept as they came */
  other?: Map<number | string, unknown>;
}

function noLocal(a: { host: string; port: number; zone?: string }): unknown[] {
  const arr = criArray({ scheme: 'coap', host: a.host, port: a.port, zone: a.zone });
  return arr.slice(0, 2);
}

export function encodeTpInfo(t: TpInfoUdp): unknown[] {
  return [noLocal(t.server), noLocal(t.client), t.token];
}

export function encodeInformativeResponse(ir: InformativeResponse): Buffer {
  const m = new Map<number | string, unknown>();
  if (ir.tpInfo) m.set(IR_KEYS.tp_info, encodeTpInfo(ir.tpInfo));
  if (ir.phReq) m.set(IR_KEYS.ph_req, ir.phReq);
  if (ir.lastNotif) m.set(IR_KEYS.last_notif, ir.lastNotif);
  if (ir.nextNotBefore !== undefined) m.set(IR_KEYS.next_not_before, ir.nextNotBefore);
  if (ir.ending !== undefined) m.set(IR_KEYS.ending, ir.ending);
  for (const [k, v] of ir.other ?? []) if (!m.has(k)) m.set(k, v);
  return encodeCbor(m);
}

function toBuffer(v: unknown, what: string): Buffer {
  if (v instanceof Uint8Array) return Buffer.from(v);
  throw new CborStructureError(`${what} must be a byte string`);
}

function decodeServer(v: unknown): CriAuthority {
  const s = decodeCriArray(v);
  if (s.scheme !== 'coap') throw new CborStructureError('tp_info: only coap (UDP) is supported');
  if (s.path?.length) throw new CborStructureError('tp_info CRIs carry no path');
  return s;
}

/** §4.2.1: tp_info = [tpi_server, ?tpi_details]; only its tpi_server. */
export function decodeTpServer(v: unknown): TpInfoUdp['server'] {
  if (!Array.isArray(v) || v.length < 1) throw new CborStructureError('tp_info is [tpi_server, ?tpi_details]');
  const s = decodeServer(v[0]);
  return { host: s.host, port: s.port ?? 5683, zone: s.zone };
}

/** A complete tp_info for CoAP over UDP (§4.2.1.1): [tpi_server, tpi_client, tpi_token]. */
export function decodeTpInfo(v: unknown): TpInfoUdp {
  if (!Array.isArray(v) || v.length !== 3) throw new CborStructureError('tp_info for CoAP over UDP is [tpi_server, tpi_client, tpi_token]');
  const s = decodeServer(v[0]);
  const c: CriAuthority = decodeCriArray(v[1]);
  if (c.scheme !== 'coap') throw new CborStructureError('tp_info: only coap (UDP) is supported');
  if (c.path?.length) throw new CborStructureError('tp_info CRIs carry no path');
  const token = toBuffer(v[2], 'tpi_token');
  if (token.length > 8) throw new CborStructureError('tpi_token longer than 8 bytes');
  return { server: { host: s.host, port: s.port ?? 5683, zone: s.zone }, client: { host: c.host, port: c.port ?? 5683, zone: c.zone }, token };
}

export function decodeInformativeResponse(payload: Buffer): InformativeResponse {
  let m: unknown;
  try {
    m = decodeCbor(payload);
  } catch (err) {
    throw new CborStructureError(`informative response is not CBOR: ${(err as Error).message}`);
  }
  if (!(m instanceof Map)) throw new CborStructureError('informative response payload must be a CBOR map');
  const out: InformativeResponse = {};
  const other = new Map<number | string, unknown>();
  for (const [k, v] of m) {
    if (typeof k !== 'number' && typeof k !== 'string') throw new CborStructureError('informative response keys are int or text');
    switch (k) {
      case IR_KEYS.tp_info:
        out.tpServer = decodeTpServer(v);
        // [tpi_server] alone: the transport is known, its details are not (§5: the client may re-register)
        if (Array.isArray(v) && v.length > 1) out.tpInfo = decodeTpInfo(v);
        break;
      case IR_KEYS.ph_req:
        out.phReq = toBuffer(v, 'ph_req');
        break;
      case IR_KEYS.last_notif:
        out.lastNotif = toBuffer(v, 'last_notif');
        break;
      case IR_KEYS.next_not_before:
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new CborStructureError('next_not_before must be a uint');
        out.nextNotBefore = v;
        break;
      case IR_KEYS.ending:
        if (typeof v !== 'number') throw new CborStructureError('ending must be a NumericDate');
        out.ending = v;
        break;
      default:
        other.set(k, v);
    }
  }
  if (other.size) out.other = other;
  return out;
}
