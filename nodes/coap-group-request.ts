// coap-group-request: sends one request to a CoAP group (or one server) and emits one message per response,
// each with its origin server, then one completion message. Maps msg <-> GroupClient calls only.

import { randomBytes } from 'node:crypto';
import { CODES, parseCode } from '../src/coap/codes';
import { parseContentFormat } from '../src/coap/content-formats';
import { CoapOption } from '../src/coap/message';
import { OPT, encodeUint } from '../src/coap/options';
import { PayloadMode, encodePayload } from '../src/coap/payload';
import { CoapUri, formatUri, isGroupUri, originUri, parseUri, socketAddress } from '../src/coap/uri';
import { GroupClient, GroupResponse, Origin, ResponseLimitEvent, ResponseLimits, ResponseStream, responseLimits } from '../src/group/group-client';
import { TargetStyle, requestViaProxy } from '../src/proxy/proxy-client';
import { GroupEtagStore } from '../src/proxy/group-etag-store';
import { defaultMulticastTimeout } from '../src/proxy/target';
import { RemoteAddress } from '../src/transport/udp-transport';
import { CoapEndpoint } from '../src/messaging/endpoint';
import type { EndpointConfigNode } from './coap-endpoint';
import type { OscoreContextConfigNode } from './coap-oscore-context';
import type { GroupOscoreContextConfigNode } from './coap-group-oscore-context';
import { UnicastCancelled, unicastOrigin, unicastRequest } from '../src/node-support/unicast';
import { parseDuration } from '../src/node-support/units';
import { acquireDefaultEndpoint, releaseDefaultEndpoint } from './lib/default-endpoint';
import { describeMessage, objectToOptions, responseToMsg } from './lib/msg-mapping';
import { GroupView } from './lib/group-view';
import { DoneFn, Node, NodeAPI, NodeDef, NodeMessage, SendFn, guarded, shortText } from './lib/red';

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
  /** coap-group-oscore-context: Group OSCORE end to end for the whole group (RFC 10021 group mode) */
  groupOscore?: string;
  /** with groupOscore: send safe requests as Deterministic Requests (draft-ietf-core-cacheable-oscore-02), cacheable by a proxy */
  deterministic?: boolean;
  /** responses kept per group exchange (ResponseLimits.maxResponses); empty = the default (1000) */
  maxResponses?: string | number;
  /** through a proxy: keep the responses with the proxy's Group-ETag and revalidate them with it (groupcomm-proxy-07 §7.3) */
  groupEtag?: boolean;
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

