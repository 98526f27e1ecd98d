// coap-observe-multicast: in server mode a resource whose state comes from the flow, sent as one multicast
// notification per change (GroupObservation); in client mode an observer emitting one message per notification
// (MulticastObserver), or, with Group OSCORE through a proxy, one that hands the proxy the ticket request
// (TicketObserver, multicast-notifications-proxy-02 §4). Maps msg <-> those core calls and shows the observer
// estimate, the client's state and how many notifications did not verify.

import { parseContentFormat } from '../src/coap/content-formats';
import { parseUri, socketAddress } from '../src/coap/uri';
import { PayloadMode, encodePayload } from '../src/coap/payload';
import { GroupServer } from '../src/group/group-server';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { CountEstimate, GroupObservation } from '../src/observe/group-observation';
import { MulticastObserver, Notification } from '../src/observe/multicast-observer';
import { TicketNotification, TicketObserver, TicketObserverError, TicketObserverState } from '../src/observe/ticket-observer';
import { OscoreError } from '../src/oscore/errors';
import { RejectionLog, rejectionReason } from '../src/node-support/rejection-log';
import { groupObservationSecurity, multicastObserverSecurity } from '../src/observe/group-oscore';
import type { GroupOscoreContextConfigNode } from './coap-group-oscore-context';
import type { EndpointConfigNode } from './coap-endpoint';
import { acquireDefaultEndpoint, defaultMulticastInterface, releaseDefaultEndpoint } from './lib/default-endpoint';
import { describeMessage, contentFormatOf } from './lib/msg-mapping';
import { decodePayload } from '../src/coap/payload';
import { parseDuration } from '../src/node-support/units';
import { Node, NodeAPI, NodeDef, NodeMessage, guarded } from './lib/red';

interface ObserveDef extends NodeDef {
  mode?: 'server' | 'client';
  // server
  address?: string;
  port?: string | number;
  path?: string;
  group?: string;
  groupPort?: string | number;
  multicastInterface?: string;
  threshold?: string | number;
  contentFormat?: string;
  minInterval?: string | number;
  initial?: string;
  // client
  uri?: string;
  /** coap-endpoint the observer registers and listens on; empty = the shared default endpoint */
  endpoint?: string;
  /** interface for joining the notification group; empty = the default endpoint's multicast interface */
  groupInterface?: string;
  autoStart?: boolean;
  payloadMode?: PayloadMode;
  /** client mode: seconds before answering a Feedback-Divider poll (default RFC 7252 DEFAULT_LEISURE, 5 s) */
  leisure?: string | number;
  /** client mode: register through this proxy (coap://host:port) */
  proxy?: string;
  /** coap-group-oscore-context: protect registrations and notifications with Group OSCORE (OMN-15 §9); with a proxy, by ticket (MNP-02 §4) */
  groupOscore?: string;
}

