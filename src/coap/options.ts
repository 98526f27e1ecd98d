// The CoAP option table: RFC 7252 §5.10 and §12.2, the later RFCs that added options, and the options of the
// group-communication drafts (groupcomm-proxy, observe-multicast-notifications, multicast-notifications-proxy),
// whose numbers are only *suggested* (TBDn placeholders the drafts ask IANA to assign) and can be overridden with `configureOptionNumbers`.
// Critical / Unsafe / NoCacheKey are derived from the number's bits (RFC 7252 §5.4.6), never tabulated.

export type OptionFormat = 'empty' | 'opaque' | 'uint' | 'string';

export interface OptionDef {
  number: number;
  name: string;
  format: OptionFormat;
  minLength: number;
  maxLength: number;
  repeatable: boolean;
  source: string;
}

/** The declarative list. Draft options carry their SUGGESTED numbers. */
const TABLE: OptionDef[] = [
  { number: 1, name: 'If-Match', format: 'opaque', minLength: 0, maxLength: 8, repeatable: true, source: 'RFC 7252 §5.10.8.1' },
  { number: 3, name: 'Uri-Host', format: 'string', minLength: 1, maxLength: 255, repeatable: false, source: 'RFC 7252 §5.10.1' },
  { number: 4, name: 'ETag', format: 'opaque', minLength: 1, maxLength: 8, repeatable: true, source: 'RFC 7252 §5.10.6' },
  { number: 5, name: 'If-None-Match', format: 'empty', minLength: 0, maxLength: 0, repeatable: false, source: 'RFC 7252 §5.10.8.2' },
  { number: 6, name: 'Observe', format: 'uint', minLength: 0, maxLength: 3, repeatable: false, source: 'RFC 7641 §2' },
  { number: 7, name: 'Uri-Port', format: 'uint', minLength: 0, maxLength: 2, repeatable: false, source: 'RFC 7252 §5.10.1' },
  { number: 8, name: 'Location-Path', format: 'string', minLength: 0, maxLength: 255, repeatable: true, source: 'RFC 7252 §5.10.7' },
  { number: 9, name: 'OSCORE', format: 'opaque', minLength: 0, maxLength: 255, repeatable: false, source: 'RFC 8613 §2' },
  { number: 11, name: 'Uri-Path', format: 'string', minLength: 0, maxLength: 255, repeatable: true, source: 'RFC 7252 §5.10.1' },
  { number: 12, name: 'Content-Format', format: 'uint', minLength: 0, maxLength: 2, repeatable: false, source: 'RFC 7252 §5.10.3' },
  { number: 14, name: 'Max-Age', format: 'uint', minLength: 0, maxLength: 4, repeatable: false, source: 'RFC 7252 §5.10.5' },
  { number: 15, name: 'Uri-Query', format: 'string', minLength: 0, maxLength: 255, repeatable: true, source: 'RFC 7252 §5.10.1' },
  { number: 16, name: 'Hop-Limit', format: 'uint', minLength: 1, maxLength: 1, repeatable: false, source: 'RFC 8768 §3' },
  { number: 17, name: 'Accept', format: 'uint', minLength: 0, maxLength: 2, repeatable: false, source: 'RFC 7252 §5.10.4' },
  { number: 19, name: 'Q-Block1', format: 'uint', minLength: 0, maxLength: 3, repeatable: false, source: 'RFC 9177 §4' },
  { number: 20, name: 'Location-Query', format: 'string', minLength: 0, maxLength: 255, repeatable: true, source: 'RFC 7252 §5.10.7' },
  { number: 21, name: 'EDHOC', format: 'empty', minLength: 0, maxLength: 0, repeatable: false, source: 'RFC 9668 §3.1' },
  { number: 23, name: 'Block2', format: 'uint', minLength: 0, maxLength: 3, repeatable: false, source: 'RFC 7959 §2.1' },
  { number: 27, name: 'Block1', format: 'uint', minLength: 0, maxLength: 3, repeatable: false, source: 'RFC 7959 §2.1' },
  { number: 28, name: 'Size2', format: 'uint', minLength: 0, maxLength: 4, repeatable: false, source: 'RFC 7959 §4' },
  { number: 31, name: 'Q-Block2', format: 'uint', minLength: 0, maxLength: 3, repeatable: true, source: 'RFC 9177 §4' },
  { number: 35, name: 'Proxy-Uri', format: 'string', minLength: 1, maxLength: 1034, repeatable: false, source: 'RFC 7252 §5.10.2' },
  { number: 39, name: 'Proxy-Scheme', format: 'string', minLength: 1, maxLength: 255, repeatable: false, source: 'RFC 7252 §5.10.2' },
  { number: 60, name: 'Size1', format: 'uint', minLength: 0, maxLength: 4, repeatable: false, source: 'RFC 7252 §5.10.9' },
  { number: 252, name: 'Echo', format: 'opaque', minLength: 1, maxLength: 40, repeatable: false, source: 'RFC 9175 §2.2.1' },
  { number: 258, name: 'No-Response', format: 'uint', minLength: 0, maxLength: 1, repeatable: false, source: 'RFC 7967 §2' },
  { number: 292, name: 'Request-Tag', format: 'opaque', minLength: 0, maxLength: 8, repeatable: true, source: 'RFC 9175 §3.2.1' },
  { number: 2049, name: 'OCF-Accept-Content-Format-Version', format: 'uint', minLength: 2, maxLength: 2, repeatable: false, source: 'OCF Core' },
  { number: 2053, name: 'OCF-Content-Format-Version', format: 'uint', minLength: 2, maxLength: 2, repeatable: false, source: 'OCF Core' },
  // Drafts: SUGGESTED numbers, not IANA-assigned (groupcomm-proxy-07 §11.1, observe-multicast-notifications-15 §14).
  { number: 2, name: 'Multicast-Timeout', format: 'uint', minLength: 0, maxLength: 4, repeatable: false, source: 'groupcomm-proxy-07 §2 [SUGGESTED 2]' },
  { number: 248, name: 'Reply-From', format: 'opaque', minLength: 5, maxLength: 1034, repeatable: false, source: 'groupcomm-proxy-07 §3 [SUGGESTED 248]' },
  { number: 24, name: 'Group-ETag', format: 'opaque', minLength: 1, maxLength: 8, repeatable: true, source: 'groupcomm-proxy-07 §7.3 [SUGGESTED 24]' },
  { number: 18, name: 'Feedback-Divider', format: 'uint', minLength: 0, maxLength: 1, repeatable: false, source: 'observe-multicast-notifications-15 §8.1 [SUGGESTED 18]' },
  { number: 47, name: 'Listen-To-Multicast-Responses', format: 'opaque', minLength: 3, maxLength: 1024, repeatable: false, source: 'multicast-notifications-proxy-02 §4.1 [SUGGESTED 47]' },
  { number: 548, name: 'Request-Hash', format: 'opaque', minLength: 0, maxLength: 64, repeatable: false, source: 'draft-ietf-core-cacheable-oscore-02 §3.3 [SUGGESTED 548]' },
  // "Length: any"; bounded here by what the padding block size allows (deterministic.ts).
  { number: 64988, name: 'Padding', format: 'opaque', minLength: 0, maxLength: 2048, repeatable: true, source: 'draft-ietf-core-cacheable-oscore-02 App. A.1 [SUGGESTED 64988]' },
];

