// The proxy's side of the ticket request of multicast-notifications-proxy-02 §4: the last proxy before the server
// does not forward a ticket (oscore-capable-proxies-07 §2.4 step 4); it checks it, joins tpi_client, listens for
// tpi_token from tpi_server (observe-multicast-notifications-15 §5.2) and relays every multicast notification to
// each ticket holder on that holder's own token. The client's side is observe/ticket-request.ts.

import { EventEmitter } from 'node:events';
import { TpInfoUdp } from '../cbor/informative-response';
import { decodeCodeOptionsPayload, encodeCodeOptionsPayload } from '../coap/codec';
import { CODES, codeClass } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { CoapUri, formatUri, isMulticastAddress, parseUri, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingResponse, ResponseContext } from '../messaging/endpoint';
import { Clock, systemClock } from '../messaging/parameters';
import { RemoteAddress } from '../transport/udp-transport';
import { isFresher } from './multicast-observer';
import { PROXY_OPTIONS, TicketError, TicketParts, decodeLtmr, isTicketRequest, ltmrNumber } from './ticket-request';

export interface TicketHolder {
  remote: RemoteAddress;
  token: Buffer;
  /** wraps every message relayed to this client (e.g. the proxy's OSCORE layers for it) */
  protect?: (m: TicketParts) => { code: number; options?: CoapOption[]; payload?: Buffer } | undefined;
}

interface Observation {
  key: string;
  tp: TpInfoUdp;
  /** transport-independent bytes of the rebuilt phantom request */
  phantom: Buffer;
  clients: Map<string, TicketHolder>;
  latest?: CoapMessage;
  last?: { seq: number; at: number };
  stopListen?: () => void;
  ready: Promise<void>;
  failed?: Error;
  ended: boolean;
  timers: Set<unknown>;
}

export interface TicketListenerOptions {
  /** interface for joining the groups (IPv4 address or ::%if); default 127.0.0.1 / ::%lo */
  groupInterface?: string;
  /** most observations listened to at once (default 64): more tickets get 5.03 */
  maxObservations?: number;
  /** answer Feedback-Divider polls on the proxy's behalf when the phantom request is unprotected (default true) */
  answerFeedback?: boolean;
  /** leisure before answering a poll, ms (default 5000, RFC 7252 DEFAULT_LEISURE) */
  leisure?: number;
  /** timers and time (tests pass a FakeClock) */
  clock?: Clock;
}

export interface TicketCounters {
  tickets: number;
  rejected: number;
  relayed: number;
  deregistrations: number;
  resets: number;
  feedback: number;
}

const holderKey = (remote: RemoteAddress, token: Buffer) => `${remote.address}|${remote.port}|${token.toString('hex')}`;
const obsKey = (tp: TpInfoUdp) => `${tp.server.host}|${tp.server.port}|${tp.client.host}|${tp.client.port}|${tp.token.toString('hex')}`;

/**
 * Proxy side of MNP-02 §4: one group listener per (tpi_server, tpi_client, tpi_token), shared by every client that
 * presented a ticket for it. Events: 'ticket' ({client, key}), 'ended' ({key, reason}), 'rejected' ({client, token,
 * code, reason}: the details of a refused ticket, which its error response does not carry).
 */
export class TicketListener extends EventEmitter {
  readonly counters: TicketCounters = { tickets: 0, rejected: 0, relayed: 0, deregistrations: 0, resets: 0, feedback: 0 };
  private readonly observations = new Map<string, Observation>();
  /** client (remote + token) -> observation key */
  private readonly holders = new Map<string, string>();
  /** group membership reference counts, per group address (one join per port on the upstream transport) */
  private readonly memberships = new Map<string, { ports: Map<number, Promise<void>>; refs: number }>();
  private closed = false;
  private get clock(): Clock {
    return this.opts.clock ?? systemClock;
  }

  constructor(
    /** endpoint facing the clients */
    private readonly listen: CoapEndpoint,
    /** endpoint facing the server: its transport joins the groups */
    private readonly upstream: CoapEndpoint,
    private readonly opts: TicketListenerOptions = {},
  ) {
    super();
  }

  get observationCount(): number {
    return this.observations.size;
  }

