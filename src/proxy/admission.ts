// Admission of a request at the proxy, the checks of groupcomm-proxy-07 §5.2.1 steps 2-4 and §10 (REQ1, REQ2) as
// small functions: who the client is (an OSCORE identity, or an address proved with Echo, RFC 9175 §2.4 item 3),
// whether the allow-list admits it, Hop-Limit (RFC 8768 §3), Multicast-Timeout presence and bounds, the limits per
// host (an IP address, not address and port) with a global budget, and the amplification limit towards a source
// that is not identified (never more than 3x the bytes it sent, the limit of RFC 9000 §8.1).

import { CoapMessage, getOption } from '../coap/message';
import { OPT, decodeUint, optionNumber } from '../coap/options';
import { Clock, systemClock } from '../messaging/parameters';
// RFC 9175 §2.4 item 3: the address check itself is shared with the group server (messaging/echo-verifier.ts).
export { EchoOptions, EchoVerifier } from '../messaging/echo-verifier';
import { BadProxyRequestError, HopLimitError, LimitError, MulticastTimeoutRequiredError, MulticastTimeoutTooLargeError } from './errors';

export interface ProxyClient {
  address: string;
  port: number;
  /** OSCORE identity: oscoreClientId() of the context that removed the client's layer (hex Recipient ID[@hex ID Context]) */
  kid?: string;
}

export interface AllowRule {
  /** client address; "*" for any */
  address: string;
  port?: number;
  /** OSCORE identity the client must have (ProxyClient.kid); a client without OSCORE layer never matches */
  kid?: string;
  /** group URIs (or URI prefixes) this client may reach; empty = all */
  targets?: string[];
}

export type AllowList = AllowRule[] | ((client: ProxyClient, target: string) => boolean);

/** The key limits are kept under: the OSCORE identity, else the IP address alone (40 ports are still one host). */
export function hostOf(c: ProxyClient): string {
  return c.kid !== undefined ? `kid:${c.kid}` : `ip:${c.address}`;
}

/** groupcomm-proxy-07 §5.2.1 step 2 (REQ1): is this client allowed to reach this target? Default: nobody. */
export function isAllowed(allow: AllowList | undefined, client: ProxyClient, target: string): boolean {
  if (typeof allow === 'function') return allow(client, target);
  return (allow ?? []).some(
    (r) =>
      (r.address === '*' || r.address === client.address) &&
      (r.port === undefined || r.port === client.port) &&
      (r.kid === undefined || r.kid === client.kid) &&
      (!r.targets || r.targets.length === 0 || r.targets.some((t) => target.startsWith(t))),
  );
}

/** Is the client allow-listed for any target at all (so it may learn about targets, groupcomm-proxy-07 §5.2.1)? */
export function isAllowedAnywhere(allow: AllowList | undefined, client: ProxyClient): boolean {
  if (typeof allow === 'function') return true; // a function decides per target: target errors are its concern
  return (allow ?? []).some((r) => (r.address === '*' || r.address === client.address) && (r.port === undefined || r.port === client.port) && (r.kid === undefined || r.kid === client.kid));
}

/**
 * RFC 8768 §3: the Hop-Limit to forward with (the request's value minus one, or `initial` - 1 when absent).
 * A value that would reach 0 stops the request with 5.08 naming this proxy.
 */
export function nextHopLimit(msg: CoapMessage, initial: number, proxyName: string): number {
  const hop = getOption(msg, OPT.HOP_LIMIT);
  const value = hop === undefined ? initial : hop.length > 1 ? 0 : decodeUint(hop);
  if (value <= 1) throw new HopLimitError(proxyName);
  return value - 1;
}

/** groupcomm-proxy-07 §5.2.1 steps 3-4: T' from Multicast-Timeout; missing, over 4 bytes, or above `max` is a 4.00. */
export function readMulticastTimeout(msg: CoapMessage, max: number): number {
  const raw = getOption(msg, optionNumber('Multicast-Timeout'));
  // Step 3: 4.00 with an empty Multicast-Timeout.
  if (raw === undefined) throw new MulticastTimeoutRequiredError();
  if (raw.length > 4) throw new BadProxyRequestError('bad Multicast-Timeout');
  const t = decodeUint(raw);
  // Step 4: above the maximum: 4.00 carrying the maximum.
  if (t > max) throw new MulticastTimeoutTooLargeError(max);
  return t;
}

/** RFC 9000 §8.1: towards a source that has not been verified, send at most 3x what it sent. */
export const AMPLIFICATION_FACTOR = 3;

export function withinAmplificationLimit(bytesIn: number, bytesOut: number): boolean {
  return bytesOut <= AMPLIFICATION_FACTOR * bytesIn;
}

/** Encoded size of a message (RFC 7252 §3): exact for the header, an upper bound for option headers. */
export function encodedSizeBound(m: { token?: Buffer; options?: { number: number; value: Buffer }[]; payload?: Buffer }): number {
  let n = 4 + (m.token?.length ?? 0);
  for (const o of m.options ?? []) n += 5 + o.value.length;
  if (m.payload && m.payload.length) n += 1 + m.payload.length;
  return n;
}