function register(RED: NodeAPI): void {
  function CoapGroupRequestNode(this: Node, def: GroupRequestDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const endpointNode = def.endpoint ? (RED.nodes.getNode(def.endpoint) as EndpointConfigNode | null) : null;
    const oscoreProxyNode = def.oscoreProxy ? (RED.nodes.getNode(def.oscoreProxy) as OscoreContextConfigNode | null) : null;
    const oscoreE2eNode = def.oscoreEndToEnd ? (RED.nodes.getNode(def.oscoreEndToEnd) as OscoreContextConfigNode | null) : null;
    const groupOscoreNode = def.groupOscore ? (RED.nodes.getNode(def.groupOscore) as GroupOscoreContextConfigNode | null) : null;
    // A context this node names that does not exist (a flow deployed or imported without it) must not
    // turn into no protection: the node refuses to send anything, says so at deploy and ends every input with the error.
    const missingContext = (
      [
        ['groupOscore', groupOscoreNode],
        ['oscoreEndToEnd', oscoreE2eNode],
        ['oscoreProxy', oscoreProxyNode],
      ] as const
    ).find(([field, found]) => def[field] && !found)?.[0];
    const missingText = missingContext && RED._('coap-group-request.errors.context-missing', { context: RED._(`coap-group-request.label.${missingContext}`) });
    if (missingText) node.error(missingText);
    // RFC 10021 §8.1: one group-mode request for every member; each response verified with its sender's credential.
    // draft-ietf-core-cacheable-oscore-02 §3.4.2: as the group's Deterministic Client, so every member's identical
    // GET gives identical bytes and a proxy's cache serves it (groupcomm-proxy-07 §7.4); only safe methods.
    const groupOscore = () => {
      if (!groupOscoreNode) return undefined;
      const g = groupOscoreNode.getContext();
      return { context: def.deterministic ? g.deterministicRequests() : g.groupRequests() };
    };
    // Deterministic Requests are a way of protecting with Group OSCORE: without a group context the checkbox would
    // change nothing, so say so at deploy (the editor flags it too) instead of sending plain requests silently.
    const deterministicIgnored = def.deterministic === true && !groupOscoreNode;
    if (deterministicIgnored) node.warn(RED._('coap-group-request.warn.deterministic-ignored'));
    // groupcomm-proxy-07 §7.3, §7.4: the response sets this node keeps for Group-ETag revalidation (bounded: 32
    // requests, 256 responses each, 1 MiB in all; least recently used first out).
    const groupEtagStore = def.groupEtag ? new GroupEtagStore() : undefined;
    let usesDefault = false;
    const running = new Map<string, Running>();
    let totalResponses = 0;
    let lastError: string | undefined;
    let closing = false;
    const view = new GroupView(RED, node, 'request');

    // What one exchange keeps: the configured maxResponses, the rest of ResponseLimits at their defaults.
    let limits: Partial<ResponseLimits> | undefined;
    try {
      if (def.maxResponses !== undefined && def.maxResponses !== '') limits = responseLimits({ maxResponses: Number(def.maxResponses) });
    } catch (err) {
      node.error((err as Error).message);
    }

    let configOptions: CoapOption[] = [];
    try {
      configOptions = def.options ? objectToOptions(JSON.parse(def.options)) : [];
    } catch (err) {
      node.error(`invalid options in configuration: ${(err as Error).message}`);
    }

    // The endpoint owns its socket and its users (register/deregister); without one, the shared default endpoint.
    endpointNode?.register(node);
    const getEndpoint = (): Promise<CoapEndpoint> => {
      if (def.endpoint && !endpointNode) return Promise.reject(new Error(RED._('coap-endpoint.errors.missing')));
      if (endpointNode) return endpointNode.getEndpoint();
      usesDefault = true;
      return acquireDefaultEndpoint(RED, node);
    };

    // Short texts (they sit under the node): what the last exchange gave, not a running total.
    let lastOutcome: { responses: number; proxyError?: string; sent?: boolean; dropped?: number; revalidated?: boolean } | undefined;
    const showStatus = () => {
      if (missingText) node.status({ fill: 'red', shape: 'ring', text: RED._('coap-group-request.status.context-missing') });
      else if (lastError) node.status({ fill: 'red', shape: 'dot', text: shortText(lastError) });
      else if (running.size > 0) node.status({ fill: 'blue', shape: 'ring', text: RED._('coap-group-request.status.waiting', { responses: totalResponses }) });
      else if (!lastOutcome) node.status(deterministicIgnored ? { fill: 'yellow', shape: 'ring', text: RED._('coap-group-request.status.deterministic-ignored') } : {});
      else if (lastOutcome.proxyError) node.status({ fill: 'red', shape: 'ring', text: RED._('coap-group-request.status.proxy-error', { code: lastOutcome.proxyError }) });
      else if (lastOutcome.sent) node.status({ fill: 'green', shape: 'ring', text: RED._('coap-group-request.status.sent') });
      else if (lastOutcome.dropped) node.status({ fill: 'yellow', shape: 'dot', text: RED._('coap-group-request.status.limited', { responses: lastOutcome.responses, dropped: lastOutcome.dropped }) });
      else if (lastOutcome.responses === 0) node.status({ fill: 'yellow', shape: 'ring', text: RED._('coap-group-request.status.no-answer') });
      else if (lastOutcome.revalidated) node.status({ fill: 'green', shape: 'dot', text: RED._('coap-group-request.status.revalidated', { responses: lastOutcome.responses }) });
      else node.status({ fill: 'green', shape: 'dot', text: RED._('coap-group-request.status.done', { responses: lastOutcome.responses }) });
    };

    if (deterministicIgnored || missingText) showStatus();

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
        if (missingText) throw new Error(missingText);
        if (msg.url !== undefined && typeof msg.url !== 'string') throw new Error(RED._('coap-group-request.errors.url-type', { type: typeof msg.url }));
        const url = msg.url ? (msg.url as string) : def.url;
        if (!url) throw new Error(RED._('coap-group-request.errors.no-url'));
        const proxyText = typeof msg.proxy === 'string' ? msg.proxy : def.proxy;
        const proxy = proxyText ? proxyAddress(proxyText) : undefined;
        const uri = parseUri(url);
        // A reverse proxy's name for a group is not a multicast literal: it is a group when going through a proxy.
        const isGroup = isGroupUri(uri) || (proxy !== undefined && !msg.followUp && viaOf(msg) === undefined && (msg.targetStyle ?? def.targetStyle) === 'reverse');
        const method = parseCode((msg.method as string) || def.method || 'GET');
        const cfRaw = msg.contentFormat ?? (def.contentFormat || undefined);
        const contentFormat = cfRaw === undefined || cfRaw === '' ? undefined : parseContentFormat(cfRaw as string | number);
        // One unit everywhere: seconds, as in the dialog ("500ms" names its unit).
        const timeout = msg.timeout !== undefined ? parseDuration(msg.timeout, 'msg.timeout') : parseDuration(def.timeout === undefined || def.timeout === '' ? 8 : def.timeout, RED._('coap-group-request.label.timeout'));
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
          view.response(exchangeId, r.origin.uri, m.coap.code);
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
          const via = viaOf(msg);
          const ux = unicastRequest(ep, { uri, method, options, payload, confirmable: def.confirmable !== false, timeout, via, proxy });
          running.set(id, { id, cancel: () => ux.cancel() });
          view.started(id, url);
          showStatus();
          try {
            const res = await ux.response;
            // Through a reverse proxy standing in for the server (or a forward proxy), the origin is the server the
            // request named, reached via the proxy; msg.topic names that server (groupcomm-proxy-07 §6).
            const o = unicastOrigin({ uri, via, proxy }, res.remote);
            const origin: Origin = { address: o.address, port: o.port, uri: originUri(o.address, o.port), ...(o.via ? { via: { ...o.via, uri: originUri(o.via.address, o.via.port) } } : {}) };
            emitResponse({ message: res.message, remote: res.remote, origin, index: 1 }, id);
            emitComplete(id, [origin], 1, { token: res.message.token.toString('hex'), outcome: 'answered' });
            lastOutcome = { responses: 1 };
            done();
          } catch (err) {
            if (err instanceof UnicastCancelled) {
              // msg.cancel ends a follow-up like a group exchange: a completion without responses
              emitComplete(id, [], 0, { outcome: 'cancelled', cancelled: true, errors: [] });
              lastOutcome = { responses: 0, sent: true };
              done();
            } else {
              lastError = (err as Error).message;
              done(err as Error);
            }
          } finally {
            view.ended(id);
            running.delete(id);
            showStatus();
          }
          return;
        }

        let ex: ResponseStream & { cancel(): void };
        let relayNothing = false;
        if (proxy) {
          const mtRaw = msg.multicastTimeout ?? (def.multicastTimeout === '' || def.multicastTimeout === undefined ? undefined : def.multicastTimeout);
          const style: TargetStyle = (msg.targetStyle as TargetStyle) || def.targetStyle || 'proxy-uri';
          // GCP-07 §5.1.1: T' < T; by default one second less than the timeout (the core's one policy).
          const multicastTimeout = mtRaw !== undefined ? Number(mtRaw) : style === 'reverse' ? undefined : defaultMulticastTimeout(timeout);
          // T' = 0 means "relay nothing": only when asked for, never as a side effect of a short timeout.
          if (mtRaw === undefined && multicastTimeout !== undefined && multicastTimeout < 1) throw new Error('through a proxy the timeout must be more than 1 s (Multicast-Timeout T\' < T), or set Multicast-Timeout to 0 explicitly');
          if (multicastTimeout !== undefined && (!Number.isInteger(multicastTimeout) || multicastTimeout < 0)) throw new Error(`invalid Multicast-Timeout ${mtRaw}`);
          relayNothing = multicastTimeout === 0;
          // OSCORE towards the proxy: the proxy removes that layer, identifies this client by it and checks its
          // allow-list (groupcomm-proxy-07 §5.2.1 step 2, oscore-capable-proxies-07).
          // End to end, inside it: one context for the request and for every server's responses (a group whose
          // servers each have their own Sender ID needs the core API's `responder`).
          const endToEnd = groupOscore() ?? (oscoreE2eNode ? { context: oscoreE2eNode.getContext() } : undefined);
          const oscore = oscoreProxyNode || endToEnd ? { proxy: oscoreProxyNode?.getContext(), endToEnd } : undefined;
          // Group-ETag revalidation applies to GET and FETCH that are relayed, without Observe (groupcomm-proxy-07 §7.3).
          const revalidates = groupEtagStore && (method === CODES.GET || method === CODES.FETCH) && multicastTimeout !== 0 && !options.some((o) => o.number === OPT.OBSERVE);
          ex = requestViaProxy(ep, { proxy, uri, method, options, payload, timeout, multicastTimeout, targetStyle: style, confirmable: def.confirmable !== false, oscore, limits, groupEtag: revalidates ? groupEtagStore : undefined });
        } else ex = client.request({ method, uri, options, payload, timeout, oscore: groupOscore(), limits });
        const id = ex.token.toString('hex');
        running.set(id, { id, cancel: () => ex.cancel() });
        view.started(id, url);
        showStatus();
        ex.on('response', (r: GroupResponse) => {
          emitResponse(r, id);
          showStatus();
        });
        ex.on('error', (err: Error & { origin?: string }) => node.warn(`${err.origin ?? ''}: ${err.message}`));
        // a cap of ResponseLimits reached: said once per cap; the count is in the completion and the status
        ex.on('limit', (e: ResponseLimitEvent) => node.warn(RED._('coap-group-request.warn.limit', { url, kind: e.kind, limit: e.limit })));
        ex.on('end', (s) => {
          running.delete(id);
          // Silence is an outcome too: say it in the completion and the status (error responses to a group request
          // are suppressed by the servers, RFC 10020 §3.1.2, so "all rejected" also ends here).
          // a refused 2.03 (Group-ETag, groupcomm-proxy-07 §7.3) is an error of the proxy's too
          const proxyError = s.errors.find((e: { code?: string }) => e.code && (/^[45]\./.test(e.code) || e.code === 'group-etag'))?.code;
          // T' = 0 asks the proxy to relay nothing (groupcomm-proxy-07 §4): silence is what was asked for.
          const outcome = proxyError ? 'proxy error' : s.responses === 0 ? (s.cancelled ? 'cancelled' : relayNothing ? 'sent' : 'no answer') : 'answered';
          // the proxy's 2.03 validated the set this node kept: every response came from that store
          const revalidated = s.responses > 0 && ex.responses.every((r) => (r as { revalidated?: boolean }).revalidated === true);
          lastOutcome = { responses: s.responses, proxyError, sent: outcome === 'sent' || outcome === 'cancelled', dropped: s.limited?.dropped, revalidated };
          if (outcome === 'no answer') node.warn(RED._('coap-group-request.warn.no-answer', { url, seconds: timeout / 1000 }));
          view.ended(id, s);
          emitComplete(id, s.responders, s.responses, { token: id, outcome, cancelled: s.cancelled, errors: s.errors, ...(s.limited ? { limited: s.limited } : {}), ...(revalidated ? { revalidated: true } : {}), request: describeMessage({ type: 'NON', code: method, messageId: 0, token: s.token, options, payload: Buffer.alloc(0) }) });
          showStatus();
          done();
        });
    };

    node.on('close', (removed, done) => {
      closing = true;
      view.close(removed);
      for (const r of running.values()) r.cancel();
      running.clear();
      groupEtagStore?.clear();
      node.status({});
      if (endpointNode) endpointNode.deregister(node, done, removed);
      else if (usesDefault) releaseDefaultEndpoint(node, done);
      else done();
    });
  }
  RED.nodes.registerType('coap-group-request', CoapGroupRequestNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
