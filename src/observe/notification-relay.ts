// A proxy next to a server that sends multicast notifications (multicast-notifications-proxy-02 §3): the proxy
// registers once (it counts as one observer), takes the informative response like a client, listens to the group,
// answers each of its clients with the latest notification, and relays every notification to every client over
// unicast with that client's own token. Used by GroupProxy for Observe registrations to unicast targets.

import { CODES, codeClass } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage } from '../coap/message';
import { optionNumber } from '../coap/options';
import { formatUri } from '../coap/uri';
import { Clock } from '../messaging/parameters';
import { CoapEndpoint } from '../messaging/endpoint';
import { RemoteAddress } from '../transport/udp-transport';
import { MulticastObserver, Notification } from './multicast-observer';

export interface RelayClient {
  remote: RemoteAddress;
  token: Buffer;
  /** called once when the client leaves the relay (deregistration, RST, the observation ended, close) */
  onRemoved?: () => void;
}

interface Target {
  key: string;
  observer: MulticastObserver;
  clients: Map<string, RelayClient>;
  latest?: CoapMessage;
  ready: Promise<unknown>;
}

const clientKey = (c: RelayClient) => `${c.remote.address}|${c.remote.port}|${c.token.toString('hex')}`;

export class NotificationRelay {
  private readonly targets = new Map<string, Target>();

  constructor(
    /** endpoint facing the clients */
    private readonly listen: CoapEndpoint,
    /** endpoint facing the server (its transport joins the notification group) */
    private readonly upstream: CoapEndpoint,
    private readonly opts: { groupInterface?: string; clock?: Clock } = {},
  ) {}

  get observations(): number {
    return this.targets.size;
  }

  clientCount(target?: string): number {
    if (target) return this.targets.get(target)?.clients.size ?? 0;
    let n = 0;
    for (const t of this.targets.values()) n += t.clients.size;
    return n;
  }

  /**
   * A client registered (GET + Observe 0) for `target` (coap://server/path). Resolves with the message to answer
   * it with (the latest notification on its token), or undefined when there is none yet (answer an empty ACK).
   */
  /** Upstream observations held (one per target). */
  get targetCount(): number {
    return this.targets.size;
  }

  /** Is this client (address, port, token) registered for `target`? */
  has(target: string, client: RelayClient): boolean {
    return this.targets.get(target)?.clients.has(clientKey(client)) ?? false;
  }

  async register(target: string, client: RelayClient, extraOptions: CoapOption[] = []): Promise<Partial<CoapMessage> & { code: number } | undefined> {
    let t = this.targets.get(target);
    if (!t) {
      const observer = new MulticastObserver(this.upstream, { uri: target, groupInterface: this.opts.groupInterface, options: extraOptions, ...(this.opts.clock ? { clock: this.opts.clock } : {}) });
      const created: Target = { key: target, observer, clients: new Map(), ready: Promise.resolve() };
      t = created;
      this.targets.set(target, created);
      observer.on('notification', (n: Notification) => this.fanOut(created, n));
      observer.on('cancelled', () => this.endTarget(created, true));
      observer.on('error', () => this.endTarget(created, true));
      created.ready = observer.start().catch(() => undefined);
    }
    await t.ready;
    if (this.targets.get(target) !== t) {
      client.onRemoved?.();
      return { code: CODES.BAD_GATEWAY, payload: Buffer.from('observation refused', 'utf8') };
    }
    // Joined after the upstream registration settled: the answer below carries the latest notification, and every
    // later one is relayed.
    const k = clientKey(client);
    t.clients.get(k)?.onRemoved?.();
    t.clients.set(k, client);
    if (!t.latest) return undefined;
    return { code: t.latest.code, options: t.latest.options, payload: t.latest.payload };
  }

  /** A client cancelled (GET + Observe 1, or RST to a relayed notification). */
  deregister(target: string, client: RelayClient): void {
    this.remove(target, clientKey(client));
  }

  private remove(target: string, key: string): void {
    const t = this.targets.get(target);
    if (!t) return;
    t.clients.get(key)?.onRemoved?.();
    t.clients.delete(key);
    if (t.clients.size === 0) {
      t.observer.cancel();
      this.targets.delete(target);
    }
  }

  private fanOut(t: Target, n: Notification): void {
    // MNP-02 §5: the proxy answers Feedback-Divider itself (its MulticastObserver did, counting as one client) and
    // strips the option before relaying, also from the copy it answers new clients with.
    const fd = optionNumber('Feedback-Divider');
    const options = n.message.options.filter((o) => o.number !== fd);
    t.latest = { ...n.message, options };
    for (const [key, c] of t.clients) {
      const msg = createMessage({ type: 'NON', code: n.message.code, token: c.token, messageId: this.listen.newMessageId(c.remote), options, payload: n.message.payload });
      // RFC 7641 §3.6: a RST from that client (and only from it: the message layer matches the peer) cancels.
      this.listen.sendMessage(msg, c.remote, { onReset: () => this.remove(t.key, key) });
    }
    if (codeClass(n.message.code) !== 2) this.endTarget(t, false);
  }

  private endTarget(t: Target, notifyClients: boolean): void {
    if (!this.targets.has(t.key)) return;
    this.targets.delete(t.key);
    for (const c of t.clients.values()) c.onRemoved?.();
    if (notifyClients) {
      // The observation ended upstream: a 5.03 without Observe ends it at each client too (RFC 7641 §3.2).
      for (const c of t.clients.values()) {
        this.listen.sendMessage(createMessage({ type: 'NON', code: CODES.SERVICE_UNAVAILABLE, token: c.token, messageId: this.listen.newMessageId(c.remote) }), c.remote);
      }
    }
    t.observer.cancel();
  }

  close(): void {
    for (const t of [...this.targets.values()]) {
      this.targets.delete(t.key);
      for (const c of t.clients.values()) c.onRemoved?.();
      t.observer.cancel();
    }
  }
}

export function targetKey(uri: { host: string; port: number; path: string[]; query: string[]; zone?: string }): string {
  return formatUri({ scheme: 'coap', host: uri.host, zone: uri.zone, port: uri.port, path: uri.path, query: uri.query });
}
