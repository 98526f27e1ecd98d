// coap-response-splitter: takes the per-server messages of a group exchange (from coap-group-request or a proxy
// client), routes each by origin to one output per configured server (plus one for unknown servers), drops
// duplicates from the same server by the selected policy, and on completion reports who answered and who did not.

import { Node, NodeAPI, NodeDef, NodeMessage, SendFn } from './lib/red';
import { BatchResponse, parseBatch } from '../src/proxy/http-batch-client';

export type DedupPolicy = 'first' | 'last' | 'identical' | 'none';

interface Member {
  name?: string;
  /** origin URI ("coap://127.0.0.2:5683"), address ("127.0.0.2") or address:port */
  match: string;
}

interface SplitterDef extends NodeDef {
  servers?: Member[];
  dedup?: DedupPolicy;
  maxExchanges?: string | number;
}

interface Origin {
  address: string;
  port: number;
  uri: string;
}

interface ExchangeState {
  seen: Map<string, { count: number; fingerprint?: string; origin: Origin }>;
  /** for 'last': the latest message per origin, sent at completion */
  held: Map<string, { msg: NodeMessage; output: number }>;
  dropped: number;
}

/** Index of the configured member an origin belongs to, or -1. */
export function matchMember(members: Member[], origin: Origin): number {
  const hostPort = origin.address.includes(':') ? `[${origin.address}]:${origin.port}` : `${origin.address}:${origin.port}`;
  return members.findIndex((m) => {
    const want = m.match.trim().toLowerCase();
    return want === origin.uri.toLowerCase() || want === origin.address.toLowerCase() || want === hostPort.toLowerCase() || want === `coap://${hostPort}`;
  });
}

function fingerprint(msg: NodeMessage): string {
  const coap = msg.coap as { code?: string } | undefined;
  const p = msg.payload;
  const body = Buffer.isBuffer(p) ? p.toString('base64') : JSON.stringify(p);
  return `${coap?.code}|${body}`;
}

// --- batch input (groupcomm-proxy-07 §9.7), issue 11 ---
/**
 * A batch from the HTTP front of a group proxy, as Node-RED's `http request` node delivers it (msg.statusCode,
 * msg.headers, msg.payload as a Buffer): one message per server, shaped like a coap-group-request response (origin
 * from Reply-From, msg.topic = origin URI), then the completion message. undefined when `msg` is no such batch.
 */
export function batchMessages(msg: NodeMessage): NodeMessage[] | undefined {
  const headers = msg.headers as Record<string, string | string[] | undefined> | undefined;
  const status = msg.statusCode as number | undefined;
  if (!headers || typeof status !== 'number') return undefined;
  const ct = headers['content-type'];
  const contentType = Array.isArray(ct) ? ct[0] : ct;
  const exchange = `http:${msg._msgid ?? ''}`;
  const base = { _msgid: msg._msgid } as NodeMessage;
  if (status === 200 && contentType && /^multipart\/mixed/i.test(contentType)) {
    const body = Buffer.isBuffer(msg.payload) ? msg.payload : Buffer.from(String(msg.payload ?? ''), 'latin1');
    const parts: BatchResponse[] = parseBatch(contentType, body);
    const out: NodeMessage[] = parts.map((p, i) => ({
      ...base,
      topic: p.origin?.uri,
      payload: p.body,
      statusCode: p.status,
      headers: Object.fromEntries(Object.entries(p.headers).map(([k, v]) => [k, v.join(', ')])),
      coap: { exchange, origin: p.origin },
      parts: { id: exchange, index: i, count: parts.length },
    }));
    const responders = parts.map((p) => p.origin).filter((o) => o !== undefined);
    out.push({ ...base, complete: true, statusCode: status, coap: { exchange, responders, responses: parts.length } });
    return out;
  }
  // §9.6: 204, nobody answered before T' (or T' = 0); §9.3: 304, the client's Group-ETag is current
  if (status === 204 || status === 304) return [{ ...base, complete: true, statusCode: status, coap: { exchange, responders: [], responses: 0, notModified: status === 304 } }];
  return undefined;
}

