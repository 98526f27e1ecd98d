// Server side of Observe notifications as multicast responses (observe-multicast-notifications-15): the phantom
// request and token T (§4.1), the 5.03 informative response to every registration (§4.2), one NON multicast
// notification per change from the server's unicast address to the group (§4.3), refresh before the latest
// notification's max age runs out, cancellation with a multicast 5.03 (§4.5), and rough counting of clients with
// Feedback-Divider (§8, App. B). Attaches to a GroupServer resource. With `security` (§9.2), the phantom request,
// every notification, last_notif and the cancellation are protected by the caller's Group OSCORE hooks.

import { EventEmitter } from 'node:events';
import { INFORMATIVE_RESPONSE_CONTENT_FORMAT, encodeInformativeResponse } from '../cbor/informative-response';
import { encode, encodeCodeOptionsPayload } from '../coap/codec';
import { CODES } from '../coap/codes';
import { CoapOption, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { GroupServer, ServerRequest, ServerResponse } from '../group/group-server';
import { Clock, unrefTimer } from '../messaging/parameters';
import type { GroupObservationSecurity, ProtectedParts } from './observe-security';

export interface GroupObservationOptions {
  server: GroupServer;
  /** the observed resource, e.g. /alarm */
  path: string;
  /** GRP_ADDR:GRP_PORT, a multicast address whose token space the server controls (not All-CoAP-Nodes) */
  group: { address: string; port: number };
  /** start the group observation on the first registration (default) or once this many traditional observers exist */
  threshold?: number;
  /** current representation */
  initial: Buffer | string;
  contentFormat?: number;
  /** seconds; the latest notification is re-sent before it grows older (default 60, RFC 7252 Max-Age default) */
  maxAge?: number;
  /** ms between two notifications (RFC 7641 §4.5.1: SHOULD NOT exceed 1 per 3 s; default 3000); later changes coalesce */
  minInterval?: number;
  /** MAX_CONFIRMATION_WAIT in ms (§8.3: 452 s) */
  confirmationWait?: number;
  /** dampener D of the counting formula (App. B: 4) */
  dampener?: number;
  /** link attributes for /.well-known/core (gp-obs is added) */
  attributes?: Record<string, string | true>;
  /** clock for minInterval, the refresh before max age and counting rounds (default: the server's) */
  clock?: Clock;
  /**
   * §9.2: protect the phantom request in group mode and every notification bound to it (Group OSCORE). The
   * registrations and the informative response are protected by the GroupServer's requestTransform.
   */
  security?: GroupObservationSecurity;
}

export interface CountEstimate {
  /** the counter before (N) and after the round */
  before: number;
  count: number;
  confirmations: number;
  divider: number;
  /** E = R * 2^Q */
  estimate: number;
}

/** Q = max(ceil(log2(N / M)), 0) with N = max(COUNT, 1) (§8.2 step 2). */
export function feedbackDivider(count: number, target: number): number {
  const n = Math.max(count, 1);
  return Math.max(Math.ceil(Math.log2(n / Math.max(target, 1))), 0);
}

/** New counter = COUNT' + (E - N) / D (§8.2 step 6). */
export function updatedCount(countNow: number, n: number, confirmations: number, divider: number, dampener: number): number {
  const e = confirmations * 2 ** divider;
  return Math.max(0, countNow + (e - n) / dampener);
}

/**
 * Events: 'registration' ({remote, count}), 'notification' ({sequence, bytes}), 'estimate' (CountEstimate),
 * 'started', 'cancelled'.
 */
export class GroupObservation extends EventEmitter {
  /** the observer counter: incremented per joining client, corrected by rough counting */
  count = 0;
  private active = false;
  private token: Buffer;
  private seq: number;
  private value: Buffer;
  private lastNotif?: Buffer;
  /** §9.2.1: the protected phantom request of the current observation and its notification protector */
  private phantom?: { bytes: Buffer; protect(n: ProtectedParts): ProtectedParts };
  private lastSentAt = 0;
  private pending?: unknown;
  private refresh?: unknown;
  private countRound?: { q: number; n: number; confirmations: number; timer: unknown; resolve: (e: CountEstimate) => void };
  private closed = false;
  private readonly clock: Clock;
  private readonly o: Required<Omit<GroupObservationOptions, 'contentFormat' | 'attributes' | 'threshold' | 'clock' | 'security'>> & GroupObservationOptions;

  constructor(opts: GroupObservationOptions) {
    super();
    // observe-multicast-notifications-15 §4.2.1.1: tpi_server names the source of the notifications, which clients
    // compare with the informative response's source; an unspecified address (0.0.0.0, ::) names no one.
    const srv = opts.server.address().address;
    if (srv === '0.0.0.0' || srv === '::' || srv === '') {
      throw new RangeError('a group observation needs a server bound to its own unicast address (tp_info cannot name 0.0.0.0 or ::)');
    }
    this.o = { maxAge: 60, minInterval: 3000, confirmationWait: 452_000, dampener: 4, ...opts };
    this.clock = opts.clock ?? opts.server.clock;
    // §9: protected notifications need protected informative responses; observers moved over from a traditional
    // observation (threshold > 1) would get theirs unprotected, so that combination is refused.
    if (opts.security && opts.threshold && opts.threshold > 1) throw new RangeError('a protected group observation starts with the first registration (threshold 1)');
    this.value = typeof opts.initial === 'string' ? Buffer.from(opts.initial) : opts.initial;
    // §4.1 step 2: the server owns the token space of (GRP_ADDR:GRP_PORT -> SRV_ADDR:SRV_PORT); any fresh token.
    this.token = opts.server.endpoint.newToken();
    this.seq = 1 + Math.floor(Math.random() * 1000);
    opts.server.addResource(opts.path, (req) => this.onRequest(req), {
      observable: true,
      attributes: { ...opts.attributes, obs: true, 'gp-obs': true },
    });
    if (!opts.threshold || opts.threshold <= 1) this.start();
  }

  get isActive(): boolean {
    return this.active;
  }

  get phantomToken(): Buffer {
    return this.token;
  }

  private representation(): ServerResponse {
    return { code: CODES.CONTENT, payload: this.value, contentFormat: this.o.contentFormat };
  }

  /** §4.1: the phantom request GET + Observe 0 on the resource, processed internally; INIT_NOTIF is prepared. */
  private start(): void {
    if (this.active) return;
    this.active = true;
    if (this.o.security) {
      // §9.2.1: protected once per observation (it uses one Sender Sequence Number); §9.2.2: ph_req is its outer form.
      const ph = this.o.security.protectPhantom(this.phantomRequestParts());
      this.phantom = { bytes: encodeCodeOptionsPayload(ph.phantom.code, sortOptions(ph.phantom.options), ph.phantom.payload), protect: ph.protectNotification };
    }
    this.lastNotif = encodeParts(this.notificationParts(this.notificationOptions()));
    this.armRefresh();
    // §4.2: existing traditional observers MAY be moved: each gets an informative response.
    for (const o of this.o.server.takeObservers(this.o.path)) {
      this.count++;
      this.o.server.endpoint.sendMessage(
        { type: 'CON', code: CODES.SERVICE_UNAVAILABLE, messageId: this.o.server.endpoint.newMessageId(o.remote), token: o.token, options: this.informativeOptions(), payload: this.informativePayload() },
        o.remote,
      );
    }
    this.emit('started');
  }

  private phantomRequestParts(): ProtectedParts {
    const options: CoapOption[] = [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }];
    for (const seg of this.o.path.split('/').filter(Boolean)) options.push({ number: OPT.URI_PATH, value: Buffer.from(seg) });
    return { code: CODES.GET, options: sortOptions(options), payload: Buffer.alloc(0) };
  }

  private phantomRequestBytes(): Buffer {
    return this.phantom?.bytes ?? encodeParts(this.phantomRequestParts());
  }

  /** A notification as sent: §9.2.3 protected with the phantom request's binding when there is security. */
  private notificationParts(options: CoapOption[], code: number = CODES.CONTENT, payload: Buffer = this.value): ProtectedParts {
    const plain = { code, options, payload };
    return this.phantom ? this.phantom.protect(plain) : plain;
  }

  private informativeOptions(): CoapOption[] {
    return sortOptions([
      { number: OPT.CONTENT_FORMAT, value: encodeUint(INFORMATIVE_RESPONSE_CONTENT_FORMAT) },
      { number: OPT.MAX_AGE, value: Buffer.alloc(0) },
    ]);
  }

  private informativePayload(): Buffer {
    const srv = this.o.server.address();
    return encodeInformativeResponse({
      tpInfo: { server: { host: srv.address, port: srv.port }, client: { host: this.o.group.address, port: this.o.group.port }, token: this.token },
      phReq: this.phantomRequestBytes(),
      lastNotif: this.lastNotif,
    });
  }

  private onRequest(req: ServerRequest): ServerResponse | undefined {
    const m = req.message;
    const obs = getOption(m, OPT.OBSERVE);
    const registering = !req.notification && (m.code === CODES.GET || m.code === CODES.FETCH) && obs !== undefined && decodeUint(obs) === 0;
    if (!registering) {
      if (m.code !== CODES.GET && m.code !== CODES.FETCH) return { code: CODES.METHOD_NOT_ALLOWED };
      return this.representation();
    }
    const fd = getOption(m, optionNumber('Feedback-Divider'));
    if (fd !== undefined && decodeUint(fd) === 0 && this.active) {
      // §8.2 step 4: a confirmation of an existing client (it asked for no response).
      if (this.countRound) this.countRound.confirmations++;
      return undefined;
    }
    if (!this.active) {
      // Below the threshold: a traditional observer (registered by GroupServer), and maybe the one that crosses it.
      const traditional = this.o.server.observerCount(this.o.path) + 1;
      if (traditional < (this.o.threshold ?? 1)) return this.representation();
      this.start();
    }
    // §4.2: no traditional observation; count the client and send the informative response (CON, separate).
    this.count++;
    this.emit('registration', { remote: req.remote, count: this.count });
    return { code: CODES.SERVICE_UNAVAILABLE, separate: true, options: this.informativeOptions(), payload: this.informativePayload() };
  }

  private notificationOptions(divider?: number): CoapOption[] {
    const options: CoapOption[] = [{ number: OPT.OBSERVE, value: encodeUint(this.seq) }];
    if (this.o.contentFormat !== undefined) options.push({ number: OPT.CONTENT_FORMAT, value: encodeUint(this.o.contentFormat) });
    if (this.o.maxAge !== 60) options.push({ number: OPT.MAX_AGE, value: encodeUint(this.o.maxAge) });
    if (divider !== undefined) options.push({ number: optionNumber('Feedback-Divider'), value: encodeUint(divider) });
    return sortOptions(options);
  }

  /** A new state of the resource: one multicast notification (coalesced to at most one per minInterval). */
  update(value: Buffer | string): void {
    if (this.closed) return;
    this.value = typeof value === 'string' ? Buffer.from(value) : value;
    if (!this.active) {
      this.o.server.notify(this.o.path); // traditional observers, if any
      return;
    }
    const wait = this.lastSentAt + this.o.minInterval - this.clock.now();
    if (wait > 0) {
      this.pending ??= this.clock.setTimeout(() => {
        this.pending = undefined;
        this.sendNotification();
      }, wait);
      return;
    }
    this.sendNotification();
  }

  /** §4.3: NON, Observe, token T, from SRV_ADDR:SRV_PORT to GRP_ADDR:GRP_PORT. Returns the Observe value. */
  private sendNotification(divider?: number): number {
    this.seq = (this.seq + 1) & 0xffffff;
    const parts = this.notificationParts(this.notificationOptions(divider));
    const ep = this.o.server.endpoint;
    const msg = { type: 'NON' as const, messageId: ep.newMessageId(this.o.group), token: this.token, ...parts, options: sortOptions(parts.options) };
    ep.transport.send(encode(msg), this.o.group);
    this.lastNotif = encodeParts(parts);
    this.lastSentAt = this.clock.now();
    this.armRefresh();
    this.emit('notification', { sequence: this.seq, bytes: this.lastNotif });
    return this.seq;
  }

  private armRefresh(): void {
    if (this.refresh !== undefined) this.clock.clearTimeout(this.refresh);
    // §4.3: send a fresh notification before the stored one is older than its max age.
    this.refresh = this.clock.setTimeout(() => {
      this.refresh = undefined;
      if (this.active && !this.closed) this.sendNotification();
    }, Math.max(1, this.o.maxAge * 1000 - 1000));
    unrefTimer(this.refresh);
  }

  /**
   * One round of rough counting (§8.2): a notification with Feedback-Divider Q for `target` confirmations, then
   * count the confirmations for `wait` ms and update the counter.
   */
  estimateObservers(target: number, wait = this.o.confirmationWait): Promise<CountEstimate> {
    if (!this.active) return Promise.reject(new Error('the group observation has not started'));
    if (this.countRound) return Promise.reject(new Error('a counting round is already running'));
    const n = Math.max(this.count, 1);
    const q = feedbackDivider(this.count, target);
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => this.finishRound(), wait);
      this.countRound = { q, n, confirmations: 0, timer, resolve };
      this.sendNotification(q);
    });
  }

  private finishRound(): void {
    const r = this.countRound;
    if (!r) return;
    this.countRound = undefined;
    const before = this.count;
    this.count = updatedCount(this.count, r.n, r.confirmations, r.q, this.o.dampener);
    const est: CountEstimate = { before, count: this.count, confirmations: r.confirmations, divider: r.q, estimate: r.confirmations * 2 ** r.q };
    this.emit('estimate', est);
    r.resolve(est);
  }

  /** §4.5: a multicast 5.03 with token T, no payload, no Observe; then all state is freed. */
  cancel(): void {
    if (!this.active) return;
    const ep = this.o.server.endpoint;
    // §9.2.4: with security the 5.03 is protected in group mode too, with its own Partial IV.
    const parts = this.notificationParts([], CODES.SERVICE_UNAVAILABLE, Buffer.alloc(0));
    ep.transport.send(encode({ type: 'NON', messageId: ep.newMessageId(this.o.group), token: this.token, ...parts, options: sortOptions(parts.options) }), this.o.group);
    this.active = false;
    this.phantom = undefined;
    this.count = 0;
    this.lastNotif = undefined;
    this.stopTimers();
    this.token = ep.newToken();
    this.emit('cancelled');
  }

  private stopTimers(): void {
    if (this.pending !== undefined) this.clock.clearTimeout(this.pending);
    if (this.refresh !== undefined) this.clock.clearTimeout(this.refresh);
    if (this.countRound) {
      this.clock.clearTimeout(this.countRound.timer);
      this.finishRound();
    }
    this.pending = this.refresh = undefined;
  }

  /** Stop serving the resource (cancelling the group observation first if active). */
  close(): void {
    if (this.closed) return;
    if (this.active) this.cancel();
    this.closed = true;
    this.stopTimers();
    this.o.server.removeResource(this.o.path);
  }
}

function encodeParts(p: ProtectedParts): Buffer {
  return Buffer.from(encodeCodeOptionsPayload(p.code, sortOptions(p.options), p.payload));
}
