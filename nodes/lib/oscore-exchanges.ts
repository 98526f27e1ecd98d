// What the coap-oscore-layer nodes sharing one security context keep between a request and its responses
// (RFC 8613 §8: the client keeps Token -> request data until the response is handled, the server until it has
// answered; for Observe, as long as the observation lasts, §8.1 step 6 / §8.2 step 7). Bindings are keyed by
// token: an RFC 8613 context is pairwise, so tokens in one context come from one client. No timers: entries
// expire lazily after EXCHANGE_LIFETIME, and the table is capped so a flow that never answers cannot grow it.

import type { ClientBinding, ServerBinding } from '../../src/oscore';

/** RFC 7252 §4.8.2 EXCHANGE_LIFETIME with the default transmission parameters (247 s). */
export const EXCHANGE_LIFETIME_MS = 247_000;
export const MAX_BINDINGS = 1024;

interface Entry<B> {
  binding: B;
  /** ms timestamp; Infinity for observations (they end with their last notification or when evicted) */
  expires: number;
}

export class BindingTable<B> {
  private readonly entries = new Map<string, Entry<B>>();

  constructor(
    private readonly now: () => number = Date.now,
    readonly lifetime = EXCHANGE_LIFETIME_MS,
    readonly max = MAX_BINDINGS,
  ) {}

  set(token: Buffer, binding: B, longLived = false): void {
    const key = token.toString('hex');
    this.entries.delete(key); // a reused token replaces the older exchange, and moves to the young end
    if (this.entries.size >= this.max) this.sweep();
    // Still full: drop the oldest (Map iteration order = insertion order).
    while (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { binding, expires: longLived ? Infinity : this.now() + this.lifetime });
  }

  get(token: Buffer): B | undefined {
    const key = token.toString('hex');
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.binding;
  }

  delete(token: Buffer): boolean {
    return this.entries.delete(token.toString('hex'));
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private sweep(): void {
    const t = this.now();
    for (const [k, e] of this.entries) if (e.expires <= t) this.entries.delete(k);
  }
}

/** Both directions of one context: requests this side protected (client) and requests it verified (server). */
export class OscoreExchanges {
  readonly client: BindingTable<ClientBinding>;
  readonly server: BindingTable<ServerBinding>;

  constructor(now: () => number = Date.now) {
    this.client = new BindingTable<ClientBinding>(now);
    this.server = new BindingTable<ServerBinding>(now);
  }

  clear(): void {
    this.client.clear();
    this.server.clear();
  }
}
