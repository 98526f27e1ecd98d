// coap-oscore-layer: one OSCORE layer (RFC 8613 §8; Group OSCORE RFC 10021 §7-§8) in a flow, for custom stacks:
// protect or verify a request or a response with the security context of a config node that offers
// nodes/lib/oscore-source.ts (coap-oscore-context, or a Group OSCORE context node). Maps msg <-> protectRequest / unprotectRequest
// / protectResponse / unprotectResponse only; the request/response bindings live in the context node, so the node
// that protects a request and the node that verifies its response can be different nodes.

import { CoapFormatError, decode, encode } from '../src/coap/codec';
import { codeToString, isRequestCode, isResponseCode, parseCode } from '../src/coap/codes';
import { CoapMessage, CoapOption, MessageType, TYPES, createMessage } from '../src/coap/message';
import { OPT, decodeUint, optionNumber } from '../src/coap/options';
import { encodePayload } from '../src/coap/payload';
import {
  OscoreError,
  answerOscoreError,
  ProtectRequestOptions,
  decodeOscoreOption,
  decodePartialIv,
  ProtectResponseOptions,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
} from '../src/oscore';
import type { OscoreLayerSource } from './lib/oscore-source';
import { describeMessage, objectToOptions } from './lib/msg-mapping';
import { DoneFn, Node, NodeAPI, NodeDef, NodeMessage, SendFn } from './lib/red';

export type LayerRole = 'protect-request' | 'unprotect-request' | 'protect-response' | 'unprotect-response';
export type LayerFormat = 'datagram' | 'message';
const ROLES: LayerRole[] = ['protect-request', 'unprotect-request', 'protect-response', 'unprotect-response'];

interface LayerDef extends NodeDef {
  context?: string;
  /** coap-group-oscore-context (RFC 10021); used instead of `context` when set */
  groupContext?: string;
  role?: LayerRole;
  format?: LayerFormat;
  /** 'throw' = done(err) (Catch nodes); 'output' = a second output carries the failed message */
  errors?: 'throw' | 'output';
}

/** msg.error as documented in the help: no secret can be in it, since no core error text carries key material. */
export interface LayerErrorInfo {
  code: string;
  message: string;
  /** the CoAP response a server sends back ("4.01"), or null when none is sent (client side, RFC 8613 §8.4) */
  responseCode: string | null;
  /** the core's own explanation, when `message` is the RFC's diagnostic text */
  detail?: string;
}

