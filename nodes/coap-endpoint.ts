// coap-endpoint (config node): owns one UDP transport and its CoAP message layer, shared by every node that
// selects it; opened on first use, closed on redeploy. Groups to receive are joined here too.

import { CoapEndpoint } from '../src/messaging/endpoint';
import { TransmissionParams } from '../src/messaging/parameters';
import { UdpTransport, UdpTransportOptions } from '../src/transport/udp-transport';
import { interfaceChoices } from '../src/node-support/interfaces';
import { Node, NodeAPI, NodeDef, closeThen } from './lib/red';

export interface EndpointConfigNode extends Node {
  /** The shared endpoint; opened on first call. */
  getEndpoint(): Promise<CoapEndpoint>;
  describe(): string;
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

export function endpointOptionsFromConfig(def: EndpointDef): { transport: UdpTransportOptions; params: Partial<TransmissionParams> } {
  const bindAddress = (def.bindAddress || '0.0.0.0').trim();
  const v6 = bindAddress.includes(':');
  const port = Number(def.port || 0);
  const ttl = Number(def.multicastTtl || 1);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${def.port}`);
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255) throw new Error(`invalid multicast TTL ${def.multicastTtl}`);
  const params: Partial<TransmissionParams> = {};
  if (def.ackTimeout) params.ACK_TIMEOUT = Number(def.ackTimeout) * 1000;
  if (def.maxRetransmit !== undefined && def.maxRetransmit !== '') params.MAX_RETRANSMIT = Number(def.maxRetransmit);
  return {
    transport: {
      bindAddress,
      port,
      family: v6 ? 'udp6' : 'udp4',
      multicastInterface: (def.multicastInterface || (v6 ? '::%lo' : '127.0.0.1')).trim(),
      multicastTtl: ttl,
      reuseAddr: port !== 0,
      recvBufferSize: Math.max(64, Number(def.recvBuffer || 1024)) * 1024,
    },
    params,
  };
}

module.exports = function (RED: NodeAPI) {
  // The dialogs offer the machine's interfaces for every multicast interface field.
  if (RED.httpAdmin) {
    const guard = RED.auth ? [RED.auth.needsPermission('coap-endpoint.read')] : [];
    RED.httpAdmin.get('/coap-group-proxy/interfaces', ...guard, (_req, res) => res.json(interfaceChoices()));
  }
  function CoapEndpointNode(this: EndpointConfigNode, def: EndpointDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    let opening: Promise<CoapEndpoint> | undefined;
    let closed = false;
    const cfg = endpointOptionsFromConfig(def);

    node.describe = () => `${cfg.transport.bindAddress}:${cfg.transport.port || '*'}`;

    node.getEndpoint = () => {
      if (closed) return Promise.reject(new Error('endpoint closed'));
      if (!opening) {
        opening = UdpTransport.open(cfg.transport).then((t) => {
          const ep = new CoapEndpoint(t, { params: cfg.params });
          t.on('error', (err: Error) => node.warn(`socket error: ${err.message}`));
          ep.on('handler-error', (err: Error) => node.warn(`handler error: ${err.message}`));
          return ep;
        });
        opening.catch((err: Error) => {
          node.error(`cannot open ${node.describe()}: ${err.message}`);
          opening = undefined; // allow a retry on the next message
        });
      }
      return opening;
    };

    node.on('close', (_removed, done) => {
      closed = true;
      const p = opening;
      opening = undefined;
      closeThen(p, done);
    });
  }
  RED.nodes.registerType('coap-endpoint', CoapEndpointNode);
};
