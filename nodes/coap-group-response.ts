// coap-group-response: answers a request that a coap-group-server node in "flow" mode handed to the flow, the way
// `http response` answers `http in`. Code and Content-Format from msg or the dialog; the body from msg.payload.

import { CODES, codeClass, codeToString, parseCode } from '../src/coap/codes';
import { parseContentFormat } from '../src/coap/content-formats';
import { encodePayload } from '../src/coap/payload';
import type { GroupServerNode } from './coap-group-server';
import { objectToOptions } from './lib/msg-mapping';
import { Node, NodeAPI, NodeDef } from './lib/red';

interface GroupResponseDef extends NodeDef {
  code?: string;
  contentFormat?: string;
}

function register(RED: NodeAPI): void {
  function CoapGroupResponseNode(this: Node, def: GroupResponseDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    node.on('input', (msg, _send, done) => {
      const reply = msg._coapReply as { server?: string; id?: string } | undefined;
      if (!reply || typeof reply.server !== 'string' || typeof reply.id !== 'string') return done(new Error(RED._('coap-group-response.errors.no-request')));
      const server = RED.nodes.getNode(reply.server) as GroupServerNode | null;
      try {
        const codeIn = msg.statusCode ?? (def.code || '2.05');
        const code = parseCode(codeIn as string | number);
        if (codeClass(code) < 2 || codeClass(code) > 5) throw new Error(RED._('coap-group-response.errors.bad-code', { code: String(codeIn) }));
        const cfIn = msg.contentFormat ?? def.contentFormat;
        const contentFormat = cfIn === undefined || cfIn === '' ? (typeof msg.payload === 'object' && msg.payload !== null && !Buffer.isBuffer(msg.payload) ? 50 : undefined) : parseContentFormat(cfIn as string | number);
        const options = msg.options ? objectToOptions(msg.options) : [];
        const body = code === CODES.VALID ? Buffer.alloc(0) : encodePayload(msg.payload, contentFormat);
        if (!server || !server.answer(reply.id, { code, contentFormat: body.length ? contentFormat : undefined, payload: body, options })) {
          node.warn(RED._('coap-group-response.warn.gone'));
        } else node.status({ fill: 'green', shape: 'dot', text: codeToString(code) });
        done();
      } catch (err) {
        done(err as Error);
      }
    });
  }
  RED.nodes.registerType('coap-group-response', CoapGroupResponseNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