/** An input that cannot be processed, before OSCORE is even reached. */
class LayerInputError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function toToken(v: unknown): Buffer {
  if (v === undefined || v === null || v === '') return Buffer.alloc(0);
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string' && /^(?:[0-9a-fA-F]{2}){0,8}$/.test(v)) return Buffer.from(v, 'hex');
  if (typeof v === 'object' && (v as { type?: string }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) return Buffer.from((v as { data: number[] }).data);
  throw new LayerInputError('ERR_INPUT', 'msg.coap.token must be a Buffer or up to 8 bytes of hex');
}

/** msg -> CoapMessage in the configured representation. */
function readMessage(msg: NodeMessage, format: LayerFormat): CoapMessage {
  if (format === 'datagram') {
    if (!Buffer.isBuffer(msg.payload)) throw new LayerInputError('ERR_INPUT', 'msg.payload must be a Buffer holding a CoAP datagram');
    try {
      return decode(msg.payload);
    } catch (err) {
      if (err instanceof CoapFormatError) throw new LayerInputError(err.code, err.message);
      throw err;
    }
  }
  const c = msg.coap as { code?: unknown; type?: unknown; token?: unknown; messageId?: unknown; options?: unknown } | undefined;
  if (!c || typeof c !== 'object' || c.code === undefined) throw new LayerInputError('ERR_INPUT', 'msg.coap.code is missing');
  let code: number;
  let options: CoapOption[];
  try {
    code = parseCode(c.code as string | number);
    options = objectToOptions(c.options);
  } catch (err) {
    throw new LayerInputError('ERR_INPUT', (err as Error).message);
  }
  const type = (c.type ?? 'CON') as MessageType;
  if (!TYPES.includes(type)) throw new LayerInputError('ERR_INPUT', `msg.coap.type must be one of ${TYPES.join(', ')}`);
  const messageId = c.messageId === undefined ? 0 : Number(c.messageId);
  if (!Number.isInteger(messageId) || messageId < 0 || messageId > 0xffff) throw new LayerInputError('ERR_INPUT', 'msg.coap.messageId must be 0..65535');
  const cf = options.find((o) => o.number === OPT.CONTENT_FORMAT);
  const payload = encodePayload(msg.payload, cf ? decodeUint(cf.value) : undefined);
  return createMessage({ type, code, messageId, token: toToken(c.token), options, payload });
}

/** CoapMessage -> the msg fields of the configured representation. */
function writeMessage(msg: NodeMessage, m: CoapMessage, format: LayerFormat): void {
  const described = describeMessage(m);
  if (format === 'datagram') {
    msg.payload = encode(m);
    msg.coap = described;
  } else {
    // Keep what other nodes put in msg.coap (origin, exchange, index) and replace the message fields.
    const prev = msg.coap && typeof msg.coap === 'object' ? (msg.coap as Record<string, unknown>) : {};
    msg.coap = { ...prev, ...described };
    msg.payload = m.payload;
  }
}

/** msg.oscoreOptions: per-message layer options (names or numbers for options). */
interface InputLayerOptions {
  classE?: (string | number)[];
  outerOptions?: Record<string, unknown>;
  partialIv?: boolean | 'auto';
  multipleResponses?: boolean;
  kidContext?: boolean;
  /** Group OSCORE: protect a response in this mode ('group' / 'pairwise'; RFC 10021 §8 allows pairwise for a group-mode request) */
  mode?: 'group' | 'pairwise';
  /** Group OSCORE: protect a request in pairwise mode for this member (hex Sender ID) instead of group mode */
  recipient?: string;
}

function layerOptions(msg: NodeMessage): { classE?: number[]; outerOptions?: CoapOption[]; partialIv?: boolean | 'auto'; multipleResponses?: boolean; kidContext?: boolean; mode?: 'group' | 'pairwise'; recipient?: Buffer } {
  const o = msg.oscoreOptions as InputLayerOptions | undefined;
  if (o === undefined || o === null) return {};
  if (typeof o !== 'object') throw new LayerInputError('ERR_INPUT', 'msg.oscoreOptions must be an object');
  try {
    return {
      ...(o.classE ? { classE: o.classE.map((x) => (typeof x === 'number' ? x : optionNumber(x))) } : {}),
      ...(o.outerOptions ? { outerOptions: objectToOptions(o.outerOptions) } : {}),
      ...(o.partialIv !== undefined ? { partialIv: o.partialIv } : {}),
      ...(o.multipleResponses !== undefined ? { multipleResponses: o.multipleResponses === true } : {}),
      ...(o.kidContext !== undefined ? { kidContext: o.kidContext === true } : {}),
      ...(o.mode === 'group' || o.mode === 'pairwise' ? { mode: o.mode } : {}),
      ...(o.recipient !== undefined ? { recipient: recipientId(o.recipient) } : {}),
    };
  } catch (err) {
    throw new LayerInputError('ERR_INPUT', `msg.oscoreOptions: ${(err as Error).message}`);
  }
}

function recipientId(v: unknown): Buffer {
  if (typeof v !== 'string' || !/^(?:[0-9a-fA-F]{2}){0,7}$/.test(v)) throw new Error('recipient must be a Sender ID in hex (up to 7 bytes)');
  return Buffer.from(v, 'hex');
}

function errorInfo(err: unknown): LayerErrorInfo {
  if (err instanceof OscoreError) {
    const responseCode = err.noResponse ? null : codeToString(err.responseCode);
    // The RFC's diagnostic ("Replay detected", "Decryption failed") is what a peer sees; keep the core's text too.
    if (err.diagnostic) return { code: err.code, message: err.diagnostic, responseCode, ...(err.message.toLowerCase() !== err.diagnostic.toLowerCase() ? { detail: err.message } : {}) };
    return { code: err.code, message: err.message, responseCode };
  }
  if (err instanceof LayerInputError) return { code: err.code, message: err.message, responseCode: null };
  const e = err as { code?: unknown; message?: unknown };
  return { code: typeof e?.code === 'string' ? e.code : 'ERR_OSCORE_LAYER', message: String(e?.message ?? err), responseCode: null };
}

function register(RED: NodeAPI): void {
  function CoapOscoreLayerNode(this: Node, def: LayerDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    // A Group OSCORE context (coap-group-oscore-context) takes the place of the RFC 8613 one when both are set.
    const contextId = def.groupContext || def.context;
    const contextNode = contextId ? (RED.nodes.getNode(contextId) as (Node & OscoreLayerSource) | null) : null;
    const role: LayerRole = ROLES.includes(def.role as LayerRole) ? (def.role as LayerRole) : 'protect-request';
    const format: LayerFormat = def.format === 'message' ? 'message' : 'datagram';
    const errorsToOutput = def.errors === 'output';

    if (!contextNode) node.status({ fill: 'red', shape: 'ring', text: RED._('coap-oscore-layer.status.no-context') });

    /** The response to send back for a failed request (RFC 8613 §8.2 / §7.4, App. B.1.2 Echo challenge). */
    const errorResponse = (err: unknown, request: CoapMessage | undefined): CoapMessage | undefined => {
      if (role !== 'unprotect-request' || !request) return undefined;
      let parts;
      try {
        parts = answerOscoreError(err);
      } catch {
        return undefined;
      }
      if (!parts) return undefined;
      // Piggybacked on the ACK of a CON request, else a NON response with the request's token.
      const type: MessageType = request.type === 'CON' ? 'ACK' : 'NON';
      return { type, messageId: request.messageId, token: request.token, ...parts };
    };

    const fail = (msg: NodeMessage, send: SendFn, done: DoneFn, err: unknown, request: CoapMessage | undefined) => {
      const info = errorInfo(err);
      msg.error = info;
      const status = info.responseCode ? `${info.responseCode} ${info.message}` : `${info.code}: ${info.message}`;
      node.status({ fill: 'red', shape: 'ring', text: status });
      const response = errorResponse(err, request);
      if (errorsToOutput) {
        // Second output: ready to be sent back (datagram mode: to a udp out node with msg.ip / msg.port).
        if (response) writeMessage(msg, response, format);
        send([null, msg]);
        done();
        return;
      }
      if (response) (msg.error as LayerErrorInfo & { response?: unknown }).response = format === 'datagram' ? encode(response) : { coap: describeMessage(response), payload: response.payload };
      const e = new Error(info.detail ? `${info.message} (${info.detail})` : info.message) as Error & { code?: string };
      e.name = err instanceof OscoreError ? 'OscoreError' : 'Error';
      e.code = info.code;
      done(e);
    };

    node.on('input', (msg: NodeMessage, send: SendFn, done: DoneFn) => {
      let input: CoapMessage | undefined;
      try {
        if (!contextNode) throw new OscoreError('ERR_OSCORE_CONFIG', 'no coap-oscore-context selected');
        const verifier = contextNode.requestVerifier(); // throws the context's configuration error first, whatever the role
        const exchanges = contextNode.exchanges;
        input = readMessage(msg, format);
        // OSCORE protects requests and responses; Empty messages (ACK, RST, CoAP ping) pass unchanged.
        if (input.code === 0) {
          writeMessage(msg, input, format);
          send(errorsToOutput ? [msg, null] : msg);
          return done();
        }
        const isReq = isRequestCode(input.code);
        if (role.endsWith('request') ? !isReq : !isResponseCode(input.code)) {
          throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `${role}: got a ${isReq ? 'request' : 'response'} (code ${codeToString(input.code)})`);
        }
        const opts = layerOptions(msg);
        let out: CoapMessage;
        let info: Record<string, unknown>;
        switch (role) {
          case 'protect-request': {
            const r = protectRequest(contextNode.requestContext(opts.recipient), input, opts as ProtectRequestOptions);
            const observe = r.binding.observe;
            exchanges.client.set(input.token, r.binding, observe || opts.multipleResponses === true);
            out = r.message;
            info = { kid: r.binding.kid.toString('hex'), piv: decodePartialIv(r.binding.piv), ...(r.binding.kidContext ? { kidContext: r.binding.kidContext.toString('hex') } : {}) };
            node.status({ fill: 'green', shape: 'dot', text: RED._('coap-oscore-layer.status.protected-request', { piv: info.piv }) });
            break;
          }
          case 'unprotect-request': {
            const v = unprotectRequest(verifier, input, opts);
            exchanges.server.set(input.token, v.binding, v.binding.observe);
            out = v.message;
            info = { kid: v.binding.kid.toString('hex'), piv: decodePartialIv(v.binding.piv), ...(v.binding.kidContext ? { kidContext: v.binding.kidContext.toString('hex') } : {}), mode: v.context.mode };
            node.status({ fill: 'green', shape: 'dot', text: RED._('coap-oscore-layer.status.verified-request', { piv: info.piv }) });
            break;
          }
          case 'protect-response': {
            const binding = exchanges.server.get(input.token);
            if (!binding) throw new LayerInputError('ERR_OSCORE_NO_EXCHANGE', `no verified request with token ${input.token.toString('hex') || '(empty)'} for this context`);
            const parts = protectResponse(binding, input, opts as ProtectResponseOptions);
            // A notification keeps the binding for the next one; any other response ends the exchange.
            if (!(binding.observe && input.options.some((o) => o.number === OPT.OBSERVE))) exchanges.server.delete(input.token);
            out = { ...input, ...parts };
            // §8.3 step 3: either the response's own Partial IV, or none (the request nonce was reused).
            const own = decodeOscoreOption(parts.options.find((o) => o.number === OPT.OSCORE)!.value).piv;
            info = own ? { piv: decodePartialIv(own) } : {};
            node.status({ fill: 'green', shape: 'dot', text: RED._('coap-oscore-layer.status.protected-response') });
            break;
          }
          default: {
            const binding = exchanges.client.get(input.token);
            if (!binding) throw new LayerInputError('ERR_OSCORE_NO_EXCHANGE', `no protected request (or its exchange is over) with token ${input.token.toString('hex') || '(empty)'} for this context`);
            const v = unprotectResponse(binding, input, opts);
            if (binding.done) exchanges.client.delete(input.token);
            out = v.message;
            info = { ...(v.piv !== undefined ? { piv: v.piv } : {}), notification: v.notification, newest: v.newest, kid: v.responder.recipientId.toString('hex'), mode: v.responder.mode };
            node.status({ fill: 'green', shape: 'dot', text: RED._('coap-oscore-layer.status.verified-response', { code: codeToString(out.code) }) });
          }
        }
        writeMessage(msg, out, format);
        msg.oscore = { role, token: input.token.toString('hex'), ...info };
        send(errorsToOutput ? [msg, null] : msg);
        done();
      } catch (err) {
        fail(msg, send, done, err, input);
      }
    });

    node.on('close', (_removed, done) => {
      node.status({});
      done();
    });
  }

  RED.nodes.registerType('coap-oscore-layer', CoapOscoreLayerNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