/** Draft options whose numbers the user may override (their numbers are not assigned yet). */
export const DRAFT_OPTIONS = ['Multicast-Timeout', 'Reply-From', 'Group-ETag', 'Feedback-Divider', 'Listen-To-Multicast-Responses', 'Response-Forwarding'] as const;
export type DraftOptionName = (typeof DRAFT_OPTIONS)[number];

let byNumber = new Map<number, OptionDef>();
let byName = new Map<string, OptionDef>();
/**
 * By the name as the table spells it: optionNumber('Multicast-Timeout') and optionDef('Reply-From') run on every
 * proxied request and relayed response, without lowercasing the name.
 */
let bySpelling = new Map<string, OptionDef>();

/** Build the indexes, and install them only if the table is consistent. */
function rebuild(table: OptionDef[]): void {
  const nums = new Map<number, OptionDef>();
  const names = new Map<string, OptionDef>();
  const spellings = new Map<string, OptionDef>();
  for (const def of table) {
    if (nums.has(def.number)) throw new Error(`option number ${def.number} used twice (${nums.get(def.number)!.name}, ${def.name})`);
    nums.set(def.number, def);
    names.set(def.name.toLowerCase(), def);
    spellings.set(def.name, def);
  }
  byNumber = nums;
  byName = names;
  bySpelling = spellings;
}
let current = TABLE.slice();
rebuild(current);

/**
 * Override the numbers of draft options (e.g. an interop profile that uses Californium's local number 96 for the
 * legacy Response-Forwarding option). Process-wide, because the wire format is process-wide; returns the previous
 * numbers so tests can restore them. The legacy Response-Forwarding option has no number until one is given here.
 */
export function configureOptionNumbers(numbers: Partial<Record<DraftOptionName, number>>): Partial<Record<DraftOptionName, number>> {
  const previous: Partial<Record<DraftOptionName, number>> = {};
  let table = current.slice();
  for (const [name, num] of Object.entries(numbers) as [DraftOptionName, number | undefined][]) {
    if (!DRAFT_OPTIONS.includes(name)) throw new Error(`${name} is not a draft option with an overridable number`);
    const old = table.find((d) => d.name === name);
    if (old) previous[name] = old.number;
    table = table.filter((d) => d.name !== name);
    if (num === undefined) continue;
    if (!Number.isInteger(num) || num < 1 || num > 65535) throw new Error(`invalid option number ${num} for ${name}`);
    const base = old ?? TABLE.find((d) => d.name === name) ?? RESPONSE_FORWARDING_DEF;
    table.push({ ...base, number: num });
  }
  rebuild(table);
  current = table;
  return previous;
}

