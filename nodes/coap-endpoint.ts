// coap-endpoint (config node): owns one UDP transport and its CoAP message layer and the nodes that use it, as
// Node-RED's MQTT broker node owns its connection: users register() and deregister(node, done, removed); the
// socket opens with the first user and closes after the last, and the endpoint's state is broadcast to every user's
// status. Server-role users (proxies) share the socket through a request router. A bad configuration fails every
// user with a red status instead of letting it fall back to some other socket.

import { CoapEndpoint } from '../src/messaging/endpoint';
import { TransmissionParams } from '../src/messaging/parameters';
import { interfaceChoices } from '../src/node-support/interfaces';
import { RequestRouter, RouteClaim } from '../src/node-support/request-router';
import { UdpTransport, UdpTransportOptions } from '../src/transport/udp-transport';
import { Node, NodeAPI, NodeDef, NodeStatus } from './lib/red';

export interface EndpointConfigNode extends Node {
  /** The shared endpoint; opened on first call. Rejects when the configuration is bad or the socket cannot open. */
  getEndpoint(): Promise<CoapEndpoint>;
  /** The shared endpoint as a server-role user sees it: its request handler is one route among the users'. */
  getServerEndpoint(user: Node, claims?: RouteClaim): Promise<CoapEndpoint>;
  describe(): string;
  register(user: Node): void;
  deregister(user: Node, done: () => void, removed?: boolean): void;
  /** the configuration error, when the dialog's values are not usable */
  readonly configError?: Error;
}

interface EndpointDef extends NodeDef {
  bindAddress?: string;
  port?: string | number;
  multicastInterface?: string;
  multicastTtl?: string | number;
  ackTimeout?: string | number;
  maxRetransmit?: string | number;
  /** socket receive buffer in KiB (default 1024: room for ~1200 simultaneous responses; the kernel caps it) */
  recvBuffer?: string | number;
}

/** Whole numbers only: "abc", "1.5", 70000 are errors (Number("") would be 0, so empty means the default). */
function integer(v: unknown, dflt: number, min: number, max: number, what: string): number {
  if (v === undefined || v === null || v === '') return dflt;
  const n = typeof v === 'number' ? v : /^\s*\d+\s*$/.test(String(v)) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`invalid ${what} ${JSON.stringify(String(v).slice(0, 20))} (a whole number from ${min} to ${max})`);
  return n;
}

export function endpointOptionsFromConfig(def: EndpointDef): { transport: UdpTransportOptions; params: Partial<TransmissionParams> } {
  const bindAddress = (def.bindAddress || '0.0.0.0').trim();
  const v6 = bindAddress.includes(':');
  const port = integer(def.port, 0, 0, 65535, 'port');
  const ttl = integer(def.multicastTtl, 1, 1, 255, 'multicast TTL');
  const params: Partial<TransmissionParams> = {};
  if (def.ackTimeout !== undefined && def.ackTimeout !== '') {
    const s = Number(def.ackTimeout);
    if (!Number.isFinite(s) || s <= 0 || s > 60) throw new Error(`invalid ACK timeout ${JSON.stringify(String(def.ackTimeout).slice(0, 20))} (seconds, up to 60)`);
    params.ACK_TIMEOUT = s * 1000;
  }
  if (def.maxRetransmit !== undefined && def.maxRetransmit !== '') params.MAX_RETRANSMIT = integer(def.maxRetransmit, 4, 0, 20, 'MAX_RETRANSMIT');
  return {
    transport: {
      bindAddress,
      port,
      family: v6 ? 'udp6' : 'udp4',
      multicastInterface: (def.multicastInterface || (v6 ? '::%lo' : '127.0.0.1')).trim(),
      multicastTtl: ttl,
      reuseAddr: port !== 0,
      recvBufferSize: Math.max(64, integer(def.recvBuffer, 1024, 64, 1 << 20, 'receive buffer (KiB)')) * 1024,
    },
    params,
  };
}

function register(RED: NodeAPI): void {
  // The dialogs offer the machine's interfaces for every multicast interface field.
  if (RED.httpAdmin) {
    const guard = RED.auth ? [RED.auth.needsPermission('coap-endpoint.read')] : [];
    RED.httpAdmin.get('/coap-group-proxy/interfaces', ...guard, (_req, res) => res.json(interfaceChoices()));
  }

  function CoapEndpointNode(this: EndpointConfigNode & { configError?: Error }, def: EndpointDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const users = new Map<string, Node>();
    let opening: Promise<{ endpoint: CoapEndpoint; router: RequestRouter }> | undefined;
    let closed = false;
    let state: NodeStatus | undefined;
    let cfg: ReturnType<typeof endpointOptionsFromConfig> | undefined;
    try {
      cfg = endpointOptionsFromConfig(def);
    } catch (err) {
      node.configError = err as Error;
      node.error(RED._('coap-endpoint.errors.config', { error: (err as Error).message }));
      state = { fill: 'red', shape: 'ring', text: RED._('coap-endpoint.status.bad-config') };
    }

    node.describe = () => (cfg ? `${cfg.transport.bindAddress}:${cfg.transport.port || '*'}` : String(def.name || def.id));

    const broadcast = (s: NodeStatus | undefined) => {
      state = s;
      if (s) for (const u of users.values()) u.status(s);
    };

    const open = () => {
      if (closed) return Promise.reject(new Error(RED._('coap-endpoint.errors.closed')));
      if (node.configError) return Promise.reject(node.configError);
      if (!opening) {
        const c = cfg!;
        opening = UdpTransport.open(c.transport).then((t) => {
          const endpoint = new CoapEndpoint(t, { params: c.params });
          t.on('error', (err: Error) => node.warn(RED._('coap-endpoint.warn.socket', { error: err.message })));
          endpoint.on('handler-error', (err: Error) => node.warn(RED._('coap-endpoint.warn.handler', { error: err.message })));
          return { endpoint, router: new RequestRouter(endpoint) };
        });
        opening.catch((err: Error) => {
          node.error(RED._('coap-endpoint.errors.open', { where: node.describe(), error: err.message }));
          broadcast({ fill: 'red', shape: 'ring', text: RED._('coap-endpoint.status.failed') });
          opening = undefined; // a later message may retry
        });
      }
      return opening;
    };

    node.getEndpoint = () => open().then((o) => o.endpoint);
    node.getServerEndpoint = (user, claims) => open().then((o) => o.router.viewFor(user, claims));

    node.register = (user) => {
      users.set(user.id, user);
      if (state) user.status(state);
      // Open with the first user, as the MQTT broker node connects: a socket that cannot open turns every user red
      // at deploy, not at the first message.
      else if (users.size === 1) open().catch(() => undefined);
    };

    const closeSocket = (): Promise<void> => {
      const p = opening;
      opening = undefined;
      return p ? p.then((o) => o.endpoint.close(), () => undefined) : Promise.resolve();
    };

    node.deregister = (user, done) => {
      users.delete(user.id);
      opening?.then((o) => o.router.remove(user), () => undefined);
      // The socket closes with the last user, before done(): a redeployed user that binds the same port next finds
      // it free.
      if (users.size === 0) closeSocket().then(done, done);
      else done();
    };

    node.on('close', (_removed, done) => {
      closed = true;
      users.clear();
      closeSocket().then(done, done);
    });
  }
  RED.nodes.registerType('coap-endpoint', CoapEndpointNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
