// The batch of groupcomm-proxy-07 §9.6: a multipart/mixed body (RFC 2046 §5.1.1) whose parts are application/http
// messages (RFC 9112 §10.2), one HTTP response each. Writer for the proxy, incremental reader for clients (a
// streamed batch is read part by part as it arrives). Written by hand: the format is small and both sides must
// agree on the exact bytes (CRLF before a delimiter belongs to the delimiter, RFC 2046 §5.1.1).

import { randomBytes } from 'node:crypto';
import { HttpResponseParts, REASONS } from './http-mapping';

const CRLF = '\r\n';

export function newBoundary(): string {
  return `coap-group-${randomBytes(12).toString('hex')}`;
}

/** One HTTP response as the bytes of an application/http message (RFC 9112 §10.2). */
export function httpMessageBytes(r: HttpResponseParts): Buffer {
  const head = [`HTTP/1.1 ${r.status} ${r.reason ?? REASONS[r.status] ?? 'Status'}`, ...r.headers.map(([k, v]) => `${k}: ${v}`), `Content-Length: ${r.body.length}`].join(CRLF);
  return Buffer.concat([Buffer.from(head + CRLF + CRLF, 'latin1'), r.body]);
}

/** A part: its delimiter line, its own header, then the message; the CRLF after it belongs to the next delimiter. */
export function partBytes(boundary: string, r: HttpResponseParts): Buffer {
  return Buffer.concat([Buffer.from(`--${boundary}${CRLF}Content-Type: application/http${CRLF}${CRLF}`, 'latin1'), httpMessageBytes(r), Buffer.from(CRLF, 'latin1')]);
}

export function closingBytes(boundary: string): Buffer {
  return Buffer.from(`--${boundary}--${CRLF}`, 'latin1');
}

export function multipartBody(boundary: string, parts: HttpResponseParts[]): Buffer {
  return Buffer.concat([...parts.map((p) => partBytes(boundary, p)), closingBytes(boundary)]);
}

/** An HTTP response read back from a part. Header names are lower case; a repeated header keeps every value. */
export interface ParsedHttpResponse {
  status: number;
  reason: string;
  headers: Record<string, string[]>;
  body: Buffer;
}

export class MultipartError extends Error {
  readonly code = 'ERR_MULTIPART';
}

/** The boundary parameter of a multipart/mixed Content-Type. */
export function boundaryOf(contentType: string | undefined): string {
  const m = /^\s*multipart\/mixed\s*;(.*)$/i.exec(contentType ?? '');
  const b = m && /(?:^|;)\s*boundary\s*=\s*("([^"]{1,70})"|[^\s;"]{1,70})/i.exec(m[1]);
  if (!b) throw new MultipartError('not multipart/mixed with a boundary');
  return b[2] ?? b[1];
}

/**
 * Reads a multipart/mixed body as it arrives (`push` every chunk): a part is complete when the next delimiter is
 * seen. `limit` bounds the bytes held for one part.
 */
export class MultipartReader {
  private buf: Buffer = Buffer.alloc(0);
  private started = false;
  done = false;
  private readonly delimiter: Buffer;
  private readonly first: Buffer;
  /** the part in progress was already returned (its Content-Length said it was complete) */
  private currentEmitted = false;

  constructor(
    boundary: string,
    private readonly limit = 1 << 20,
  ) {
    this.first = Buffer.from(`--${boundary}`, 'latin1');
    this.delimiter = Buffer.from(`${CRLF}--${boundary}`, 'latin1');
  }

