// coap-group-server: Node-RED as a member of a CoAP group (RFC 10020 §3.1, server side), the way `http in` makes it
// an HTTP server. It joins a group, serves one resource from its own unicast address after the Leisure, supports
// Observe, and either answers from the last state fed to it ("state") or hands each request to the flow, which
// answers with a coap-group-response node ("flow"). The node only maps config/msg to GroupServer and
// src/node-support/member-resource.ts.

import { codeToString } from '../src/coap/codes';
import { parseContentFormat } from '../src/coap/content-formats';
import { decodePayload } from '../src/coap/payload';
import { GroupServer, ServerRequest, ServerResponse } from '../src/group/group-server';
import { PendingReplies, PendingRepliesFull, StateResource, parseInitialState } from '../src/node-support/member-resource';
import { contentFormatOf, describeMessage } from './lib/msg-mapping';
import { Node, NodeAPI, NodeDef, NodeStatus } from './lib/red';

export interface GroupServerNode extends Node {
  /** Answer a request handed to the flow (coap-group-response); false when it is no longer waiting. */
  answer(id: string, response: ServerResponse | undefined): boolean;
  /** Where the member answers from, once its socket is open (rejects when it could not open). */
  serverAddress(): Promise<{ address: string; port: number }>;
}

interface GroupServerDef extends NodeDef {
  address?: string;
  port?: string | number;
  group?: string;
  groupPort?: string | number;
  /** interface to join the group on and to send multicast from (an IPv4 address, or ::%ifname) */
  multicastInterface?: string;
  path?: string;
  /** seconds */
  leisure?: string | number;
  mode?: 'state' | 'flow';
  writable?: boolean;
  observable?: boolean;
  contentFormat?: string;
  initial?: string;
  /** link attribute rt for /.well-known/core */
  rt?: string;
  /** seconds the flow has to answer (flow mode) */
  responseTimeout?: string | number;
}

/** Validate and convert the dialog's fields; throws with a message a user can act on. */
export function groupServerOptionsFromConfig(def: GroupServerDef) {
  const num = (v: unknown, dflt: number) => (v === undefined || v === '' ? dflt : Number(v));
  const port = num(def.port, 5683);
  const groupPort = num(def.groupPort, 5683);
  const leisure = num(def.leisure, 1);
  const responseTimeout = num(def.responseTimeout, 5);
  for (const [name, p] of [['port', port], ['group port', groupPort]] as const) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new Error(`invalid ${name} ${JSON.stringify(name === 'port' ? def.port : def.groupPort)}`);
  }
  if (!Number.isFinite(leisure) || leisure < 0 || leisure > 60) throw new Error(`invalid leisure ${JSON.stringify(def.leisure)} (seconds, 0-60)`);
  if (!Number.isFinite(responseTimeout) || responseTimeout <= 0 || responseTimeout > 60) throw new Error(`invalid response timeout ${JSON.stringify(def.responseTimeout)} (seconds, up to 60)`);
  const contentFormat = def.contentFormat ? parseContentFormat(def.contentFormat) : undefined;
  const group = (def.group || '224.0.1.187').trim();
  const iface = (def.multicastInterface || (group.includes(':') ? '::%lo' : '127.0.0.1')).trim();
  return {
    address: (def.address || (group.includes(':') ? '::' : '0.0.0.0')).trim(),
    port,
    group: { address: group, port: groupPort, interfaces: [iface] },
    multicastInterface: iface,
    path: '/' + (def.path || '/').split('/').filter(Boolean).join('/'),
    leisureMs: leisure * 1000,
    responseTimeoutMs: responseTimeout * 1000,
    contentFormat,
  };
}

