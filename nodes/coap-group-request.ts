// coap-group-request: sends one request to a CoAP group (or one server) and emits one message per response,
// each with its origin server, then one completion message. Maps msg <-> GroupClient calls only.

import { randomBytes } from 'node:crypto';
import { CODES, parseCode } from '../src/coap/codes';
import { parseContentFormat } from '../src/coap/content-formats';
import { CoapOption } from '../src/coap/message';
import { OPT, encodeUint } from '../src/coap/options';
import { PayloadMode, encodePayload } from '../src/coap/payload';
import { CoapUri, formatUri, isGroupUri, originUri, parseUri, socketAddress } from '../src/coap/uri';
import { GroupClient, GroupResponse, Origin, ResponseStream } from '../src/group/group-client';
import { TargetStyle, requestUnicastViaProxy, requestViaProxy } from '../src/proxy/proxy-client';
import { defaultMulticastTimeout } from '../src/proxy/target';
import { RemoteAddress } from '../src/transport/udp-transport';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { UdpTransport } from '../src/transport/udp-transport';
import type { EndpointConfigNode } from './coap-endpoint';
import type { OscoreContextConfigNode } from './coap-oscore-context';
import { describeMessage, objectToOptions, responseToMsg } from './lib/msg-mapping';
import { DoneFn, Node, NodeAPI, NodeDef, NodeMessage, SendFn, closeThen, guarded } from './lib/red';

interface GroupRequestDef extends NodeDef {
  endpoint?: string;
  method?: string;
  url?: string;
  contentFormat?: string;
  timeout?: string | number;
  payloadMode?: PayloadMode;
  options?: string;
  confirmable?: boolean;
  /** proxy URI (coap://host:port); empty = direct multicast */
  proxy?: string;
  targetStyle?: TargetStyle;
  /** T' in seconds, sent in Multicast-Timeout; empty = T - 1 s (or left out for a 'reverse' target style) */
  multicastTimeout?: string | number;
  /** coap-oscore-context shared with the proxy: the client-proxy OSCORE layer (groupcomm-proxy-07 REQ2) */
  oscoreProxy?: string;
  /** coap-oscore-context shared with the servers: the end-to-end layer inside (oscore-capable-proxies-07 §2.3) */
  oscoreEndToEnd?: string;
}

interface Running {
  id: string;
  cancel(): void;
}

function proxyAddress(text: string): RemoteAddress {
  const u = parseUri(text.includes('://') ? text : `coap://${text}`);
  if (u.family === 0) throw new Error(`proxy ${text}: use an IP address`);
  return { address: socketAddress(u), port: u.port };
}

/** msg.via (or msg.coap.origin.via from a relayed response): a reverse proxy standing in for the server. */
function viaOf(msg: NodeMessage): RemoteAddress | undefined {
  const v = (msg.via ?? (msg.coap as { origin?: { via?: unknown } } | undefined)?.origin?.via) as { address?: string; port?: number } | string | undefined;
  if (!v) return undefined;
  if (typeof v === 'string') return proxyAddress(v);
  if (typeof v.address === 'string' && typeof v.port === 'number') return { address: v.address, port: v.port };
  return undefined;
}

