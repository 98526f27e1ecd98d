// The HTTP front of the group proxy: the HTTP-to-CoAP cross-proxy of groupcomm-proxy-07 §9. A request to a Hosting
// HTTP URI (RFC 8075 §5) is mapped to CoAP (http-mapping.ts) and handed to the same stages as a CoAP request
// (GroupProxy.serveLeg: allow-list, target, limits, fan-out, §5.2.1); the responses come back through a ClientLeg
// and are kept, the latest per server, until T' (§9.6): then 204 when none came, 304 with one Group-ETag where the
// CoAP proxy answers 2.03 (§9.3), else one 200 multipart/mixed of application/http parts. Beyond the draft (§9.9
// leaves streaming open): with `Prefer: stream` (RFC 7240) each part is written as its response arrives. OSCORE
// (RFC 8613 §11) passes end to end: the OSCORE header and application/oscore body in, each server's protected
// response out as a 200 part; the front never holds a key. An HTTP client's source address is proved by the TCP handshake, so no Echo round trip is needed (RFC 9175 §2.4
// is about UDP sources).

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { IncomingMessage, Server, ServerResponse, createServer } from 'node:http';
import { AddressInfo } from 'node:net';
import { CODES } from '../coap/codes';
import { CoapOption, createMessage, sortOptions } from '../coap/message';
import { OPT, encodeUint, optionNumber } from '../coap/options';
import { IncomingRequest } from '../messaging/endpoint';
import { ProxyClient } from './admission';
import { ClientLeg } from './front';
import { GroupProxy } from './group-proxy';
import {
  HttpResponseParts, HttpStatusError, OSCORE_MEDIA_TYPE, REASONS, acceptOption, checkTarget, coapMethod, conditionalOptions, contentFormatOf, groupEtagOptions, multicastTimeoutOption, oscoreOption, targetFromHostingUri,
  toHttpResponse,
} from './http-mapping';
import { closingBytes, multipartBody, newBoundary, partBytes } from './multipart';

export interface HttpFrontOptions {
  /** path of the Hosting HTTP URIs: `<basePath>?target_uri=coap://...` or `<basePath>/coap://...` (default "/hc") */
  basePath?: string;
  /** largest request body in bytes (default 8192; CoAP payloads are far smaller): more gets 413 */
  maxBodyBytes?: number;
  /** most responses kept for one request (default 1000): more are dropped */
  maxParts?: number;
  /** HTTP authentication where no server in front does it: false gets 401 (Node-RED does it with httpNodeAuth) */
  authenticate?: (req: IncomingMessage) => boolean;
}

export interface HttpFrontCounters {
  requests: number;
  refused: number;
  batches: number;
  streamed: number;
  noContent: number;
  notModified: number;
  droppedParts: number;
}

/** `Prefer: stream` (RFC 7240 §2 preference syntax) asks for a streamed batch. */
export const STREAM_PREFERENCE = 'stream';

function wantsStream(prefer: string | string[] | undefined): boolean {
  const v = Array.isArray(prefer) ? prefer.join(',') : prefer ?? '';
  return v.split(',').some((p) => p.split(';')[0].trim().toLowerCase() === STREAM_PREFERENCE);
}

/** An IPv4-mapped IPv6 address (a dual-stack server) names the IPv4 client, as the allow-list writes it. */
function clientAddress(a: string | undefined): string {
  return (a ?? '').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');
}

export class HttpFront extends EventEmitter {
  readonly counters: HttpFrontCounters = { requests: 0, refused: 0, batches: 0, streamed: 0, noContent: 0, notModified: 0, droppedParts: 0 };
  private readonly basePath: string;
  private readonly maxBody: number;
  private readonly maxParts: number;
  private readonly legs = new Set<ClientLeg>();

  constructor(
    readonly proxy: GroupProxy,
    private readonly o: HttpFrontOptions = {},
  ) {
    super();
    this.basePath = (o.basePath ?? '/hc').replace(/\/+$/, '');
    this.maxBody = o.maxBodyBytes ?? 8192;
    this.maxParts = o.maxParts ?? 1000;
  }

  /** A node:http request listener; also an Express / Node-RED httpNode handler. */
  readonly handler = (req: IncomingMessage, res: ServerResponse): void => {
    try {
      this.handle(req, res);
    } catch (err) {
      this.refuse(res, err);
    }
  };