  clientCount(): number {
    return this.holders.size;
  }

  /** What the proxy listens to: per observation, tp_info, the rebuilt phantom request and the ticket holders. */
  listening(): { key: string; tpInfo: TpInfoUdp; phantom: Buffer; clients: RemoteAddress[]; latest?: CoapMessage }[] {
    return [...this.observations.values()].map((o) => ({ key: o.key, tpInfo: o.tp, phantom: o.phantom, clients: [...o.clients.values()].map((c) => c.remote), latest: o.latest }));
  }

  /** True for a ticket request, and for a deregistration (Observe 1) on a token that holds a ticket. */
  wants(msg: CoapMessage, remote: RemoteAddress): boolean {
    if (isTicketRequest(msg)) return true;
    const obs = getOption(msg, OPT.OBSERVE);
    // RFC 7641 §2: Observe is 0-3 bytes; anything longer is not a deregistration
    return obs !== undefined && obs.length <= 3 && decodeUint(obs) === 1 && this.holders.has(holderKey(remote, msg.token));
  }

  /**
   * Handle a request `wants` accepted. The ticket is never forwarded. `ctx` answers the client (an empty ACK, the
   * latest notification, or an error); `protect` wraps each relayed notification for this client.
   */
  handle(req: { message: CoapMessage; remote: RemoteAddress }, ctx: ResponseContext, protect?: TicketHolder['protect']): void {
    const m = req.message;
    const key = holderKey(req.remote, m.token);
    if (!isTicketRequest(m)) {
      // Deregistration (RFC 7641 §3.6) on the ticket's token: leave, answer with the latest state if known.
      this.counters.deregistrations++;
      const obs = this.observations.get(this.holders.get(key) ?? '');
      this.removeHolder(key);
      if (obs?.latest) ctx.respond({ code: obs.latest.code, options: stripForRelay(obs.latest.options).filter((o) => o.number !== OPT.OBSERVE), payload: obs.latest.payload });
      else ctx.ignore();
      return;
    }
    let tp: TpInfoUdp;
    let phantom: Buffer;
    try {
      ({ tp, phantom } = this.validate(m));
    } catch (err) {
      this.counters.rejected++;
      const e = err instanceof TicketError ? err : new TicketError((err as Error).message, 'ERR_TICKET');
      // The response carries the fixed diagnostic only; the details (which may quote the client's LTMR, MNP-02
      // §4.1) go to the local 'rejected' event.
      this.emit('rejected', { client: req.remote, token: m.token.toString('hex'), code: e.responseCode, reason: e.message });
      ctx.respond({ code: e.responseCode, payload: Buffer.from(e.diagnostic, 'utf8') });
      return;
    }
    const k = obsKey(tp);
    let obs = this.observations.get(k);
    if (obs && !obs.phantom.equals(phantom)) {
      this.counters.rejected++;
      ctx.respond({ code: CODES.BAD_REQUEST, payload: Buffer.from('the ticket names an observation the proxy listens to with another phantom request') });
      return;
    }
    if (!obs) {
      if (this.observations.size >= (this.opts.maxObservations ?? 64)) {
        this.counters.rejected++;
        ctx.respond({ code: CODES.SERVICE_UNAVAILABLE, payload: Buffer.from('too many observations at this proxy') });
        return;
      }
      obs = this.open(k, tp, phantom);
    }
    // A client that re-registers on the same token (RFC 7641 §4.1) may switch observations.
    const prev = this.holders.get(key);
    if (prev && prev !== k) this.removeHolder(key);
    const target = obs;
    const holder: TicketHolder = { remote: req.remote, token: m.token, protect };
    target.ready.then(() => {
      if (this.closed || target.ended || target.failed) {
        // fixed text: the join error names the client's tpi_client (the 'ended' event keeps the details)
        ctx.respond({ code: CODES.SERVICE_UNAVAILABLE, payload: Buffer.from(target.failed ? 'the proxy cannot listen to that group' : 'the observation ended') });
        return;
      }
      this.counters.tickets++;
      target.clients.set(key, holder);
      this.holders.set(key, k);
      this.emit('ticket', { client: req.remote, key: k });
      // MNP-02 §3-§4: the latest notification if one is known, else an empty ACK.
      if (!target.latest) return ctx.ignore();
      const parts = this.wrap(holder, { code: target.latest.code, options: stripForRelay(target.latest.options), payload: target.latest.payload });
      if (parts) ctx.respond(parts);
      else ctx.ignore();
    });
  }