/** Encoded size of a received message (RFC 7252 §3): a lower bound (one byte per option header). */
export function encodedSizeFloor(m: CoapMessage): number {
  let n = 4 + m.token.length;
  for (const o of m.options) n += 1 + o.value.length;
  if (m.payload.length) n += 1 + m.payload.length;
  return n;
}

export type LimitKind = 'pending' | 'tZero' | 'unicast' | 'observeRelays';
type SlotKind = 'pending' | 'unicast' | 'observeRelays';

export interface HostLimitOptions {
  /** group exchanges in progress per host (default 16) */
  pending?: number;
  /** T' = 0 requests per host per second (default 20) */
  tZeroPerSecond?: number;
  /** unicast forwards in progress per host (default 16) */
  unicast?: number;
  /** Observe relay registrations per host (default 16) */
  observeRelays?: number;
  /** slots over all hosts and kinds (default 20,000); beyond it every host gets 5.03 */
  global?: number;
  /** hosts tracked at once (default 10,000); beyond it new hosts get 5.03 */
  maxHosts?: number;
  clock?: Clock;
}

interface HostState {
  pending: number;
  unicast: number;
  observeRelays: number;
  tZeroWindow: number;
  tZeroCount: number;
}

/** Per-host limits and the global budget; every refusal is counted in `refused`. */
export class HostLimits {
  private readonly hosts = new Map<string, HostState>();
  private readonly clock: Clock;
  private readonly max: Required<Omit<HostLimitOptions, 'clock'>>;
  private used = 0;
  readonly refused: Record<LimitKind | 'global', number> = { pending: 0, tZero: 0, unicast: 0, observeRelays: 0, global: 0 };

  constructor(o: HostLimitOptions = {}) {
    this.clock = o.clock ?? systemClock;
    this.max = { pending: o.pending ?? 16, tZeroPerSecond: o.tZeroPerSecond ?? 20, unicast: o.unicast ?? 16, observeRelays: o.observeRelays ?? 16, global: o.global ?? 20_000, maxHosts: o.maxHosts ?? 10_000 };
  }

  /** Slots held over all hosts. */
  get inUse(): number {
    return this.used;
  }

  get trackedHosts(): number {
    return this.hosts.size;
  }

  held(host: string, kind: SlotKind): number {
    return this.hosts.get(host)?.[kind] ?? 0;
  }

  private state(host: string): HostState {
    let s = this.hosts.get(host);
    if (!s) {
      if (this.hosts.size >= this.max.maxHosts) this.sweep();
      if (this.hosts.size >= this.max.maxHosts) {
        this.refused.global++;
        throw new LimitError('hosts', 1, true);
      }
      s = { pending: 0, unicast: 0, observeRelays: 0, tZeroWindow: 0, tZeroCount: 0 };
      this.hosts.set(host, s);
    }
    return s;
  }

  /** Take one slot of `kind` for `host`, or throw LimitError (4.29, or 5.03 when the global budget is spent). */
  take(host: string, kind: SlotKind, retryAfter = 1): void {
    if (this.used >= this.max.global) {
      this.refused.global++;
      throw new LimitError('global', retryAfter, true);
    }
    const s = this.state(host);
    if (s[kind] >= this.max[kind]) {
      this.refused[kind]++;
      this.forgetIfIdle(host, s);
      throw new LimitError(kind, retryAfter);
    }
    s[kind]++;
    this.used++;
  }

  /** Give back one slot taken with take() (the caller gives back each slot once). */
  give(host: string, kind: SlotKind): void {
    const s = this.hosts.get(host);
    if (!s || s[kind] === 0) return;
    s[kind]--;
    this.used--;
    this.forgetIfIdle(host, s);
  }

  /** take(), returning the function that gives the slot back (at most once). */
  acquire(host: string, kind: SlotKind, retryAfter = 1): () => void {
    this.take(host, kind, retryAfter);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.give(host, kind);
    };
  }

  /** groupcomm-proxy-07 §5.2.1 step 6 needs no state for T' = 0, so it is limited by rate: at most N per second. */
  takeTZero(host: string): void {
    const s = this.state(host);
    const now = this.clock.now();
    if (now - s.tZeroWindow >= 1000) {
      s.tZeroWindow = now;
      s.tZeroCount = 0;
    }
    if (s.tZeroCount >= this.max.tZeroPerSecond) {
      this.refused.tZero++;
      throw new LimitError('tZero', 1);
    }
    s.tZeroCount++;
  }

  private forgetIfIdle(host: string, s: HostState): void {
    if (s.pending === 0 && s.unicast === 0 && s.observeRelays === 0 && this.clock.now() - s.tZeroWindow >= 1000) this.hosts.delete(host);
  }

  private sweep(): void {
    for (const [h, s] of this.hosts) this.forgetIfIdle(h, s);
  }
}
