// One unicast request that a group flow sends as a follow-up: to the server directly, through a forward proxy
// (Proxy-Uri, RFC 7252 §5.10.2), or to a reverse proxy standing in for that server (its Uri-Host / Uri-Port,
// groupcomm-proxy-07 §6), both named by the proxy's one target encoder and answering its Echo (RFC 9175 §2.4,
// proxy-client.ts requestUnicastViaProxy). Cancellable like a group exchange: cancel() settles it at once as cancelled, and a
// response that still arrives is dropped (the message layer's own timeout bounds the exchange).

import { CoapOption } from '../coap/message';
import { CoapUri, socketAddress } from '../coap/uri';
import { CoapEndpoint, IncomingResponse } from '../messaging/endpoint';
import { RemoteAddress } from '../transport/udp-transport';
import { GroupClient } from '../group/group-client';
import { requestUnicastViaProxy } from '../proxy/proxy-client';

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

export function unicastRequest(ep: CoapEndpoint, o: UnicastOptions): UnicastExchange {
  const opts = { confirmable: o.confirmable, timeout: o.timeout };
  const common = { uri: o.uri, method: o.method, options: o.options, payload: o.payload, ...opts };
  const sent = o.via
    ? requestUnicastViaProxy(ep, { proxy: o.via, targetStyle: 'reverse', ...common })
    : o.proxy
      ? requestUnicastViaProxy(ep, { proxy: o.proxy, targetStyle: 'proxy-uri', ...common })
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