  /** The checks of MNP-02 §4; returns tp_info and the rebuilt phantom request. */
  private validate(m: CoapMessage): { tp: TpInfoUdp; phantom: Buffer } {
    const obsOpt = getOption(m, OPT.OBSERVE);
    if ((m.code !== CODES.GET && m.code !== CODES.FETCH) || obsOpt === undefined || obsOpt.length > 3 || decodeUint(obsOpt) !== 0) {
      throw new TicketError('Listen-To-Multicast-Responses is only valid in a GET or FETCH with Observe 0', 'ERR_NOT_REGISTRATION', CODES.BAD_REQUEST, 'Listen-To-Multicast-Responses is only valid in a GET or FETCH with Observe 0');
    }
    if (m.token.length > 8) throw new TicketError('a token has at most 8 bytes', 'ERR_TOKEN', CODES.BAD_REQUEST, 'a token has at most 8 bytes');
    const tp = decodeLtmr(getOption(m, ltmrNumber())!);
    if (!isMulticastAddress(tp.client.host)) throw new TicketError(`tpi_client ${tp.client.host} is not a multicast address`, 'ERR_TP_INFO', CODES.BAD_REQUEST, 'tpi_client is not a multicast address');
    if (isMulticastAddress(tp.server.host)) throw new TicketError(`tpi_server ${tp.server.host} is a multicast address`, 'ERR_TP_INFO', CODES.BAD_REQUEST, 'tpi_server is a multicast address');
    const v6 = this.upstream.transport.family === 'udp6';
    if (tp.client.host.includes(':') !== v6) throw new TicketError(`this proxy cannot listen to ${tp.client.host} (its upstream is ${this.upstream.transport.family})`, 'ERR_TP_INFO', CODES.BAD_GATEWAY, 'this proxy cannot listen to a group of that address family');
    // The target (which the allow-list checked) must be the server that sends the notifications.
    const target = ticketTarget(m);
    if (target.host !== tp.server.host || target.port !== tp.server.port) {
      throw new TicketError(`tpi_server ${tp.server.host}:${tp.server.port} is not the target ${target.host}:${target.port}`, 'ERR_TP_INFO', CODES.BAD_REQUEST, 'tpi_server is not the target');
    }
    // MNP-02 §4: strip the proxy options and LTMR and rebuild the phantom request (Uri-* from Proxy-Uri). An Echo
    // answered this proxy's own challenge (RFC 9175 §2.2.1: per hop), so it is no part of ph_req either: with it,
    // a client whose address had to be verified would name another phantom request than the clients before it.
    const ltmr = ltmrNumber();
    const options = m.options.filter((o) => o.number !== ltmr && o.number !== OPT.ECHO && !PROXY_OPTIONS.includes(o.number));
    if (getOption(m, OPT.PROXY_URI) !== undefined) options.push(...uriToOptions(target).filter((o) => o.number === OPT.URI_PATH || o.number === OPT.URI_QUERY));
    let phantom: Buffer;
    try {
      phantom = encodeCodeOptionsPayload(m.code, sortOptions(options), m.payload);
      decodeCodeOptionsPayload(phantom);
    } catch (err) {
      throw new TicketError(`the phantom request cannot be rebuilt: ${(err as Error).message}`, 'ERR_PH_REQ', CODES.BAD_REQUEST, 'the phantom request cannot be rebuilt');
    }
    return { tp, phantom };
  }

  private open(k: string, tp: TpInfoUdp, phantom: Buffer): Observation {
    const obs: Observation = { key: k, tp, phantom, clients: new Map(), ready: Promise.resolve(), ended: false, timers: new Set() };
    this.observations.set(k, obs);
    obs.ready = (async () => {
      try {
        await this.join(tp.client.host, tp.client.port);
        if (obs.ended) return;
        // The phantom token T, from SRV_ADDR:SRV_PORT only (OMN-15 §5.2 step 2.4).
        obs.stopListen = this.upstream.listen(tp.token, (res) => this.onNotification(obs, res), { address: tp.server.host, port: tp.server.port });
      } catch (err) {
        obs.failed = err as Error;
        this.end(obs, 'listen failed');
      }
    })();
    return obs;
  }