function register(RED: NodeAPI): void {
  function CoapResponseSplitterNode(this: Node, def: SplitterDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const members: Member[] = (def.servers ?? []).filter((m) => m && typeof m.match === 'string' && m.match.trim());
    const policy: DedupPolicy = def.dedup ?? 'first';
    const maxExchanges = Number(def.maxExchanges || 1000);
    const unknownOutput = members.length;
    const reportOutput = members.length + 1;
    const outputs = members.length + 2;
    const exchanges = new Map<string, ExchangeState>();
    let dropped = 0;

    const at = (index: number, msg: NodeMessage): (NodeMessage | null)[] => {
      const arr: (NodeMessage | null)[] = new Array(outputs).fill(null);
      arr[index] = msg;
      return arr;
    };

    const state = (id: string): ExchangeState => {
      let s = exchanges.get(id);
      if (!s) {
        if (exchanges.size >= maxExchanges) {
          // Completion never came for the oldest exchange: forget it rather than grow without bound.
          const oldest = exchanges.keys().next().value!;
          exchanges.delete(oldest);
          node.warn(RED._('coap-response-splitter.warn.evicted', { id: oldest }));
        }
        s = { seen: new Map(), held: new Map(), dropped: 0 };
        exchanges.set(id, s);
      }
      return s;
    };

    node.on('input', (msg, send, done) => {
      let batch: NodeMessage[] | undefined;
      try {
        batch = batchMessages(msg);
      } catch (err) {
        return done(new Error(`not a readable batch: ${(err as Error).message}`));
      }
      if (!batch) return handle(msg, send, done);
      for (const m of batch) handle(m, send, () => undefined);
      done();
    });

    const handle = (msg: NodeMessage, send: SendFn, done: (err?: Error) => void): void => {
      const coap = msg.coap as { exchange?: string; origin?: Origin; responders?: Origin[] } | undefined;
      const parts = msg.parts as { id?: string } | undefined;
      const id = coap?.exchange ?? parts?.id ?? '';
      if (msg.complete) {
        const s = exchanges.get(id);
        exchanges.delete(id);
        const origins = new Map<string, Origin>();
        for (const o of coap?.responders ?? []) if (o && typeof o.uri === 'string') origins.set(o.uri, o);
        if (s) for (const [uri, seen] of s.seen) origins.set(uri, seen.origin);
        if (s && policy === 'last') for (const h of s.held.values()) send(at(h.output, h.msg));
        const answered: string[] = [];
        const missing: string[] = [];
        const originsSeen = [...origins.values()];
        members.forEach((m, i) => {
          const hit = originsSeen.some((o) => matchMember([m], o) === 0);
          (hit ? answered : missing).push(m.name || members[i].match);
        });
        const unexpected = originsSeen.filter((o) => matchMember(members, o) < 0).map((o) => o.uri);
        const report: NodeMessage = {
          ...msg,
          complete: true,
          payload: { answered, missing, unexpected, duplicatesDropped: s?.dropped ?? 0, responses: (coap as { responses?: number })?.responses },
        };
        send(at(reportOutput, report));
        node.status({ fill: missing.length ? 'yellow' : 'green', shape: 'dot', text: RED._('coap-response-splitter.status.report', { answered: answered.length, expected: members.length, missing: missing.length }) });
        return done();
      }
      const origin = coap?.origin;
      if (!origin || typeof origin.uri !== 'string') {
        node.warn(RED._('coap-response-splitter.warn.no-origin'));
        return done();
      }
      const idx = matchMember(members, origin);
      const output = idx >= 0 ? idx : unknownOutput;
      const s = state(id);
      const prev = s.seen.get(origin.uri);
      const fp = policy === 'identical' ? fingerprint(msg) : undefined;
      if (prev) {
        prev.count++;
        const duplicate = policy === 'first' || (policy === 'identical' && prev.fingerprint === fp);
        if (duplicate) {
          s.dropped++;
          dropped++;
          node.status({ fill: 'grey', shape: 'ring', text: RED._('coap-response-splitter.status.dropped', { count: dropped }) });
          return done();
        }
        if (policy === 'identical') prev.fingerprint = fp;
      } else s.seen.set(origin.uri, { count: 1, fingerprint: fp, origin });
      if (policy === 'last') {
        if (prev) {
          s.dropped++;
          dropped++;
        }
        s.held.set(origin.uri, { msg, output });
        return done();
      }
      send(at(output, msg));
      done();
    };

    node.on('close', (_removed, done) => {
      exchanges.clear();
      node.status({});
      done();
    });
  }
  RED.nodes.registerType('coap-response-splitter', CoapResponseSplitterNode);
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
