// The client side of groupcomm-proxy-07 §9.7: a batch from the HTTP-to-CoAP proxy (one multipart/mixed body of
// application/http responses, §9.6) split into one response per server, each with the origin its Reply-From header
// names (§9.2: an SF List of one or two Byte Sequences, item i = CBOR array i of the CoAP Reply-From; a field of
// any other form is ignored, and the response then has no origin).

import { decodeReplyFrom } from '../cbor/cri';
import { replyFromValue } from './http-mapping';
import { MultipartReader, ParsedHttpResponse, boundaryOf } from './multipart';

export interface BatchOrigin {
  address: string;
  port: number;
  /** coap://address:port of the responding server (case 2), or of the proxy that stands in for it (case 1) */
  uri: string;
  /** reverse case 1: the server behind the proxy (the second Reply-From element) */
  reference?: { address?: string; port?: number };
}

export interface BatchResponse extends ParsedHttpResponse {
  /** undefined when the part had no Reply-From, or one of another form (§9.2: ignored) */
  origin?: BatchOrigin;
  /** the Reply-From option value (the CBOR sequence), when the header was well formed */
  replyFrom?: Buffer;
}

/** The origin a Reply-From header names, or undefined when the field is malformed. */
export function originOf(field: string | string[] | undefined): { origin: BatchOrigin; replyFrom: Buffer } | undefined {
  const value = replyFromValue(field);
  if (!value) return undefined;
  try {
    const rf = decodeReplyFrom(value);
    const host = rf.target.zone ? `${rf.target.host}%${rf.target.zone}` : rf.target.host;
    const port = rf.target.port ?? 5683;
    const shown = host.includes(':') ? `[${host}]` : host;
    const origin: BatchOrigin = { address: host, port, uri: `${rf.target.scheme ?? 'coap'}://${shown}:${port}` };
    if (rf.reference) origin.reference = { address: rf.reference.host || undefined, port: rf.reference.port };
    return { origin, replyFrom: value };
  } catch {
    return undefined;
  }
}

function withOrigin(p: ParsedHttpResponse): BatchResponse {
  const o = originOf(p.headers['reply-from']);
  return o ? { ...p, origin: o.origin, replyFrom: o.replyFrom } : p;
}

/** Parse a whole batch (Content-Type header value and body). */
export function parseBatch(contentType: string | undefined, body: Buffer): BatchResponse[] {
  const reader = new MultipartReader(boundaryOf(contentType), Math.max(1 << 20, body.length));
  return reader.push(body).map(withOrigin);
}

/** Parse a batch as it streams in: `push` each chunk, get the parts completed by it. */
export class BatchReader {
  private readonly reader: MultipartReader;

  constructor(contentType: string | undefined, limit?: number) {
    this.reader = new MultipartReader(boundaryOf(contentType), limit);
  }

  push(chunk: Buffer): BatchResponse[] {
    return this.reader.push(chunk).map(withOrigin);
  }

  get complete(): boolean {
    return this.reader.done;
  }
}