  private async join(address: string, port: number): Promise<void> {
    let m = this.memberships.get(address);
    if (!m) {
      m = { ports: new Map(), refs: 0 };
      this.memberships.set(address, m);
    }
    m.refs++;
    let joining = m.ports.get(port);
    if (!joining) {
      const transport = this.upstream.transport;
      if (typeof transport.joinGroup !== 'function') throw new Error('the upstream transport cannot join groups');
      joining = transport.joinGroup({ address, port, interfaces: [this.opts.groupInterface ?? (address.includes(':') ? '::%lo' : '127.0.0.1')] });
      m.ports.set(port, joining);
    }
    await joining;
  }

  private leave(address: string): void {
    const m = this.memberships.get(address);
    if (!m) return;
    if (--m.refs > 0) return;
    this.memberships.delete(address);
    const transport = this.upstream.transport;
    for (const [port, joining] of m.ports) void joining.catch(() => undefined).then(() => transport.leaveGroup?.(address, port));
  }

  private onNotification(obs: Observation, res: IncomingResponse): void {
    if (obs.ended) return;
    const m = res.message;
    const obsOpt = getOption(m, OPT.OBSERVE);
    if (obsOpt !== undefined && codeClass(m.code) === 2) {
      const seq = decodeUint(obsOpt);
      const now = this.clock.now();
      if (obs.last && !isFresher(obs.last.seq, obs.last.at, seq, now)) return; // RFC 7641 §3.4: stale
      obs.last = { seq, at: now };
      obs.latest = m;
      const fd = getOption(m, optionNumber('Feedback-Divider'));
      if (fd !== undefined && fd.length <= 1) this.answerPoll(obs, decodeUint(fd));
    }
    const parts: TicketParts = { code: m.code, options: stripForRelay(m.options), payload: m.payload };
    for (const [key, c] of obs.clients) {
      const p = this.wrap(c, parts);
      if (!p) continue;
      const msg = createMessage({ type: 'NON', code: p.code, token: c.token, messageId: this.listen.newMessageId(c.remote), options: p.options, payload: p.payload });
      this.counters.relayed++;
      // RFC 7641 §3.6: a RST from that holder (the message layer matches the peer) removes it.
      this.listen.sendMessage(msg, c.remote, {
        onReset: () => {
          if (!this.holders.has(key)) return;
          this.counters.resets++;
          this.removeHolder(key);
        },
      });
    }
    // OMN-15 §4.5: the multicast 5.03 (no Observe) ends the group observation; so does any other error (RFC 7641 §3.2).
    if (codeClass(m.code) !== 2) this.end(obs, 'cancelled by the server', false);
  }

  /**
   * MNP-02 §5: the proxy answers Feedback-Divider itself (it counts as one client): with probability 2^-Q, after
   * a random part of the leisure, the rebuilt phantom request with No-Response 26 and an empty Feedback-Divider.
   * Not possible when the phantom request is protected end to end (the proxy would never see the option anyway).
   */
  private answerPoll(obs: Observation, q: number): void {
    if (this.opts.answerFeedback === false) return;
    const ph = decodeCodeOptionsPayload(obs.phantom);
    if (ph.options.some((o) => o.number === OPT.OSCORE)) return;
    if (Math.floor(Math.random() * 2 ** Math.min(q, 30)) !== 0) return;
    const t = this.clock.setTimeout(() => {
      obs.timers.delete(t);
      if (obs.ended || this.closed) return;
      const token = this.upstream.newToken();
      const fd = optionNumber('Feedback-Divider');
      const options = ph.options.filter((o) => o.number !== fd && o.number !== OPT.NO_RESPONSE);
      options.push({ number: OPT.NO_RESPONSE, value: encodeUint(26) }, { number: fd, value: Buffer.alloc(0) });
      this.counters.feedback++;
      const server = { address: obs.tp.server.host, port: obs.tp.server.port };
      this.upstream.sendMessage(createMessage({ type: 'NON', code: ph.code, token, messageId: this.upstream.newMessageId(server), options, payload: ph.payload }), server);
      this.upstream.retireToken(token);
    }, Math.random() * (this.opts.leisure ?? 5000));
    obs.timers.add(t);
  }