  /** HTTP exchanges waiting for T' */
  get pending(): number {
    return this.legs.size;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    if (this.o.authenticate && !this.o.authenticate(req)) {
      this.counters.refused++;
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="coap-group-proxy"', 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('authentication required');
      req.resume();
      return;
    }
    const client: ProxyClient = { address: clientAddress(req.socket.remoteAddress), port: req.socket.remotePort ?? 0 };
    // Mounted in an Express app (Node-RED's httpNode, under httpNodeRoot): the mount path is already stripped from
    // req.url and named in req.baseUrl; on a plain node:http server req.url still starts with basePath.
    const mounted = typeof (req as IncomingMessage & { baseUrl?: unknown }).baseUrl === 'string';
    const url = req.url ?? '/';
    // groupcomm-proxy-07 §5.2.1: a client the allow-list does not admit learns nothing about targets.
    if (!this.proxy.allowsClient(client)) throw new HttpStatusError(403, 'not allowed', 'ERR_HTTP_NOT_ALLOWED');
    // RFC 8075 §5 and §6, RFC 7252 §10.2: the target, method, media types and conditions, before the body is read.
    const target = checkTarget(targetFromHostingUri(url, mounted ? '' : this.basePath));
    if (Buffer.byteLength(target) > 1034) throw new HttpStatusError(414, 'target URI too long', 'ERR_HTTP_TARGET_LONG');
    const code = coapMethod(req.method);
    const oscore = oscoreOption(req.headers.oscore, req.method);
    const contentType = req.headers['content-type'];
    const cf = contentFormatOf(contentType, req.headers['content-encoding']);
    const oscoreBody = contentType?.split(';')[0].trim().toLowerCase() === OSCORE_MEDIA_TYPE;
    // RFC 8613 §11.1: the OSCORE header and an application/oscore body come together
    if (oscore ? contentType !== undefined && !oscoreBody : oscoreBody) throw new HttpStatusError(400, 'OSCORE header and application/oscore go together', 'ERR_HTTP_OSCORE');
    const options: CoapOption[] = [{ number: OPT.PROXY_URI, value: Buffer.from(target, 'utf8') }];
    const mt = multicastTimeoutOption(req.headers['multicast-timeout']);
    if (mt) options.push(mt);
    options.push(...groupEtagOptions(req.headers['group-etag']));
    if (oscore) options.push(oscore);
    else {
      // Accept and the conditions are class E under OSCORE (RFC 8613 §4.1): inside the client's ciphertext, not here
      const accept = acceptOption(req.headers.accept);
      if (accept) options.push(accept);
      options.push(...conditionalOptions(req.headers, code));
    }
    if (cf !== undefined) options.push({ number: OPT.CONTENT_FORMAT, value: encodeUint(cf) });
    const declared = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
    // RFC 9110 §15.5.14: a body larger than the proxy takes is a 413, and nothing goes to the group.
    if (declared !== undefined && declared > this.maxBody) throw new HttpStatusError(413, 'body too large', 'ERR_HTTP_BODY');
    const stream = wantsStream(req.headers.prefer);
    readBody(req, this.maxBody).then(
      (payload) => {
        if (payload === undefined) return this.refuse(res, new HttpStatusError(413, 'body too large', 'ERR_HTTP_BODY'));
        if (res.destroyed) return;
        const message = createMessage({ type: 'CON', code, token: randomBytes(8), messageId: 0, options: sortOptions(options), payload });
        const request: IncomingRequest = { message, remote: { address: client.address, port: client.port }, multicast: false };
        const leg = this.leg(client, message.token, res, stream);
        this.legs.add(leg);
        res.on('close', () => {
          // the HTTP client went away before T': the exchange ends and its slot goes back
          if (this.legs.has(leg)) this.proxy.cancelLeg(leg, 'HTTP client closed the connection');
          this.legs.delete(leg);
        });
        this.proxy.serveLeg(request, leg);
      },
      () => this.refuse(res, new HttpStatusError(400, 'request body not received', 'ERR_HTTP_BODY')),
    );
  }

  /** A fixed status and reason, never client bytes. */
  private refuse(res: ServerResponse, err: unknown): void {
    this.counters.refused++;
    const e = err instanceof HttpStatusError ? err : new HttpStatusError(500, 'internal error', 'ERR_HTTP_INTERNAL');
    if (!(err instanceof HttpStatusError)) this.emit('handler-error', err);
    if (res.headersSent || res.destroyed) return;
    res.writeHead(e.status, { 'Content-Type': 'text/plain; charset=utf-8', ...(e.status === 413 ? { Connection: 'close' } : {}) });
    res.end(e.reason);
  }

