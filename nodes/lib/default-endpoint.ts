// The one endpoint that nodes without a coap-endpoint share (no node opens a private socket of its own). Its
// multicast interface is visible and chosen: `coapMulticastInterface` in settings.js (default 127.0.0.1, this
// machine only), and it is logged when the endpoint opens. It closes when its last user leaves.

import { CoapEndpoint } from '../../src/messaging/endpoint';
import { UdpTransport } from '../../src/transport/udp-transport';
import { Node, NodeAPI } from './red';

let opening: Promise<CoapEndpoint> | undefined;
const users = new Set<string>();

export function defaultMulticastInterface(RED: NodeAPI): string {
  const v = RED.settings.coapMulticastInterface;
  return typeof v === 'string' && v.trim() ? v.trim() : '127.0.0.1';
}

export function acquireDefaultEndpoint(RED: NodeAPI, user: Node): Promise<CoapEndpoint> {
  users.add(user.id);
  if (!opening) {
    const iface = defaultMulticastInterface(RED);
    opening = UdpTransport.open({ bindAddress: iface.includes(':') ? '::' : '0.0.0.0', multicastInterface: iface, recvBufferSize: 1 << 20 }).then((t) => {
      user.log(RED._('coap-endpoint.log.default', { where: `${t.address().address}:${t.address().port}`, iface }));
      t.on('error', (err: Error) => user.warn(err.message));
      return new CoapEndpoint(t);
    });
    const mine = opening;
    mine.catch(() => {
      if (opening === mine) opening = undefined;
    });
  }
  return opening;
}

/** The user is gone; the last one closes the socket before `done`. */
export function releaseDefaultEndpoint(user: Node, done: () => void): void {
  if (!users.delete(user.id) || users.size > 0 || !opening) return done();
  const p = opening;
  opening = undefined;
  p.then((ep) => ep.close()).then(done, done);
}