function register(RED: NodeAPI): void {
  function CoapObserveMulticastNode(this: Node, def: ObserveDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const mode = def.mode === 'client' ? 'client' : 'server';
    const groupOscoreNode = def.groupOscore ? (RED.nodes.getNode(def.groupOscore) as GroupOscoreContextConfigNode | null) : null;
    let closed = false;

    if (mode === 'server') {
      let server: GroupServer | undefined;
      let observation: GroupObservation | undefined;
      const contentFormat = def.contentFormat ? parseContentFormat(def.contentFormat) : undefined;
      const status = () => {
        if (!observation) return;
        const est = Math.round(observation.count);
        node.status({ fill: observation.isActive ? 'green' : 'yellow', shape: 'dot', text: RED._('coap-observe-multicast.status.server', { count: est, active: observation.isActive ? 'multicast' : 'unicast' }) });
      };
      const ready = (async () => {
        server = await GroupServer.open({
          address: (def.address || '127.0.0.1').trim(),
          port: Number(def.port ?? 5683),
          groups: [],
          leisure: 0,
          transport: { multicastInterface: def.multicastInterface || '127.0.0.1', multicastTtl: 1 },
          // OMN-15 §9: with Group OSCORE, registrations and unicast responses are protected too
          ...(groupOscoreNode ? { requestTransform: groupOscoreNode.serverTransform() } : {}),
        });
        if (closed) return server.close();
        observation = new GroupObservation({
          server,
          path: def.path || '/state',
          group: { address: (def.group || '239.255.0.1').trim(), port: Number(def.groupPort || 5683) },
          threshold: Number(def.threshold || 1),
          initial: def.initial ?? '',
          contentFormat,
          minInterval: def.minInterval === undefined || def.minInterval === '' ? 3000 : Number(def.minInterval),
          ...(groupOscoreNode ? { security: groupObservationSecurity(groupOscoreNode.getContext()) } : {}),
        });
        observation.on('registration', (r) => {
          if (closed) return;
          node.send({ topic: 'registration', payload: { client: r.remote, count: r.count } });
          status();
        });
        observation.on('estimate', (e: CountEstimate) => {
          if (closed) return;
          node.send({ topic: 'estimate', payload: e });
          status();
        });
        observation.on('started', status);
        observation.on('cancelled', status);
        status();
      })();
      ready.catch((err: Error) => {
        node.error(`cannot start the server: ${err.message}`);
        node.status({ fill: 'red', shape: 'dot', text: err.message });
      });

      node.on(
        'input',
        guarded(node, async (msg, _send, done) => {
          await ready;
          if (!observation) throw new Error('server not running');
          if (msg.cancel) observation.cancel();
          else if (msg.estimate !== undefined) {
            // A counting round: msg.estimate = { target, wait } (wait in seconds like every time in the nodes, or
            // "500ms"); it must outlast the observers' leisure, or their confirmations arrive after the round.
            const e = (typeof msg.estimate === 'object' && msg.estimate !== null ? msg.estimate : {}) as { target?: number; wait?: unknown };
            const wait = e.wait === undefined ? undefined : parseDuration(e.wait, 'msg.estimate.wait');
            observation.estimateObservers(Number(e.target ?? 8), wait).catch((err: Error) => node.warn(err.message));
          } else observation.update(encodePayload(msg.payload, contentFormat));
          status();
          done();
        }),
      );
      node.on('close', (_removed, done) => {
        closed = true;
        node.status({});
        ready
          .catch(() => undefined)
          .then(() => {
            observation?.close();
            return server?.close();
          })
          .then(
            () => done(),
            () => done(),
          );
      });
      return;
    }

    // client mode: the observer registers and listens on the configured coap-endpoint (or the shared default
    // endpoint); observers of one group on one endpoint share the group receiver and the token T.
    const endpointNode = def.endpoint ? (RED.nodes.getNode(def.endpoint) as EndpointConfigNode | null) : null;
    endpointNode?.register(node);
    let usesDefault = false;
    const getEndpoint = (): Promise<CoapEndpoint> => {
      if (def.endpoint && !endpointNode) return Promise.reject(new Error(RED._('coap-endpoint.errors.missing')));
      if (endpointNode) return endpointNode.getEndpoint();
      usesDefault = true;
      return acquireDefaultEndpoint(RED, node);
    };
    const groupInterface = (def.groupInterface || '').trim() || defaultMulticastInterface(RED);
    let observer: MulticastObserver | TicketObserver | undefined;
    let received = 0;
    let rejections = new RejectionLog();
    const payloadMode: PayloadMode = def.payloadMode || 'auto';
    const showClient = (mode: string) => {
      const rejected = rejections.total;
      node.status({
        fill: rejected ? 'yellow' : 'green',
        shape: 'dot',
        text: rejected ? RED._('coap-observe-multicast.status.clientRejected', { mode, received, rejected }) : RED._('coap-observe-multicast.status.client', { mode, received }),
      });
    };
    const output = (n: { message: Notification['message']; origin: Notification['origin']; sequence: number; via: string }, mode: string) => {
      received++;
      const decoded = decodePayload(n.message.payload, contentFormatOf(n.message), payloadMode);
      node.send({ payload: decoded.value, topic: n.origin.uri, coap: { ...describeMessage(n.message), origin: n.origin, sequence: n.sequence, via: n.via } });
      showClient(mode);
    };
    // OMN-15 §9.3: what did not verify is dropped by the core; here it is counted in the status and logged rarely
    // (a sender can cause it), with the error's code and text, which carry no key material.
    const rejected = (err: Error, mode: string) => {
      const line = rejections.add(err);
      if (line) node.warn(line);
      showClient(mode);
    };
    // A failed start: the status says what refused it (no secret: the core's texts name codes and fields only).
    const failed = (err: Error) => {
      if (closed) return;
      if (err instanceof TicketObserverError && err.code === 'ERR_TICKET_REFUSED') node.status({ fill: 'red', shape: 'ring', text: RED._('coap-observe-multicast.status.ticketRefused', { code: err.responseCode ?? '-' }) });
      else node.status({ fill: 'red', shape: 'dot', text: err.message.slice(0, 80) });
    };
    let attempt = 0;
    const start = (msg?: NodeMessage) => {
      const mine = ++attempt;
      return startObserver(msg, mine).catch((err: Error) => {
        // a start that a redeploy, a cancel or a newer start overtook is not this node's state any more
        if (closed || mine !== attempt) return;
        failed(err);
        throw err;
      });
    };
    const startObserver = async (msg: NodeMessage | undefined, mine: number) => {
      const uri = (typeof msg?.url === 'string' && msg.url) || def.uri;
      if (!uri) throw new Error('no resource URI');
      const endpoint = await getEndpoint();
      // a redeploy, a cancel or a newer start overtook this one while it waited: it installs nothing (else the
      // observer it replaced, e.g. a ticket relay registered at the proxy, would never be cancelled)
      if (closed || mine !== attempt) return;
      // no longer current when it ends, so its 'ended' state does not show
      const previous = observer;
      observer = undefined;
      previous?.cancel();
      let proxy;
      const proxyText = typeof msg?.proxy === 'string' ? msg.proxy : def.proxy;
      if (proxyText) {
        const p = parseUri(proxyText.includes('://') ? proxyText : `coap://${proxyText}`);
        proxy = { address: socketAddress(p), port: p.port };
      }
      const security = groupOscoreNode ? multicastObserverSecurity(groupOscoreNode.getContext()) : undefined;
      const leisure = def.leisure === undefined || def.leisure === '' ? undefined : parseDuration(def.leisure, 'Leisure', { min: 0 });
      received = 0;
      rejections = new RejectionLog();
      if (security && proxy) {
        // MNP-02 §4: through a proxy with Group OSCORE end to end, the client reads the protected informative response
        // and hands the proxy the ticket request; the proxy relays protected notifications it cannot read.
        const t = new TicketObserver(endpoint, { uri, proxy, security, leisure });
        observer = t;
        const current = () => !closed && observer === t;
        t.on('state', (st: TicketObserverState) => {
          if (!current()) return;
          // ended while current: the server cancelled or the relay stopped; the count of a dead observation would mislead
          if (st === 'ended') node.status({ fill: 'red', shape: 'ring', text: RED._('coap-observe-multicast.status.ended') });
          else if (st === 'registering') node.status({ fill: 'yellow', shape: 'ring', text: RED._('coap-observe-multicast.status.registeringProxy') });
          else if (st === 'ticket') node.status({ fill: 'yellow', shape: 'ring', text: RED._('coap-observe-multicast.status.ticket') });
          else if (st === 'listening') showClient(RED._('coap-observe-multicast.status.viaProxy'));
        });
        t.on('notification', (n: TicketNotification) => current() && output(n, RED._('coap-observe-multicast.status.viaProxy')));
        t.on('rejected', (err: Error) => current() && rejected(err, RED._('coap-observe-multicast.status.viaProxy')));
        t.on('cancelled', () => current() && node.status({ fill: 'grey', shape: 'ring', text: RED._('coap-observe-multicast.status.cancelled') }));
        t.on('error', (err: Error) => current() && node.warn(rejectionReason(err)));
        await t.start();
        return;
      }
      const obs = new MulticastObserver(endpoint, { uri, groupInterface, proxy, leisure, security });
      observer = obs;
      obs.on('notification', (n: Notification) => {
        if (closed || observer !== obs) return;
        output(n, obs.mode);
      });
      obs.on('cancelled', () => node.status({ fill: 'grey', shape: 'ring', text: RED._('coap-observe-multicast.status.cancelled') }));
      obs.on('error', (err: Error) => {
        if (closed || observer !== obs) return;
        if (err instanceof OscoreError) rejected(err, obs.mode);
        else node.warn(rejectionReason(err));
      });
      const m = await obs.start();
      if (!closed && observer === obs) showClient(m);
    };
    if (def.autoStart !== false && def.uri) {
      start().catch((err: Error) => !closed && node.error(`registration failed: ${err.message}`));
    }
    node.on(
      'input',
      guarded(node, async (msg, _send, done) => {
        if (msg.cancel) {
          attempt++;
          const previous = observer;
          observer = undefined;
          previous?.cancel();
          node.status({ fill: 'grey', shape: 'ring', text: RED._('coap-observe-multicast.status.cancelled') });
        } else await start(msg);
        done();
      }),
    );
    node.on('close', (removed, done) => {
      closed = true;
      observer?.cancel();
      node.status({});
      observer = undefined;
      if (endpointNode) endpointNode.deregister(node, done, removed);
      else if (usesDefault) releaseDefaultEndpoint(node, done);
      else done();
    });
  }
  RED.nodes.registerType('coap-observe-multicast', CoapObserveMulticastNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