  push(chunk: Buffer): ParsedHttpResponse[] {
    if (this.done) return [];
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: ParsedHttpResponse[] = [];
    if (!this.started) {
      // RFC 2046 §5.1.1: a preamble may come before the first delimiter.
      const at = this.buf.indexOf(this.first);
      if (at < 0 || this.buf.length < at + this.first.length + 2) return this.bounded(out);
      const lineEnd = this.buf.indexOf(CRLF, at);
      if (lineEnd < 0) return this.bounded(out);
      this.buf = this.buf.subarray(lineEnd + 2);
      this.started = true;
    }
    for (;;) {
      const at = this.buf.indexOf(this.delimiter);
      if (at < 0) break;
      const after = this.buf.subarray(at + this.delimiter.length);
      if (after.length < 2) break;
      if (after[0] === 0x2d && after[1] === 0x2d) {
        if (!this.currentEmitted) out.push(parsePart(this.buf.subarray(0, at)));
        this.done = true;
        this.buf = Buffer.alloc(0);
        break;
      }
      // the rest of the delimiter line (transport padding, RFC 2046 §5.1.1) must have arrived
      const lineEnd = after.indexOf(CRLF);
      if (lineEnd < 0) break;
      if (!this.currentEmitted) out.push(parsePart(this.buf.subarray(0, at)));
      this.currentEmitted = false;
      this.buf = after.subarray(lineEnd + 2);
    }
    // A streamed part is usable as soon as its Content-Length is satisfied, before the next delimiter comes.
    if (this.started && !this.done && !this.currentEmitted) {
      const whole = completeByLength(this.buf);
      if (whole) {
        out.push(parsePart(whole));
        this.currentEmitted = true;
      }
    }
    return this.bounded(out);
  }

  private bounded(out: ParsedHttpResponse[]): ParsedHttpResponse[] {
    if (this.buf.length > this.limit) throw new MultipartError('part too large');
    return out;
  }
}

/** The bytes of a part whose application/http message is complete by its Content-Length, or undefined. */
function completeByLength(buf: Buffer): Buffer | undefined {
  const split = buf.indexOf(CRLF + CRLF);
  if (split < 0) return undefined;
  const msg = buf.subarray(split + 4);
  const end = msg.indexOf(CRLF + CRLF);
  if (end < 0) return undefined;
  const len = /\r\ncontent-length:\s*(\d+)/i.exec(msg.subarray(0, end + 2).toString('latin1'));
  if (!len) return undefined;
  const total = split + 4 + end + 4 + Number(len[1]);
  return buf.length >= total ? buf.subarray(0, total) : undefined;
}

/** One body part: its own headers (application/http expected), then an HTTP response (RFC 9112 §10.2). */
export function parsePart(part: Buffer): ParsedHttpResponse {
  const split = part.indexOf(CRLF + CRLF);
  if (split < 0) {
    if (part.length === 0) throw new MultipartError('empty part');
    // no part headers at all: the part is the message (RFC 2046 §5.1.1 allows an empty header section)
    return parseHttpMessage(part);
  }
  const ownHeaders = part.subarray(0, split).toString('latin1');
  if (!/^content-type\s*:\s*application\/http\b/im.test(ownHeaders)) throw new MultipartError('part is not application/http');
  return parseHttpMessage(part.subarray(split + 4));
}

export function parseHttpMessage(msg: Buffer): ParsedHttpResponse {
  const split = msg.indexOf(CRLF + CRLF);
  if (split < 0) throw new MultipartError('HTTP message without a header end');
  const lines = msg.subarray(0, split).toString('latin1').split(CRLF);
  const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!status) throw new MultipartError('bad status line');
  const headers: Record<string, string[]> = {};
  for (const line of lines.slice(1)) {
    const c = line.indexOf(':');
    if (c <= 0) throw new MultipartError('bad header line');
    const k = line.slice(0, c).trim().toLowerCase();
    (headers[k] ??= []).push(line.slice(c + 1).trim());
  }
  let body = msg.subarray(split + 4);
  const len = headers['content-length']?.[0];
  if (len !== undefined) {
    const n = Number(len);
    if (!Number.isInteger(n) || n < 0 || n > body.length) throw new MultipartError('bad Content-Length');
    body = body.subarray(0, n);
  }
  return { status: Number(status[1]), reason: status[2] ?? '', headers, body: Buffer.from(body) };
}
