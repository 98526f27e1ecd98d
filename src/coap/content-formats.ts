// CoAP Content-Formats (RFC 7252 §12.3 and the IANA registry) that the nodes can name or decode.

export const CONTENT_FORMATS: Record<string, number> = {
  'text/plain;charset=utf-8': 0,
  'application/link-format': 40,
  'application/xml': 41,
  'application/octet-stream': 42,
  'application/exi': 47,
  'application/json': 50,
  'application/json-patch+json': 51,
  'application/merge-patch+json': 52,
  'application/cbor': 60,
  'application/cwt': 61,
  'application/multipart-core': 62,
  'application/cbor-seq': 63,
  'application/senml+json': 110,
  'application/senml+cbor': 112,
};

const BY_NUMBER = new Map(Object.entries(CONTENT_FORMATS).map(([k, v]) => [v, k]));

export function contentFormatName(num: number): string | undefined {
  return BY_NUMBER.get(num);
}

export function parseContentFormat(input: string | number): number {
  if (typeof input === 'number') return input;
  const trimmed = input.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const key = trimmed.toLowerCase() === 'text/plain' ? 'text/plain;charset=utf-8' : trimmed.toLowerCase();
  const num = CONTENT_FORMATS[key];
  if (num === undefined) throw new RangeError(`unknown content format ${JSON.stringify(input)}`);
  return num;
}