module.exports = function (RED: NodeAPI) {
  function CoapGroupRequestNode(this: Node, def: GroupRequestDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const endpointNode = def.endpoint ? (RED.nodes.getNode(def.endpoint) as EndpointConfigNode | null) : null;
    const oscoreProxyNode = def.oscoreProxy ? (RED.nodes.getNode(def.oscoreProxy) as OscoreContextConfigNode | null) : null;
    const oscoreE2eNode = def.oscoreEndToEnd ? (RED.nodes.getNode(def.oscoreEndToEnd) as OscoreContextConfigNode | null) : null;
    let privateEndpoint: Promise<CoapEndpoint> | undefined;
    const running = new Map<string, Running>();
    let totalResponses = 0;
    let lastError: string | undefined;
    let closing = false;

    let configOptions: CoapOption[] = [];
    try {
      configOptions = def.options ? objectToOptions(JSON.parse(def.options)) : [];
    } catch (err) {
      node.error(`invalid options in configuration: ${(err as Error).message}`);
    }

    const getEndpoint = (): Promise<CoapEndpoint> => {
      if (endpointNode) return endpointNode.getEndpoint();
      // No endpoint configured: a private one on an ephemeral port, multicast pinned to loopback.
      privateEndpoint ??= UdpTransport.open({ bindAddress: '0.0.0.0', recvBufferSize: 1 << 20 }).then((t) => new CoapEndpoint(t));
      return privateEndpoint;
    };

    const showStatus = () => {
      if (lastError) node.status({ fill: 'red', shape: 'dot', text: lastError });
      else if (running.size > 0) node.status({ fill: 'blue', shape: 'ring', text: RED._('coap-group-request.status.waiting', { count: running.size, responses: totalResponses }) });
      else node.status({ fill: 'green', shape: 'dot', text: RED._('coap-group-request.status.done', { responses: totalResponses }) });
    };

    node.on(
      'input',
      guarded(node, async (msg: NodeMessage, send0: SendFn, done: DoneFn) => {
        // After close, exchanges still end (and call done) but nothing more is sent into the flow.
        const send: SendFn = (m) => {
          if (!closing) send0(m);
        };
        try {
          await handle(msg, send, done);
        } catch (err) {
          lastError = (err as Error).message;
          showStatus();
          throw err;
        }
      }),
    );

    const handle = async (msg: NodeMessage, send: SendFn, done: DoneFn): Promise<void> => {
        if (msg.cancel) {
          // Early stop of every exchange, or of the one named by msg.coap.exchange.
          const which = (msg.coap as { exchange?: string } | undefined)?.exchange;
          for (const r of [...running.values()]) if (!which || r.id === which) r.cancel();
          return done();
        }
        const url = typeof msg.url === 'string' && msg.url ? msg.url : def.url;
        if (!url) throw new Error(RED._('coap-group-request.errors.no-url'));
        const proxyText = typeof msg.proxy === 'string' ? msg.proxy : def.proxy;
        const proxy = proxyText ? proxyAddress(proxyText) : undefined;
        const uri = parseUri(url);
        // A reverse proxy's name for a group is not a multicast literal: it is a group when going through a proxy.
        const isGroup = isGroupUri(uri) || (proxy !== undefined && !msg.followUp && viaOf(msg) === undefined && (msg.targetStyle ?? def.targetStyle) === 'reverse');
        const method = parseCode((msg.method as string) || def.method || 'GET');
        const cfRaw = msg.contentFormat ?? (def.contentFormat || undefined);
        const contentFormat = cfRaw === undefined || cfRaw === '' ? undefined : parseContentFormat(cfRaw as string | number);
        const timeout = Number(msg.timeout ?? Number(def.timeout || 8) * 1000);
        if (!Number.isFinite(timeout) || timeout <= 0) throw new Error(`invalid timeout ${msg.timeout}`);
        const mode: PayloadMode = def.payloadMode || 'buffer';
        const options = [...configOptions, ...objectToOptions(msg.options)];
        if (contentFormat !== undefined && !options.some((o) => o.number === OPT.CONTENT_FORMAT)) options.push({ number: OPT.CONTENT_FORMAT, value: encodeUint(contentFormat) });
        const sendsBody = method === CODES.POST || method === CODES.PUT || method === CODES.FETCH || method === CODES.PATCH || method === CODES.IPATCH;
        const payload = sendsBody ? encodePayload(msg.payload, contentFormat) : undefined;
        const ep = await getEndpoint();
        const client = new GroupClient(ep);
        lastError = undefined;

        const emitResponse = (r: GroupResponse, exchangeId: string) => {
          totalResponses++;
          const m = responseToMsg(r, exchangeId, mode);
          const out: NodeMessage = { ...RED.util.cloneMessage(msg), payload: m.payload, topic: m.topic, coap: m.coap, parts: { id: exchangeId, type: 'array', index: r.index - 1 } };
          delete out.complete;
          if (m.decodeError) node.warn(m.decodeError);
          send(out);
        };
        const emitComplete = (exchangeId: string, responders: Origin[], responses: number, extra: Record<string, unknown>) => {
          const out: NodeMessage = { ...RED.util.cloneMessage(msg), complete: true, topic: url, responders: responders.map((o) => o.uri), coap: { exchange: exchangeId, responses, responders, ...extra }, parts: { id: exchangeId, type: 'array', count: responses } };
          delete out.payload;
          send(out);
        };

        if (!isGroup) {
          // A follow-up unicast request to one server: one response, then completion (same shape as a group).
          const id = randomBytes(8).toString('hex');
          running.set(id, { id, cancel: () => undefined });
          showStatus();
          try {
            const via = viaOf(msg);
            const res = via
              ? // reverse proxy case 1: to the proxy, naming the server in Uri-Host / Uri-Port (groupcomm-proxy-07 §6)
                await requestUnicastViaProxy(ep, { proxy: via, uri, targetStyle: 'reverse', method, options, payload, confirmable: def.confirmable !== false, timeout })
              : proxy
                ? // through a forward proxy: Proxy-Uri (RFC 7252 §5.10.2)
                  await requestUnicastViaProxy(ep, { proxy, uri, targetStyle: 'proxy-uri', method, options, payload, confirmable: def.confirmable !== false, timeout })
                : await client.unicast({ method, uri, options, payload, confirmable: def.confirmable !== false, timeout });
            const origin: Origin = { address: res.remote.address, port: res.remote.port, uri: originUri(res.remote.address, res.remote.port) };
            emitResponse({ message: res.message, remote: res.remote, origin, index: 1 }, id);
            emitComplete(id, [origin], 1, { token: res.message.token.toString('hex') });
            done();
          } catch (err) {
            lastError = (err as Error).message;
            done(err as Error);
          } finally {
            running.delete(id);
            showStatus();
          }
          return;
        }

        let ex: ResponseStream & { cancel(): void };
        if (proxy) {
          const mtRaw = msg.multicastTimeout ?? (def.multicastTimeout === '' || def.multicastTimeout === undefined ? undefined : def.multicastTimeout);
          const style: TargetStyle = (msg.targetStyle as TargetStyle) || def.targetStyle || 'proxy-uri';
          // GCP-07 §5.1.1: T' < T; by default one second less than the timeout (the core's one policy).
          const multicastTimeout = mtRaw !== undefined ? Number(mtRaw) : style === 'reverse' ? undefined : defaultMulticastTimeout(timeout);
          // T' = 0 means "relay nothing": only when asked for, never as a side effect of a short timeout.
          if (mtRaw === undefined && multicastTimeout !== undefined && multicastTimeout < 1) throw new Error('through a proxy the timeout must be more than 1 s (Multicast-Timeout T\' < T), or set Multicast-Timeout to 0 explicitly');
          if (multicastTimeout !== undefined && (!Number.isInteger(multicastTimeout) || multicastTimeout < 0)) throw new Error(`invalid Multicast-Timeout ${mtRaw}`);
          // OSCORE towards the proxy: the proxy removes that layer, identifies this client by it and checks its
          // allow-list (groupcomm-proxy-07 §5.2.1 step 2, oscore-capable-proxies-07).
          // End to end, inside it: one context for the request and for every server's responses (a group whose
          // servers each have their own Sender ID needs the core API's `responder`).
          const oscore =
            oscoreProxyNode || oscoreE2eNode
              ? { proxy: oscoreProxyNode?.getContext(), endToEnd: oscoreE2eNode ? { context: oscoreE2eNode.getContext() } : undefined }
              : undefined;
          ex = requestViaProxy(ep, { proxy, uri, method, options, payload, timeout, multicastTimeout, targetStyle: style, confirmable: def.confirmable !== false, oscore });
        } else ex = client.request({ method, uri, options, payload, timeout });
        const id = ex.token.toString('hex');
        running.set(id, { id, cancel: () => ex.cancel() });
        showStatus();
        ex.on('response', (r: GroupResponse) => {
          emitResponse(r, id);
          showStatus();
        });
        ex.on('error', (err: Error & { origin?: string }) => node.warn(`${err.origin ?? ''}: ${err.message}`));
        ex.on('end', (s) => {
          running.delete(id);
          emitComplete(id, s.responders, s.responses, { token: id, cancelled: s.cancelled, errors: s.errors, request: describeMessage({ type: 'NON', code: method, messageId: 0, token: s.token, options, payload: Buffer.alloc(0) }) });
          showStatus();
          done();
        });
    };

    node.on('close', (_removed, done) => {
      closing = true;
      for (const r of running.values()) r.cancel();
      running.clear();
      node.status({});
      const p = privateEndpoint;
      privateEndpoint = undefined;
      closeThen(p, done);
    });
  }
  RED.nodes.registerType('coap-group-request', CoapGroupRequestNode);
};
