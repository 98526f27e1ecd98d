// One unicast request that a group flow sends as a follow-up: to the server directly, through a forward proxy
// (Proxy-Uri, RFC 7252 §5.10.2), or to a reverse proxy standing in for that server (its Uri-Host / Uri-Port,
// groupcomm-proxy-07 §6). Cancellable like a group exchange: cancel() settles it at once as cancelled, and a
// response that still arrives is dropped (the message layer's own timeout bounds the exchange).

import { CoapOption } from '../coap/message';
import { OPT, encodeUint } from '../coap/options';
import { CoapUri, formatUri, socketAddress } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { RemoteAddress } from '../transport/udp-transport';
import { GroupClient } from '../group/group-client';

export class UnicastCancelled extends Error {
  readonly code = 'ERR_CANCELLED';
}

export interface UnicastOptions {
  uri: CoapUri;
  method: number;
  options: CoapOption[];
  payload?: Buffer;
  confirmable: boolean;
  /** ms */
  timeout: number;
  /** a forward proxy: the request carries Proxy-Uri */
  proxy?: RemoteAddress;
  /** a reverse proxy standing in for the server: the request names the server in Uri-Host / Uri-Port */
  via?: RemoteAddress;
}

export interface UnicastExchange {
  response: Promise<IncomingResponse>;
  cancel(): void;
}

function pathOptions(uri: CoapUri): CoapOption[] {
  return [...uri.path.map((p) => ({ number: OPT.URI_PATH, value: Buffer.from(p) })), ...uri.query.map((q) => ({ number: OPT.URI_QUERY, value: Buffer.from(q) }))];
}

export function unicastRequest(ep: CoapEndpoint, o: UnicastOptions): UnicastExchange {
  const opts = { confirmable: o.confirmable, timeout: o.timeout };
  const sent = o.via
    ? ep.request({ code: o.method, payload: o.payload, options: [...o.options, { number: OPT.URI_HOST, value: Buffer.from(o.uri.host) }, { number: OPT.URI_PORT, value: encodeUint(o.uri.port) }, ...pathOptions(o.uri)] }, o.via, opts)
    : o.proxy
      ? ep.request({ code: o.method, payload: o.payload, options: [...o.options, { number: OPT.PROXY_URI, value: Buffer.from(formatUri(o.uri)) }] }, o.proxy, opts)
      : new GroupClient(ep).unicast({ method: o.method, uri: o.uri, options: o.options, payload: o.payload, ...opts });
  let cancel!: () => void;
  const cancelled = new Promise<never>((_, reject) => {
    cancel = () => reject(new UnicastCancelled('cancelled'));
  });
  cancelled.catch(() => undefined);
  sent.catch(() => undefined); // after a cancel nobody awaits it
  return { response: Promise.race([sent, cancelled]), cancel };
}

/** The server a unicast response stands for: the one named in the URI when a proxy answered for it. */
export function unicastOrigin(o: Pick<UnicastOptions, 'uri' | 'via' | 'proxy'>, remote: RemoteAddress): { address: string; port: number; via?: RemoteAddress } {
  return o.via || o.proxy ? { address: socketAddress(o.uri), port: o.uri.port, via: remote } : { address: remote.address, port: remote.port };
}