function register(RED: NodeAPI): void {
  function CoapGroupServerNode(this: GroupServerNode, def: GroupServerDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const mode = def.mode === 'flow' ? 'flow' : 'state';
    let server: GroupServer | undefined;
    let closed = false;
    let requests = 0;
    let cfg: ReturnType<typeof groupServerOptionsFromConfig>;
    try {
      cfg = groupServerOptionsFromConfig(def);
    } catch (err) {
      node.error((err as Error).message);
      node.status({ fill: 'red', shape: 'ring', text: RED._('coap-group-server.status.bad-config') });
      node.answer = () => false;
      node.serverAddress = () => Promise.reject(err);
      node.on('input', (_msg, _send, done) => done(err as Error));
      return;
    }
    const state = new StateResource({ contentFormat: cfg.contentFormat, initial: parseInitialState(def.initial, cfg.contentFormat), writable: def.writable === true });
    const pending = new PendingReplies(cfg.responseTimeoutMs);
    const where = () => (server ? `${server.address().address}:${server.address().port}` : '');
    const status = (s?: NodeStatus) => {
      if (closed) return;
      const observers = server ? server.observerCount(cfg.path) : 0;
      node.status(s ?? { fill: 'green', shape: 'dot', text: RED._('coap-group-server.status.serving', { requests, observers }) });
    };

    const toFlow = (req: ServerRequest, extra: Record<string, unknown>) => {
      const decoded = decodePayload(req.message.payload, contentFormatOf(req.message), 'auto');
      const remote = req.remote;
      const host = remote.address.includes(':') ? `[${remote.address}]` : remote.address;
      node.send({
        payload: decoded.value,
        topic: req.path,
        coap: {
          ...describeMessage(req.message),
          method: codeToString(req.message.code, true),
          path: req.path,
          query: req.query,
          multicast: req.multicast,
          notification: req.notification === true,
          origin: { address: remote.address, port: remote.port, uri: `coap://${host}:${remote.port}` },
        },
        ...extra,
      });
    };

    const handler = async (req: ServerRequest): Promise<ServerResponse | undefined> => {
      if (closed) return undefined;
      if (!req.notification) requests++;
      status();
      if (mode === 'state') {
        const r = state.handle(req);
        if (r.changed) {
          toFlow(req, { payload: r.changed.value });
          if (def.observable) setImmediate(() => !closed && server?.notify(cfg.path));
        }
        return r.response;
      }
      let waiting;
      try {
        waiting = pending.add();
      } catch (err) {
        if (err instanceof PendingRepliesFull) return { code: 0xa3 }; // 5.03: the flow is not keeping up
        throw err;
      }
      toFlow(req, { _coapReply: { server: node.id, id: waiting.id } });
      return waiting.response;
    };

    node.answer = (id, response) => pending.settle(id, response);

    const ready = GroupServer.open({
      address: cfg.address,
      port: cfg.port,
      groups: [cfg.group],
      leisure: cfg.leisureMs,
      transport: { multicastInterface: cfg.multicastInterface, multicastTtl: 1 },
    }).then(
      (s) => {
        if (closed) return s.close();
        server = s;
        s.addResource(cfg.path, handler, { observable: def.observable === true, attributes: { ...(def.rt ? { rt: def.rt } : {}), ...(def.observable ? { obs: true } : {}) } });
        s.endpoint.on('handler-error', (err: Error) => node.warn(RED._('coap-group-server.warn.handler', { error: err.message })));
        node.log(RED._('coap-group-server.log.serving', { where: where(), group: `${cfg.group.address}:${cfg.group.port}`, path: cfg.path }));
        status();
      },
      (err: Error) => {
        if (closed) return;
        node.error(RED._('coap-group-server.errors.open', { error: err.message }));
        node.status({ fill: 'red', shape: 'ring', text: RED._('coap-group-server.status.failed') });
      },
    );

    node.serverAddress = () =>
      ready.then(() => {
        if (!server) throw new Error(RED._('coap-group-server.errors.not-running'));
        return server.address();
      });

    node.on('input', (msg, _send, done) => {
      ready.then(() => {
        if (!server) return done(new Error(RED._('coap-group-server.errors.not-running')));
        // state: the message is the new state; flow: it asks the flow for a notification to every observer
        if (mode === 'state') state.set(msg.payload);
        if (def.observable) server.notify(cfg.path);
        status();
        done();
      });
    });

    node.on('close', (_removed, done) => {
      closed = true;
      pending.clear();
      node.status({});
      ready
        .then(() => server?.close())
        .then(
          () => done(),
          () => done(),
        );
    });
  }
  RED.nodes.registerType('coap-group-server', CoapGroupServerNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
