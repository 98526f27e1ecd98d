// The CoAP message model (RFC 7252 §3): type, code, message ID, token, options (kept sorted by number, repeated
// options in their original order) and payload. Plain data, so it can cross the core/node boundary unchanged.

import { OPT, decodeUint, encodeOptionValue, optionNumber } from './options';

export type MessageType = 'CON' | 'NON' | 'ACK' | 'RST';
export const TYPE_CODES: Record<MessageType, number> = { CON: 0, NON: 1, ACK: 2, RST: 3 };
export const TYPES: MessageType[] = ['CON', 'NON', 'ACK', 'RST'];

export interface CoapOption {
  number: number;
  value: Buffer;
}

export interface CoapMessage {
  type: MessageType;
  /** class << 5 | detail (0x45 = 2.05) */
  code: number;
  messageId: number;
  token: Buffer;
  options: CoapOption[];
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

export function createMessage(init: Partial<CoapMessage> & { code: number }): CoapMessage {
  return {
    type: init.type ?? 'CON',
    code: init.code,
    messageId: init.messageId ?? 0,
    token: init.token ?? EMPTY,
    options: init.options ? sortOptions(init.options.slice()) : [],
    payload: init.payload ?? EMPTY,
  };
}

/** Stable sort by number (Array.prototype.sort is stable), keeping repeated options in order. */
export function sortOptions(options: CoapOption[]): CoapOption[] {
  for (let i = 1; i < options.length; i++) {
    if (options[i].number < options[i - 1].number) return options.sort((a, b) => a.number - b.number);
  }
  return options; // already in order: the common case, without a sort
}

const num = (o: number | string): number => (typeof o === 'number' ? o : optionNumber(o));

export function getOption(msg: { options: CoapOption[] }, option: number | string): Buffer | undefined {
  const n = num(option);
  for (const o of msg.options) if (o.number === n) return o.value;
  return undefined;
}

export function getOptions(msg: { options: CoapOption[] }, option: number | string): Buffer[] {
  const n = num(option);
  return msg.options.filter((o) => o.number === n).map((o) => o.value);
}

export function hasOption(msg: { options: CoapOption[] }, option: number | string): boolean {
  return getOption(msg, option) !== undefined;
}

export function getUintOption(msg: { options: CoapOption[] }, option: number | string): number | undefined {
  const v = getOption(msg, option);
  return v === undefined ? undefined : decodeUint(v);
}

export function removeOption(msg: { options: CoapOption[] }, option: number | string): void {
  const n = num(option);
  msg.options = msg.options.filter((o) => o.number !== n);
}

/** Replace all occurrences of an option with one value (or several, for repeatable options). */
export function setOption(msg: { options: CoapOption[] }, option: number | string, ...values: unknown[]): void {
  const n = num(option);
  removeOption(msg, n);
  for (const v of values) msg.options.push({ number: n, value: encodeOptionValue(n, v) });
  sortOptions(msg.options);
}

export function addOption(msg: { options: CoapOption[] }, option: number | string, value: unknown): void {
  const n = num(option);
  msg.options.push({ number: n, value: encodeOptionValue(n, value) });
  sortOptions(msg.options);
}

export function uriPath(msg: CoapMessage): string {
  return '/' + getOptions(msg, OPT.URI_PATH).map((p) => p.toString('utf8')).join('/');
}

export function uriQuery(msg: CoapMessage): string[] {
  return getOptions(msg, OPT.URI_QUERY).map((p) => p.toString('utf8'));
}

export function cloneMessage(msg: CoapMessage): CoapMessage {
  return { ...msg, options: msg.options.map((o) => ({ number: o.number, value: o.value })) };
}