  private wrap(c: TicketHolder, parts: TicketParts): TicketParts | undefined {
    if (!c.protect) return parts;
    try {
      const p = c.protect(parts);
      return p && { code: p.code, options: p.options ?? [], payload: p.payload ?? Buffer.alloc(0) };
    } catch {
      return undefined; // nothing goes out unprotected
    }
  }

  private removeHolder(key: string): void {
    const k = this.holders.get(key);
    this.holders.delete(key);
    if (k === undefined) return;
    const obs = this.observations.get(k);
    if (!obs) return;
    obs.clients.delete(key);
    // The last client left: stop listening and leave the group.
    if (obs.clients.size === 0) this.end(obs, 'no clients left');
  }

  private end(obs: Observation, reason: string, notify = false): void {
    if (obs.ended) return;
    obs.ended = true;
    if (this.observations.get(obs.key) === obs) this.observations.delete(obs.key);
    for (const t of obs.timers) this.clock.clearTimeout(t);
    obs.timers.clear();
    obs.stopListen?.();
    obs.stopListen = undefined;
    for (const key of obs.clients.keys()) if (this.holders.get(key) === obs.key) this.holders.delete(key);
    if (notify) {
      for (const c of obs.clients.values()) {
        const p = this.wrap(c, { code: CODES.SERVICE_UNAVAILABLE, options: [], payload: Buffer.alloc(0) });
        if (p) this.listen.sendMessage(createMessage({ type: 'NON', code: p.code, token: c.token, messageId: this.listen.newMessageId(c.remote), options: p.options, payload: p.payload }), c.remote);
      }
    }
    obs.clients.clear();
    // Leave once the join has settled (join() took the reference even when it failed).
    void obs.ready.then(() => this.leave(obs.tp.client.host));
    this.emit('ended', { key: obs.key, reason });
  }

  /** Stop listening everywhere; with `notifyClients`, each client gets a 5.03 (its observation ended). */
  close(notifyClients = false): void {
    if (this.closed) return;
    for (const obs of [...this.observations.values()]) this.end(obs, 'closed', notifyClients);
    this.closed = true;
  }
}

/** The target of a ticket: Proxy-Uri, or Proxy-Scheme with Uri-Host / Uri-Port. */
export function ticketTarget(m: CoapMessage): CoapUri {
  const pu = getOption(m, OPT.PROXY_URI);
  if (pu !== undefined) {
    try {
      return parseUri(pu.toString('utf8'));
    } catch (err) {
      throw new TicketError(`bad Proxy-Uri: ${(err as Error).message}`, 'ERR_TARGET', CODES.BAD_REQUEST, 'bad Proxy-Uri');
    }
  }
  const ps = getOption(m, OPT.PROXY_SCHEME);
  const host = getOption(m, OPT.URI_HOST);
  if (ps === undefined || host === undefined) throw new TicketError('a ticket request needs Proxy-Uri, or Proxy-Scheme with Uri-Host', 'ERR_TARGET', CODES.BAD_REQUEST, 'a ticket request needs Proxy-Uri, or Proxy-Scheme with Uri-Host');
  const port = getOption(m, OPT.URI_PORT);
  const h = host.toString('utf8').replace(/^\[|\]$/g, '');
  try {
    return parseUri(formatUri({ scheme: ps.toString('utf8'), host: h, port: port === undefined || port.length > 2 ? undefined : decodeUint(port) }));
  } catch (err) {
    throw new TicketError(`bad ticket target: ${(err as Error).message}`, 'ERR_TARGET', CODES.BAD_REQUEST, 'bad ticket target');
  }
}

/** MNP-02 §5: Feedback-Divider is answered by the proxy and never relayed. */
function stripForRelay(options: CoapOption[]): CoapOption[] {
  const fd = optionNumber('Feedback-Divider');
  return options.filter((o) => o.number !== fd);
}
