// coap-group-proxy: a forward and/or reverse proxy to CoAP groups (GroupProxy) on a listening coap-endpoint;
// config <-> GroupProxyOptions, proxy events -> an optional output, active exchanges -> status.

import { parseUri, socketAddress } from '../src/coap/uri';
import { GroupProxy, ProxyEvent, ReplyFromFormat } from '../src/proxy/group-proxy';
import { IncomingRequest } from '../src/messaging/endpoint';
import { OPT } from '../src/coap/options';
import { proxyRelatedKind } from '../src/oscore/nested';
import { parseAllowList, parseMembers, parseReverse, ReverseRow } from '../src/node-support/proxy-config';
import { acquireDefaultEndpoint, releaseDefaultEndpoint } from './lib/default-endpoint';
import { HttpFront, HttpFrontServer, startHttpFront } from '../src/proxy/http-front';
import type { EndpointConfigNode } from './coap-endpoint';
import type { OscoreContextConfigNode } from './coap-oscore-context';
import { ContextRegistry, SignatureChecker } from '../src/oscore';
import type { GroupOscoreContextConfigNode } from './coap-group-oscore-context';
import { GroupView } from './lib/group-view';
import { Node, NodeAPI, NodeDef, shortText } from './lib/red';

interface ProxyDef extends NodeDef {
  listen?: string;
  upstream?: string;
  forward?: boolean;
  groupProxying?: boolean;
  reverse?: ReverseRow[];
  allow?: string;
  /** UNSAFE: skip the Echo check of address-identified clients (RFC 9175 §2.4) */
  unsafeTrustAddresses?: boolean;
  nextHop?: string;
  rttPrevious?: string | number;
  rttNext?: string | number;
  replyFrom?: ReplyFromFormat;
  maxPendingPerClient?: string | number;
  maxResponsesPerSecond?: string | number;
  maxMulticastTimeout?: string | number;
  events?: boolean;
  /** ids of coap-oscore-context nodes shared with clients */
  oscoreContexts?: string[];
  oscoreContext1?: string;
  oscoreContext2?: string;
  oscoreContext3?: string;
  /** answer clients without an OSCORE layer for the proxy with 4.01 */
  oscoreRequired?: boolean;
  /** coap-group-oscore-context whose group this proxy checks signatures for (RFC 10021 §7.5) */
  signatureGroup?: string;
  cache?: boolean;
  /** group authority -> member addresses, one "group = member, member" per line */
  members?: string;
  // --- HTTP front (groupcomm-proxy-07 §9), issue 11 ---
  /** off, on Node-RED's own HTTP server (httpNode, so httpNodeAuth applies), or on its own port */
  httpMode?: 'off' | 'node-red' | 'port';
  /** path of the Hosting HTTP URIs (default /hc) */
  httpPath?: string;
  httpPort?: string | number;
  httpHost?: string;
  httpMaxBody?: string | number;
}

/** The express app of Node-RED's httpNode, as far as the HTTP front uses it (express 4 `_router`, 5 `router`). */
interface HttpNodeApp {
  use(path: string, fn: (req: unknown, res: unknown, next: () => void) => void): void;
  _router?: { stack: { handle?: unknown }[] };
  router?: { stack: { handle?: unknown }[] };
}

/** Serve `front` under `path` on Node-RED's httpNode app; returns the function that removes the route again. */
export function mountOnHttpNode(app: HttpNodeApp, path: string, front: HttpFront): () => void {
  const route = (req: unknown, res: unknown) => front.handler(req as never, res as never);
  app.use(path, route);
  return () => {
    const stack = (app._router ?? app.router)?.stack;
    if (!stack) return;
    for (let i = stack.length - 1; i >= 0; i--) if (stack[i].handle === route) stack.splice(i, 1);
  };
}

