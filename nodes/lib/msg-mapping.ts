// The msg contract of STYLE.md: CoAP messages <-> `msg.coap` (code, type, token, options by RFC name, origin),
// and the `options` object a flow author writes ({ "Uri-Query": ["a=1"], "Accept": 50 }) <-> CoapOption lists.
// No node-red import here: this is plain mapping, unit-testable without a runtime.

import { codeToString } from '../../src/coap/codes';
import { CoapMessage, CoapOption } from '../../src/coap/message';
import { OPT, decodeOptionValue, encodeOptionValue, optionDef, optionName, optionNumber } from '../../src/coap/options';
import { DecodedPayload, PayloadMode, decodePayload } from '../../src/coap/payload';
import { GroupResponse, Origin } from '../../src/group/group-client';
import { originFromRelayed } from '../../src/proxy/proxy-client';

export type OptionValue = Buffer | number | string | true;

export type OriginValue = { address: string; port: number; uri: string; via?: { address: string; port: number; uri: string } } | { error: string; hex: string };

/**
 * Reply-From (groupcomm-proxy-07 §3) and the legacy Response-Forwarding name a server: show it as the origin object
 * a flow can use ({address, port, uri}, plus `via` for a proxy standing in for it), not as CBOR bytes.
 */
function originOption(o: CoapOption): OriginValue {
  try {
    const { via, ...origin } = originFromRelayed({ type: 'NON', code: 0, messageId: 0, token: Buffer.alloc(0), options: [o], payload: Buffer.alloc(0) }, { address: '', port: 0 });
    return via ? { ...origin, via } : origin;
  } catch (err) {
    return { error: (err as Error).message, hex: o.value.toString('hex') };
  }
}

/** Options by RFC name; repeatable options (and any option that occurs twice) as arrays. */
export function optionsToObject(options: CoapOption[]): Record<string, OptionValue | OptionValue[] | OriginValue> {
  const out: Record<string, OptionValue | OptionValue[] | OriginValue> = {};
  for (const o of options) {
    const name = optionName(o.number);
    if (name === 'Reply-From' || name === 'Response-Forwarding') {
      out[name] = originOption(o);
      continue;
    }
    const v = decodeOptionValue(o.number, o.value);
    const repeatable = optionDef(o.number)?.repeatable;
    if (name in out) {
      const cur = out[name];
      out[name] = Array.isArray(cur) ? [...cur, v] : [cur as OptionValue, v];
    } else out[name] = repeatable ? [v] : v;
  }
  return out;
}

export class OptionInputError extends Error {
  readonly code = 'ERR_OPTION_INPUT';
}

/** Parse `msg.options` / a config JSON object into options. Accepts names or numbers as keys. */
export function objectToOptions(input: unknown): CoapOption[] {
  if (input === undefined || input === null || input === '') return [];
  if (typeof input !== 'object' || Array.isArray(input)) throw new OptionInputError('options must be an object of { "Option-Name": value }');
  const out: CoapOption[] = [];
  for (const [key, raw] of Object.entries(input as Record<string, unknown>)) {
    let num: number;
    try {
      num = optionNumber(key);
    } catch (err) {
      throw new OptionInputError((err as Error).message);
    }
    const values = Array.isArray(raw) ? raw : [raw];
    for (const v of values) {
      try {
        const value = v === true ? Buffer.alloc(0) : encodeOptionValue(num, isBufferJson(v) ? Buffer.from(v.data) : v);
        out.push({ number: num, value });
      } catch (err) {
        throw new OptionInputError(`option ${key}: ${(err as Error).message}`);
      }
    }
  }
  return out;
}

function isBufferJson(v: unknown): v is { type: 'Buffer'; data: number[] } {
  return typeof v === 'object' && v !== null && (v as { type?: string }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data);
}

export interface CoapMsgInfo {
  code: string;
  type: string;
  token: string;
  messageId: number;
  options: Record<string, OptionValue | OptionValue[] | OriginValue>;
  origin?: Origin;
  /** token of the group exchange this response belongs to */
  exchange?: string;
  /** 1-based arrival index within the exchange */
  index?: number;
  reassembled?: boolean;
  /** delivered again from the client's store after the proxy's 2.03 with its Group-ETag (groupcomm-proxy-07 §7.3) */
  revalidated?: boolean;
}

export function describeMessage(m: CoapMessage): CoapMsgInfo {
  return { code: codeToString(m.code), type: m.type, token: m.token.toString('hex'), messageId: m.messageId, options: optionsToObject(m.options) };
}

export function contentFormatOf(m: CoapMessage): number | undefined {
  const cf = m.options.find((o) => o.number === OPT.CONTENT_FORMAT);
  return cf ? (decodeOptionValue(OPT.CONTENT_FORMAT, cf.value) as number) : undefined;
}

/** The msg fields for one response of a group exchange. */
export function responseToMsg(r: GroupResponse, exchangeId: string, mode: PayloadMode): { payload: unknown; coap: CoapMsgInfo; topic: string; decodeError?: string } {
  const decoded: DecodedPayload = decodePayload(r.message.payload, contentFormatOf(r.message), mode);
  const coap: CoapMsgInfo = { ...describeMessage(r.message), origin: r.origin, exchange: exchangeId, index: r.index };
  if (r.reassembled) coap.reassembled = true;
  if ((r as { revalidated?: boolean }).revalidated) coap.revalidated = true;
  return { payload: decoded.value, coap, topic: r.origin.uri, decodeError: decoded.error };
}