  private leg(client: ProxyClient, token: Buffer, res: ServerResponse, stream: boolean): ClientLeg {
    const front = this;
    /** the latest response per server (key: the Reply-From value), §9.6 */
    const stored = new Map<string, HttpResponseParts>();
    let notModified: HttpResponseParts | undefined;
    let finished = false;
    let boundary: string | undefined;
    let anonymous = 0;
    const send = (r: HttpResponseParts) => {
      finished = true;
      if (res.destroyed) return;
      const headers: [string, string][] = r.status === 304 || r.status === 204 ? r.headers : [...r.headers, ['Content-Length', String(r.body.length)]];
      res.writeHead(r.status, r.reason ?? REASONS[r.status], headers.flat());
      res.end(r.status === 304 || r.status === 204 ? undefined : r.body);
    };
    const startStream = () => {
      boundary = newBoundary();
      front.counters.streamed++;
      res.writeHead(200, { 'Content-Type': `multipart/mixed; boundary=${boundary}`, 'Preference-Applied': STREAM_PREFERENCE, 'Cache-Control': 'no-store' });
      res.flushHeaders();
    };
    const leg: ClientLeg = {
      client,
      token,
      layers: [],
      // the TCP handshake proved the address; the allow-list still decides (§5.2.1 step 2)
      identified: true,
      answer(parts) {
        // the one answer to the request itself: a refusal, or the response of a unicast forward
        if (finished) return;
        front.legs.delete(leg);
        send(toHttpResponse(parts));
      },
      accept() {
        // nothing to send before T' (§9.5)
      },
      protect: (parts) => parts,
      relay(parts) {
        if (finished || res.destroyed) return false;
        const r = toHttpResponse(parts);
        // §9.3: where a CoAP proxy answers 2.03 with Group-ETag, the HTTP proxy answers 304 with that one Group-ETag.
        if (parts.code === CODES.VALID && (parts.options ?? []).some((o) => o.number === optionNumber('Group-ETag')) && boundary === undefined) {
          notModified = { status: 304, headers: r.headers.filter(([k]) => k === 'Group-ETag'), body: Buffer.alloc(0) };
          return true;
        }
        const rf = (parts.options ?? []).find((o) => o.number === optionNumber('Reply-From'));
        const key = rf ? rf.value.toString('hex') : `#${anonymous++}`;
        if (!stored.has(key) && stored.size >= front.maxParts) {
          front.counters.droppedParts++;
          return false;
        }
        // §9.6: only the latest response of each server is kept (a stream has written the earlier one already)
        stored.delete(key);
        stored.set(key, r);
        if (stream) {
          if (boundary === undefined) startStream();
          res.write(partBytes(boundary!, r));
        }
        return true;
      },
      close() {
        // T' has passed (or the exchange ended otherwise): §9.6
        front.legs.delete(leg);
        if (finished) return;
        if (boundary !== undefined) {
          finished = true;
          if (!res.destroyed) res.end(closingBytes(boundary));
          return;
        }
        if (notModified && stored.size === 0) {
          front.counters.notModified++;
          return send(notModified);
        }
        if (stored.size === 0) {
          // §9.5 (T' = 0, right after forwarding) and §9.6 (nothing came before T')
          front.counters.noContent++;
          return send({ status: 204, headers: [], body: Buffer.alloc(0) });
        }
        front.counters.batches++;
        const b = newBoundary();
        send({ status: 200, headers: [['Content-Type', `multipart/mixed; boundary=${b}`]], body: multipartBody(b, [...stored.values()]) });
      },
    };
    return leg;
  }

  /** Ends every HTTP exchange still waiting (each gets what it has so far). */
  close(): void {
    for (const leg of [...this.legs]) this.proxy.cancelLeg(leg, 'HTTP front closed');
    this.legs.clear();
  }
}

/** The request body, or undefined when it exceeds `max` (the rest is then not read). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        resolve(undefined);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => !over && resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export interface HttpFrontServer {
  server: Server;
  front: HttpFront;
  address: AddressInfo;
  close(): Promise<void>;
}

/**
 * The HTTP front on its own node:http server (default 127.0.0.1, port 0 = any free port). Connections are capped
 * (`maxConnections`, default 1024) and a request's head and body must arrive within 10 s, so idle or slow clients
 * cannot hold sockets open; a response may still wait as long as T'.
 */
export async function startHttpFront(proxy: GroupProxy, opts: HttpFrontOptions & { port?: number; host?: string; maxConnections?: number } = {}): Promise<HttpFrontServer> {
  const front = new HttpFront(proxy, opts);
  const server = createServer({ requestTimeout: 10_000, headersTimeout: 10_000 }, front.handler);
  server.maxConnections = opts.maxConnections ?? 1024;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => front.emit('handler-error', err));
  return {
    server,
    front,
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        front.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
