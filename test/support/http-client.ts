// A plain HTTP client for the tests of the HTTP front: one connection per request (no keep-alive pool left open),
// with the times at which the response head and the first body byte arrived.

import http from 'node:http';

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  /** ms from sending to the response head, and to the first body byte (undefined when the body was empty) */
  headAt: number;
  firstByteAt?: number;
  /** each body chunk with the ms at which it came */
  chunks: { at: number; data: Buffer }[];
}

export function httpRequest(url: string, o: { method?: string; headers?: Record<string, string | string[]>; body?: Buffer | string } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(url, { method: o.method ?? 'GET', headers: { ...o.headers, Connection: 'close' }, agent: false }, (res) => {
      const headAt = performance.now() - t0;
      const chunks: { at: number; data: Buffer }[] = [];
      res.on('data', (d: Buffer) => chunks.push({ at: performance.now() - t0, data: d }));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks.map((c) => c.data)), headAt, firstByteAt: chunks[0]?.at, chunks }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}