/** Legacy groupcomm-proxy-00 Response-Forwarding (tp_info array); no number until configured. */
const RESPONSE_FORWARDING_DEF: OptionDef = {
  number: 0, name: 'Response-Forwarding', format: 'opaque', minLength: 10, maxLength: 25, repeatable: false, source: 'groupcomm-proxy-00 §3',
};

export function optionDef(numberOrName: number | string): OptionDef | undefined {
  return typeof numberOrName === 'number' ? byNumber.get(numberOrName) : (bySpelling.get(numberOrName) ?? byName.get(numberOrName.toLowerCase()));
}

/** Number of a named option (throws for an unknown name, so typos surface). */
export function optionNumber(name: string): number {
  const def = bySpelling.get(name) ?? byName.get(name.toLowerCase());
  if (!def) {
    if (/^\d+$/.test(name)) return Number(name);
    throw new Error(`unknown CoAP option ${JSON.stringify(name)}`);
  }
  return def.number;
}

export function optionName(num: number): string {
  return byNumber.get(num)?.name ?? String(num);
}

// RFC 7252 §5.4.6: the properties are encoded in the option number.
export const isCritical = (num: number): boolean => (num & 1) === 1;
export const isUnsafe = (num: number): boolean => (num & 2) === 2;
export const isNoCacheKey = (num: number): boolean => (num & 0x1e) === 0x1c;

/** Standard option numbers used throughout the code (RFC-assigned, never overridden). */
export const OPT = {
  IF_MATCH: 1, URI_HOST: 3, ETAG: 4, IF_NONE_MATCH: 5, OBSERVE: 6, URI_PORT: 7, LOCATION_PATH: 8, OSCORE: 9,
  URI_PATH: 11, CONTENT_FORMAT: 12, MAX_AGE: 14, URI_QUERY: 15, HOP_LIMIT: 16, ACCEPT: 17, LOCATION_QUERY: 20,
  EDHOC: 21, BLOCK2: 23, BLOCK1: 27, SIZE2: 28, Q_BLOCK2: 31, PROXY_URI: 35, PROXY_SCHEME: 39, SIZE1: 60, ECHO: 252,
  NO_RESPONSE: 258, REQUEST_TAG: 292,
} as const;

/** Encode an unsigned integer option value in the minimal number of bytes (0 is the empty value). */
export function encodeUint(value: number): Buffer {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`uint option value out of range: ${value}`);
  if (value === 0) return Buffer.alloc(0);
  const bytes = value < 0x100 ? 1 : value < 0x10000 ? 2 : value < 0x1000000 ? 3 : 4;
  const b = Buffer.alloc(bytes);
  b.writeUIntBE(value, 0, bytes);
  return b;
}

export function decodeUint(value: Buffer): number {
  // RFC 7252 §3.2: a sender uses the minimal length, but a recipient must accept leading zero bytes.
  if (value.length === 0) return 0;
  if (value.length > 6) throw new RangeError('uint option longer than 6 bytes');
  return value.readUIntBE(0, value.length);
}

/** Encode a value for an option by its format. */
export function encodeOptionValue(num: number, value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  const def = byNumber.get(num);
  const format = def?.format ?? (typeof value === 'number' ? 'uint' : 'opaque');
  switch (format) {
    case 'empty':
      return Buffer.alloc(0);
    case 'uint':
      if (typeof value !== 'number') throw new TypeError(`option ${optionName(num)} needs a number`);
      return encodeUint(value);
    case 'string':
      return Buffer.from(String(value), 'utf8');
    default:
      if (typeof value === 'string') return Buffer.from(value, 'utf8');
      if (typeof value === 'number') return encodeUint(value);
      throw new TypeError(`option ${optionName(num)} needs a Buffer`);
  }
}

/** Decode a value for presentation (strings as text, uints as numbers, the rest as Buffers). */
export function decodeOptionValue(num: number, value: Buffer): Buffer | number | string | true {
  const def = byNumber.get(num);
  switch (def?.format) {
    case 'empty':
      return true;
    case 'uint':
      return value.length <= 6 ? decodeUint(value) : value;
    case 'string':
      return value.toString('utf8');
    default:
      return value;
  }
}

/** Check a received option value against the table's length bounds (RFC 7252 §5.4.3: treat as unrecognized). */
export function hasValidLength(num: number, value: Buffer): boolean {
  const def = byNumber.get(num);
  return !def || (value.length >= def.minLength && value.length <= def.maxLength);
}