function register(RED: NodeAPI): void {
  function CoapGroupProxyNode(this: Node, def: ProxyDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const listenNode = def.listen ? (RED.nodes.getNode(def.listen) as EndpointConfigNode | null) : null;
    const upstreamNode = def.upstream ? (RED.nodes.getNode(def.upstream) as EndpointConfigNode | null) : null;
    listenNode?.register(node);
    if (upstreamNode && upstreamNode !== listenNode) upstreamNode.register(node);
    let proxy: GroupProxy | undefined;
    let closed = false;
    let relayed = 0;
    const view = new GroupView(RED, node, 'proxy');
    let httpServer: HttpFrontServer | undefined;
    let httpFront: HttpFront | undefined;
    let unmount: (() => void) | undefined;

    // The proxy's own counters (a relayed Observe notification counts too, not only responses seen as events),
    // and the observations it holds upstream, so a proxy that relays never shows "0 relayed".
    let shown = '';
    const status = () => {
      if (!proxy || closed) return;
      const observing = proxy.relayedObservations;
      const values = { relayed: Math.max(relayed, proxy.counters.relayed), rejected: proxy.counters.rejected, observing };
      const key = observing > 0 ? 'coap-group-proxy.status.observing' : 'coap-group-proxy.status.active';
      const s = { fill: proxy.activeExchanges || observing ? ('blue' as const) : ('green' as const), shape: 'dot' as const, text: RED._(key, values) };
      // only changes reach the editor (the refresh must not resend the same status every 2 s)
      const text = JSON.stringify([s, values]);
      if (text !== shown) node.status(s);
      shown = text;
    };

    const start = async () => {
      if (!listenNode) throw new Error(RED._('coap-group-proxy.errors.no-listen'));
      if (def.upstream && !upstreamNode) throw new Error(RED._('coap-endpoint.errors.missing'));
      // Several proxies (and other servers) may share the listen endpoint: this one claims the requests it proxies.
      const reverse = parseReverse(def.reverse);
      const withOscore = (def.oscoreContexts?.length ?? 0) > 0 || !!(def.oscoreContext1 || def.oscoreContext2 || def.oscoreContext3);
      const claims = (req: IncomingRequest) => {
        const m = req.message;
        // a request protected for this proxy: only it can tell what is inside (oscore-capable-proxies-07 §2.4)
        if (withOscore && m.options.some((o) => o.number === OPT.OSCORE)) return true;
        const kind = proxyRelatedKind(m);
        if (kind === 'forward') return def.forward !== false;
        if (kind !== 'reverse') return false;
        const host = m.options.find((o) => o.number === OPT.URI_HOST)?.value.toString('utf8');
        const path = m.options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
        return reverse.some((r) => (r.host === undefined || r.host === host) && (r.pathPrefix ?? []).every((seg, i) => path[i] === seg) && (r.host !== undefined || (r.pathPrefix?.length ?? 0) > 0));
      };
      const listen = await listenNode.getServerEndpoint(node, claims);
      const upstream = upstreamNode ? await upstreamNode.getEndpoint() : await acquireDefaultEndpoint(RED, node);
      if (closed) return; // redeployed while the sockets were opening: the close handler releases them
      let chain;
      if (def.nextHop) {
        const u = parseUri(def.nextHop.includes('://') ? def.nextHop : `coap://${def.nextHop}`);
        chain = { nextHop: { address: socketAddress(u), port: u.port }, rttPrevious: Number(def.rttPrevious || 1), rttNext: Number(def.rttNext || 1) };
      }
      let oscore;
      const ctxIds = def.oscoreContexts?.length ? def.oscoreContexts : [def.oscoreContext1, def.oscoreContext2, def.oscoreContext3].filter((x): x is string => !!x);
      const ctxNodes = ctxIds.map((id) => RED.nodes.getNode(id) as OscoreContextConfigNode | null).filter((n): n is OscoreContextConfigNode => !!n);
      if (ctxNodes.length) {
        const registry = new ContextRegistry();
        for (const n of ctxNodes) registry.add(n.getContext());
        oscore = { contexts: registry, required: def.oscoreRequired !== false };
      }
      // RFC 10021 §7.5: an external signature checker for one group; it takes only the Signature Encryption Key and
      // the members' credentials from the context node, never keys that decrypt.
      const sigNode = def.signatureGroup ? (RED.nodes.getNode(def.signatureGroup) as GroupOscoreContextConfigNode | null) : null;
      const signatureCheckers = sigNode ? [SignatureChecker.forGroup(sigNode.getContext())] : undefined;
      proxy = new GroupProxy({
        oscore,
        ...(signatureCheckers ? { signatureCheckers } : {}),
        cache: def.cache === true,
        members: parseMembers(def.members),
        listen,
        upstream,
        forward: def.forward !== false,
        groupProxying: def.groupProxying !== false,
        reverse: parseReverse(def.reverse),
        allow: parseAllowList(def.allow),
        unsafeTrustAddresses: def.unsafeTrustAddresses === true,
        chain,
        replyFrom: def.replyFrom || 'reply-from',
        maxPendingPerClient: Number(def.maxPendingPerClient || 16),
        maxResponsesPerSecond: Number(def.maxResponsesPerSecond || 200),
        maxMulticastTimeout: Number(def.maxMulticastTimeout || 300),
      });
      proxy.on('event', (e: ProxyEvent) => {
        if (e.kind === 'response') relayed++;
        if (e.kind === 'reject') {
          node.log(`rejected ${e.client.address}:${e.client.port} -> ${e.target ?? '?'}: ${e.code} ${e.reason}`);
        }
        if (e.kind === 'drop') node.warn(`${e.client.address}:${e.client.port}: ${e.reason}`);
        view.proxyEvent(e, proxy!.counters, proxy!.activeExchanges);
        if (closed) return; // the proxy ends its exchanges while closing: nothing more goes into the flow
        if (def.events) node.send({ topic: e.kind, payload: e });
        status();
      });
      // groupcomm-proxy-07 §9: the HTTP front beside the CoAP one, on the same stages.
      const httpOpts = { basePath: def.httpPath || '/hc', maxBodyBytes: Number(def.httpMaxBody || 8192) };
      if (def.httpMode === 'node-red') {
        const app = (RED as unknown as { httpNode?: HttpNodeApp }).httpNode;
        if (!app) throw new Error('Node-RED has no httpNode server (httpNodeRoot false?)');
        httpFront = new HttpFront(proxy, httpOpts);
        unmount = mountOnHttpNode(app, httpOpts.basePath, httpFront);
      } else if (def.httpMode === 'port') {
        httpServer = await startHttpFront(proxy, { ...httpOpts, port: Number(def.httpPort || 0), host: def.httpHost || '127.0.0.1' });
        if (closed) return void (await httpServer.close());
        httpFront = httpServer.front;
        node.log(`HTTP front on http://${httpServer.address.address}:${httpServer.address.port}${httpOpts.basePath}`);
      }
      httpFront?.on('handler-error', (err: Error) => node.warn(`HTTP front: ${err.message}`));
      status();
      // Relayed notifications raise no event: refresh the counters now and then while the proxy runs.
      refresh = setInterval(status, 2000);
    };
    let refresh: NodeJS.Timeout | undefined;
    const started = start();
    // where the HTTP front listens once started (a port of 0 picks a free one), for the tests and the log
    (node as unknown as { httpAddress: () => Promise<{ address: string; port: number } | undefined> }).httpAddress = () => started.then(() => httpServer?.address);
    started.catch((err: Error) => {
      node.error(err.message);
      node.status({ fill: 'red', shape: 'dot', text: shortText(err.message) });
    });

    node.on('close', (removed, done) => {
      closed = true;
      view.close(removed);
      clearInterval(refresh);
      node.status({});
      unmount?.();
      httpFront?.close();
      // The HTTP front and the proxy first (the proxy stops using both sockets), then the endpoints it used, each
      // closing with its last user.
      const release = (ep: EndpointConfigNode | null) => new Promise<void>((r) => (ep ? ep.deregister(node, r, removed) : r()));
      Promise.resolve()
        .then(() => httpServer?.close())
        .then(() => proxy?.close())
        .then(() => release(listenNode))
        .then(() => (upstreamNode ? (upstreamNode !== listenNode ? release(upstreamNode) : undefined) : new Promise<void>((r) => releaseDefaultEndpoint(node, r))))
        .then(
          () => done(),
          () => done(),
        );
    });
  }
  RED.nodes.registerType('coap-group-proxy', CoapGroupProxyNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
