// The data of the live group view (the editor sidebar tab of nodes/coap-group-view.html): what each
// coap-group-request and coap-group-proxy node saw in its recent exchanges, published to the editor over
// RED.comms on the topic `coap-group-view/<node id>`. Nodes feed it with one-line calls; the core knows nothing
// of it. Everything kept is bounded (exchanges per node, members per exchange) because responders are remote.

import { Clock, systemClock } from '../../src/messaging/parameters';
import type { NodeAPI } from './red';

export const VIEW_TOPIC = 'coap-group-view';
/** exchanges kept per node */
export const MAX_EXCHANGES = 12;
/** distinct members kept per exchange; more are counted in `overflow` */
export const MAX_MEMBERS = 64;
/** the editor gets at most one update per node in this many ms */
export const PUBLISH_INTERVAL = 250;

export interface MemberCell {
  /** origin URI of the member, e.g. coap://127.0.0.2:5683 */
  member: string;
  /** response code of its first response ("2.05"), or the error a proxy answered with */
  code: string;
  /** ms from the request to this member's first response */
  latency: number;
  /** responses from this member in this exchange (notifications, duplicates) */
  count: number;
}

export interface ExchangeView {
  id: string;
  target: string;
  /** ms since the epoch */
  started: number;
  ended: boolean;
  cancelled?: boolean;
  /** for a proxy exchange, the client that asked */
  client?: string;
  cells: MemberCell[];
  /** members seen in this node's recent exchanges (or configured) that did not answer this one; set when it ended */
  missing: string[];
  /** responses from members beyond MAX_MEMBERS */
  overflow: number;
  /** answers that are not a member's (a proxy's 4.01 or 5.05): code and reason */
  errors: { code: string; reason: string }[];
}

export interface ProxyCountersView {
  active: number;
  relayed: number;
  rejected: number;
  /** responses dropped by the relay rate limit plus requests refused with 4.29 */
  rateLimited: number;
}

export interface NodeView {
  id: string;
  kind: 'request' | 'proxy';
  name: string;
  exchanges: ExchangeView[];
  counters?: ProxyCountersView;
  updated: number;
}

/** What coap-group-proxy hands over per proxy event (the shape of the core's ProxyEvent it needs). */
export interface ProxyEventLike {
  kind: string;
  client: { address: string; port: number };
  token: string;
  target?: string;
  code?: string;
  origin?: { address: string; port: number };
  reason?: string;
}

function originText(o: { address: string; port: number }): string {
  return o.address.includes(':') ? `coap://[${o.address}]:${o.port}` : `coap://${o.address}:${o.port}`;
}

export class GroupView {
  private readonly exchanges: ExchangeView[] = [];
  /** ids of the kept exchanges */
  private readonly kept = new Set<string>();
  private counters?: ProxyCountersView;
  private rejected429 = 0;
  private timer?: unknown;
  private dirty = false;
  private closed = false;

  constructor(
    private readonly RED: Pick<NodeAPI, 'comms'>,
    private readonly node: { id: string; name?: string },
    private readonly kind: 'request' | 'proxy',
    private readonly clock: Clock = systemClock,
  ) {}

  get topic(): string {
    return `${VIEW_TOPIC}/${this.node.id}`;
  }

  /** A request went out (a group request node) or came in (a proxy). */
  started(id: string, target: string, client?: { address: string; port: number }): void {
    if (this.closed) return;
    this.exchanges.push({ id, target, started: this.clock.now(), ended: false, client: client ? originText(client) : undefined, cells: [], missing: [], overflow: 0, errors: [] });
    this.kept.add(id);
    while (this.exchanges.length > MAX_EXCHANGES) this.kept.delete(this.exchanges.shift()!.id);
    this.changed();
  }

  /** One response of a member. */
  response(id: string, member: string, code: string): void {
    const ex = this.find(id);
    if (!ex) return;
    const cell = ex.cells.find((c) => c.member === member);
    if (cell) cell.count++;
    else if (ex.cells.length >= MAX_MEMBERS) ex.overflow++;
    else ex.cells.push({ member, code, latency: this.clock.now() - ex.started, count: 1 });
    this.changed();
  }

  /** An answer that is not from a member (a proxy's error), kept as text with a code. */
  error(id: string, code: string, reason: string): void {
    const ex = this.find(id);
    if (!ex || ex.errors.length >= 8) return;
    ex.errors.push({ code, reason: reason.slice(0, 120) });
    this.changed();
  }

  /** The exchange is over: whoever was expected and did not answer is missing; a proxy's errors are kept. */
  ended(id: string, summary: { cancelled?: boolean; errors?: { code?: string; error: string }[] } = {}): void {
    const ex = this.find(id);
    if (!ex || ex.ended) return;
    for (const e of summary.errors ?? []) this.error(id, e.code ?? '', e.error);
    ex.ended = true;
    ex.cancelled = summary.cancelled || undefined;
    const answered = new Set(ex.cells.map((c) => c.member));
    ex.missing = this.members(ex.target).filter((m) => !answered.has(m));
    this.changed();
  }

  /** coap-group-proxy: one proxy event and the proxy's counters, as one call. */
  proxyEvent(e: ProxyEventLike, counters: { relayed: number; rejected: number; rateDropped: number }, active: number): void {
    if (this.closed) return;
    const id = `${e.client.address}|${e.client.port}|${e.token}`;
    if (e.kind === 'request') this.started(id, e.target ?? '', e.client);
    else if (e.kind === 'response' && e.origin) this.response(id, originText(e.origin), e.code ?? '');
    else if (e.kind === 'reject') {
      if (e.code === '4.29') this.rejected429++;
      if (!this.find(id)) this.started(id, e.target ?? '', e.client);
      this.error(id, e.code ?? '', e.reason ?? '');
      this.ended(id);
    } else if (e.kind === 'end') this.ended(id);
    this.counters = { active, relayed: counters.relayed, rejected: counters.rejected, rateLimited: counters.rateDropped + this.rejected429 };
    this.changed();
  }

  /** The data the editor gets. */
  snapshot(): NodeView {
    return { id: this.node.id, kind: this.kind, name: this.node.name || '', exchanges: this.exchanges.map((e) => ({ ...e, cells: e.cells.map((c) => ({ ...c })), missing: [...e.missing], errors: [...e.errors] })), counters: this.counters && { ...this.counters }, updated: this.clock.now() };
  }

  /** Node closed: stop publishing; when removed, the editor drops the node from the view. */
  close(removed: boolean): void {
    this.closed = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    if (removed) this.RED.comms.publish(this.topic, null, false);
    else if (this.dirty) this.publish();
  }

  /** Members of a target group as far as this node knows: those that answered any kept exchange to it. */
  private members(target: string): string[] {
    const all = new Set<string>();
    for (const ex of this.exchanges) if (ex.target === target) for (const c of ex.cells) all.add(c.member);
    return [...all];
  }

  private find(id: string): ExchangeView | undefined {
    if (this.closed || !this.kept.has(id)) return undefined;
    for (let i = this.exchanges.length - 1; i >= 0; i--) if (this.exchanges[i].id === id) return this.exchanges[i];
    return undefined;
  }

  private changed(): void {
    this.dirty = true;
    if (this.timer !== undefined || this.closed) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.publish();
    }, PUBLISH_INTERVAL);
  }

  private publish(): void {
    this.dirty = false;
    // retained, so an editor opened later shows the last state
    this.RED.comms.publish(this.topic, this.snapshot(), true);
  }
}
