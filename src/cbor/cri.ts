// CRIs (draft-ietf-core-href, cddl/cri.cddl) for the Reply-From option (groupcomm-proxy-07 §3) and the legacy
// Response-Forwarding tp_info of groupcomm-proxy-00 §3 ([1, #6.260(addr), ?port / null]).
// Authorities are encoded nested ([host, ?port]); the flat form of some draft examples is accepted on decode.

import net from 'node:net';
import { CODES } from '../coap/codes';
import { CoapResponseError } from '../coap/errors';
import { Tag, decodeCbor, decodeCborSequence, encodeCbor } from './cbor';

export const SCHEME_IDS: Record<string, number> = { coap: -1, coaps: -2, 'coap+tcp': -7, 'coaps+tcp': -8, 'coap+ws': -25, 'coaps+ws': -26 };
const SCHEME_NAMES = new Map(Object.entries(SCHEME_IDS).map(([k, v]) => [v, k]));
const DEFAULT_PORTS: Record<string, number> = { coap: 5683, coaps: 5684, 'coap+tcp': 5683, 'coaps+tcp': 5684, 'coap+ws': 80, 'coaps+ws': 443 };

/**
 * A CBOR value that does not have the structure a draft prescribes. `message` says what is wrong (for logs; it may
 * quote decoded values); when it becomes a response it is a 4.00 with a fixed diagnostic.
 */
export class CborStructureError extends CoapResponseError {
  override name = 'CborStructureError';
  constructor(message: string) {
    super({ responseCode: CODES.BAD_REQUEST, diagnostic: 'malformed CBOR structure', code: 'ERR_CBOR_STRUCTURE' }, message);
  }
}

export interface CriAuthority {
  /** null for a CRI reference without scheme (Reply-From element 2) */
  scheme: string | null;
  /** IP literal (without zone) or host name; '' in a CRI reference that gives a path only (no authority) */
  host: string;
  zone?: string;
  /** undefined = the scheme's default port */
  port?: number;
  path?: string[];
}

function ipToBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!net.isIPv6(ip)) throw new CborStructureError(`not an IP address: ${ip}`);
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, ''];
  const parse = (s: string) => (s ? s.split(':') : []).flatMap((g) => (g.includes('.') ? ipv4Groups(g) : [parseInt(g, 16)]));
  const h = parse(head);
  const t = parse(tail);
  const groups = [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
}

function ipv4Groups(v4: string): number[] {
  const [a, b, c, d] = v4.split('.').map(Number);
  return [(a << 8) | b, (c << 8) | d];
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length !== 16) throw new CborStructureError(`an IP address has 4 or 16 bytes, not ${b.length}`);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  // RFC 5952: compress the longest run of zero groups.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function authorityArray(a: CriAuthority): unknown[] {
  const out: unknown[] = [];
  if (net.isIP(a.host)) {
    out.push(ipToBytes(a.host));
    if (a.zone) out.push(a.zone);
  } else {
    for (const label of a.host.toLowerCase().split('.')) out.push(label);
  }
  if (a.port !== undefined && (a.scheme === null || a.port !== DEFAULT_PORTS[a.scheme])) out.push(a.port);
  return out;
}

/** CRI (or CRI reference, when scheme is null) with scheme, authority and optional path, as a CBOR array. */
export function criArray(a: CriAuthority): unknown[] {
  // a path-only CRI reference: no authority, the path starts with a slash (NOAUTH-LEADINGSLASH)
  if (a.scheme === null && a.host === '') return [null, true, a.path ?? []];
  let scheme: number | null;
  if (a.scheme === null) scheme = null;
  else {
    scheme = SCHEME_IDS[a.scheme];
    if (scheme === undefined) throw new CborStructureError(`no CRI scheme id for ${a.scheme}`);
  }
  const arr: unknown[] = [scheme, authorityArray(a)];
  if (a.path && a.path.length) arr.push(a.path);
  return arr;
}

export function encodeCri(a: CriAuthority): Buffer {
  return encodeCbor(criArray(a));
}

function parseAuthority(auth: unknown, scheme: string | null): Omit<CriAuthority, 'scheme'> {
  if (!Array.isArray(auth) || auth.length === 0) throw new CborStructureError('CRI authority must be a non-empty array');
  let i = 0;
  if (auth[0] === false) i = 2; // userinfo: (false, text)
  const first = auth[i];
  let host: string;
  let zone: string | undefined;
  if (first instanceof Uint8Array) {
    host = bytesToIp(first);
    i++;
    if (typeof auth[i] === 'string' && first.length === 16) zone = auth[i++] as string;
  } else {
    const labels: string[] = [];
    while (typeof auth[i] === 'string') labels.push(auth[i++] as string);
    if (!labels.length) throw new CborStructureError('CRI authority has no host');
    host = labels.join('.');
  }
  let port: number | undefined;
  if (i < auth.length) {
    const p = auth[i++];
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > 65535) throw new CborStructureError('CRI port must be 0..65535');
    port = p;
  }
  if (i !== auth.length) throw new CborStructureError('trailing elements in CRI authority');
  return { host, zone, port: port ?? (scheme ? DEFAULT_PORTS[scheme] : undefined) };
}

function decodePath(p: unknown): string[] {
  if (!Array.isArray(p) || !p.every((x) => typeof x === 'string')) throw new CborStructureError('CRI path must be an array of text');
  return p as string[];
}

/**
 * A CRI reference that gives a path only (draft-ietf-core-href, CRI-Reference): [null, no-authority, path] with
 * no-authority = null / true, or [discard, path] with discard = true / 0..127. As Reply-From element 2
 * (groupcomm-proxy-07 §3, §6.2) it is an absolute path on the proxy that element 1 names.
 */
