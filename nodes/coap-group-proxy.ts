// coap-group-proxy: a forward and/or reverse proxy to CoAP groups (GroupProxy) on a listening coap-endpoint;
// config <-> GroupProxyOptions, proxy events -> an optional output, active exchanges -> status.

import { parseUri, socketAddress } from '../src/coap/uri';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { AllowRule, GroupProxy, ProxyEvent, ReplyFromFormat, ReverseMapping } from '../src/proxy/group-proxy';
import { UdpTransport } from '../src/transport/udp-transport';
import type { EndpointConfigNode } from './coap-endpoint';
import type { OscoreContextConfigNode } from './coap-oscore-context';
import { ContextRegistry } from '../src/oscore';
import { Node, NodeAPI, NodeDef } from './lib/red';

interface ProxyDef extends NodeDef {
  listen?: string;
  upstream?: string;
  forward?: boolean;
  groupProxying?: boolean;
  reverse?: { host?: string; path?: string; group: string; standIn?: 'servers' | 'group' }[];
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
  cache?: boolean;
  /** group authority -> member addresses, one "group = member, member" per line */
  members?: string;
}

/**
 * "127.0.0.1", "127.0.0.1:40000", "[::1]:5683", "*", or "kid:0a" / "kid:0a@77" (an OSCORE identity: hex Recipient
 * ID of the context shared with that client, @ hex ID Context); one per line or comma-separated.
 */
export function parseAllowList(text: string | undefined): AllowRule[] {
  return (text ?? '')
    .split(/[\n,]/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      if (l === '*') return { address: '*' };
      if (/^kid:/i.test(l)) return { address: '*', kid: l.slice(4).trim().toLowerCase() };
      const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(l);
      if (v6) return { address: v6[1], port: v6[2] ? Number(v6[2]) : undefined };
      const [address, port] = l.split(':');
      return { address, port: port ? Number(port) : undefined };
    });
}

/** "224.0.1.187:5683 = 127.0.0.2:5683, 127.0.0.3:5683", one group per line. */
export function parseMembers(text: string | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const line of (text ?? '').split('\n')) {
    const [group, list] = line.split('=');
    if (!group || !list) continue;
    const g = group.trim();
    out[g.includes(':') && !g.startsWith('[') ? g : `${g}:5683`] = list.split(',').map((m) => m.trim()).filter(Boolean);
  }
  return out;
}

export function parseReverse(rows: ProxyDef['reverse']): ReverseMapping[] {
  return (rows ?? [])
    .filter((r) => r && r.group)
    .map((r) => ({
      host: r.host?.trim() || undefined,
      pathPrefix: r.path ? r.path.split('/').filter(Boolean) : undefined,
      group: r.group.trim(),
      standIn: r.standIn === 'servers' ? 'servers' : 'group',
    }));
}

module.exports = function (RED: NodeAPI) {
  function CoapGroupProxyNode(this: Node, def: ProxyDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const listenNode = def.listen ? (RED.nodes.getNode(def.listen) as EndpointConfigNode | null) : null;
    const upstreamNode = def.upstream ? (RED.nodes.getNode(def.upstream) as EndpointConfigNode | null) : null;
    let proxy: GroupProxy | undefined;
    let privateUpstream: CoapEndpoint | undefined;
    let closed = false;
    let relayed = 0;
    let rejected = 0;

    const status = () => {
      if (!proxy) return;
      node.status({ fill: proxy.activeExchanges ? 'blue' : 'green', shape: 'dot', text: RED._('coap-group-proxy.status.active', { active: proxy.activeExchanges, relayed, rejected }) });
    };

    const start = async () => {
      if (!listenNode) throw new Error(RED._('coap-group-proxy.errors.no-listen'));
      const listen = await listenNode.getEndpoint();
      const upstream = upstreamNode ? await upstreamNode.getEndpoint() : (privateUpstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '0.0.0.0', recvBufferSize: 1 << 20 })));
      if (closed) {
        // redeployed while the sockets were opening: close what this start opened
        await privateUpstream?.close();
        return;
      }
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
      proxy = new GroupProxy({
        oscore,
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
          rejected++;
          node.log(`rejected ${e.client.address}:${e.client.port} -> ${e.target ?? '?'}: ${e.code} ${e.reason}`);
        }
        if (e.kind === 'drop') node.warn(`${e.client.address}:${e.client.port}: ${e.reason}`);
        if (closed) return; // the proxy ends its exchanges while closing: nothing more goes into the flow
        if (def.events) node.send({ topic: e.kind, payload: e });
        status();
      });
      status();
    };
    start().catch((err: Error) => {
      node.error(err.message);
      node.status({ fill: 'red', shape: 'dot', text: err.message });
    });

    node.on('close', (_removed, done) => {
      closed = true;
      node.status({});
      Promise.resolve()
        .then(() => proxy?.close())
        .then(() => privateUpstream?.close())
        .then(
          () => done(),
          () => done(),
        );
    });
  }
  RED.nodes.registerType('coap-group-proxy', CoapGroupProxyNode);
};