function decodePathOnlyReference(arr: unknown[]): CriAuthority | undefined {
  if (arr.length >= 2 && (arr[0] === true || (typeof arr[0] === 'number' && Number.isInteger(arr[0]) && arr[0] >= 0 && arr[0] <= 127))) {
    if (arr.length > 2) throw new CborStructureError('a Reply-From CRI reference carries no query or fragment');
    return { scheme: null, host: '', path: decodePath(arr[1]) };
  }
  if (arr.length >= 3 && arr[0] === null && (arr[1] === null || arr[1] === true)) {
    if (arr.length > 3) throw new CborStructureError('a Reply-From CRI reference carries no query or fragment');
    return { scheme: null, host: '', path: decodePath(arr[2]) };
  }
  return undefined;
}

/**
 * Decode one CRI array (nested authority; the flat [scheme, host-bytes, port] form is accepted too). With
 * `allowNullScheme`, a CRI reference: scheme null with an authority, or a path-only reference (host '').
 */
export function decodeCriArray(arr: unknown, allowNullScheme = false): CriAuthority {
  if (!Array.isArray(arr) || arr.length < 2) throw new CborStructureError('a CRI is an array of at least scheme and authority');
  if (allowNullScheme) {
    const pathOnly = decodePathOnlyReference(arr);
    if (pathOnly) return pathOnly;
  }
  const s = arr[0];
  let scheme: string | null;
  if (s === null && allowNullScheme) scheme = null;
  else if (typeof s === 'number') {
    const name = SCHEME_NAMES.get(s);
    if (!name) throw new CborStructureError(`unknown CRI scheme id ${s}`);
    scheme = name;
  } else throw new CborStructureError('CRI scheme must be a negative integer');
  if (arr[1] instanceof Uint8Array) {
    // Flat form seen in some draft examples: [scheme, h'addr', port].
    const flat = arr.slice(1);
    return { scheme, ...parseAuthority(flat, scheme) };
  }
  const out: CriAuthority = { scheme, ...parseAuthority(arr[1], scheme) };
  if (arr.length > 2 && arr[2] !== null) out.path = decodePath(arr[2]);
  return out;
}

/** Reply-From (groupcomm-proxy-07 §3): a CBOR sequence of 1 CRI and an optional CRI reference. */
export function encodeReplyFrom(target: CriAuthority, reference?: CriAuthority): Buffer {
  if (target.path?.length) throw new CborStructureError('the first Reply-From element has no path');
  const parts = [encodeCbor(criArray(target))];
  if (reference) {
    if (reference.scheme !== null) throw new CborStructureError('the second Reply-From element is a CRI reference without scheme');
    if (!net.isIP(target.host) && reference.host) throw new CborStructureError('with an authority in element 2, element 1 must not use a host name');
    parts.push(encodeCbor(criArray(reference)));
  }
  return Buffer.concat(parts);
}

export function decodeReplyFrom(value: Buffer): { target: CriAuthority; reference?: CriAuthority } {
  let items: unknown[];
  try {
    items = decodeCborSequence(value);
  } catch (err) {
    throw new CborStructureError(`Reply-From is not a CBOR sequence: ${(err as Error).message}`);
  }
  if (!Array.isArray(items) || items.length < 1 || items.length > 2) throw new CborStructureError('Reply-From holds one or two CRIs');
  const target = decodeCriArray(items[0]);
  if (target.path?.length) throw new CborStructureError('the first Reply-From element must not have a path');
  const reference = items.length === 2 ? decodeCriArray(items[1], true) : undefined;
  if (reference && reference.scheme !== null) throw new CborStructureError('the second Reply-From element must have a null scheme');
  // §3: with an authority in element 2, element 1 must not use a host name
  if (reference?.host && !net.isIP(target.host)) throw new CborStructureError('with an authority in element 2, element 1 must not use a host name');
  return { target, reference };
}

/**
 * Legacy Response-Forwarding value (groupcomm-proxy-00 §3): [1, #6.260(srv_host), ?srv_port / null]. The port is
 * left out when it is the UDP default 5683, written as null when it equals the group port, and given otherwise.
 */
export function encodeResponseForwarding(address: string, port: number, groupPort?: number): Buffer {
  const arr: unknown[] = [1, new Tag(ipToBytes(address.split('%')[0]), 260)];
  if (port !== 5683) arr.push(groupPort !== undefined && port === groupPort ? null : port);
  return encodeCbor(arr);
}

export function decodeResponseForwarding(value: Buffer, groupPort?: number): { address: string; port: number } {
  let v: unknown;
  try {
    v = decodeCbor(value);
  } catch (err) {
    throw new CborStructureError(`Response-Forwarding is not CBOR: ${(err as Error).message}`);
  }
  if (!Array.isArray(v) || v.length < 2 || v.length > 3 || v[0] !== 1) throw new CborStructureError('Response-Forwarding must be [1, #6.260(addr), ?port]');
  const host = v[1] instanceof Tag ? (v[1] as Tag).value : v[1];
  if (v[1] instanceof Tag && (v[1] as Tag).tag !== 260) throw new CborStructureError('Response-Forwarding address must use tag 260');
  if (!(host instanceof Uint8Array)) throw new CborStructureError('Response-Forwarding address must be a byte string');
  let port = 5683;
  if (v.length === 3) {
    if (v[2] === null) {
      if (groupPort === undefined) throw new CborStructureError('srv_port null needs the group port of the request');
      port = groupPort;
    } else if (typeof v[2] === 'number' && Number.isInteger(v[2]) && v[2] >= 0 && v[2] <= 65535) port = v[2];
    else throw new CborStructureError('bad srv_port');
  }
  return { address: bytesToIp(host), port };
}
