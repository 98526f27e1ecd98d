// Request-response binding (RFC 8613 §7.1, §8): what each side keeps between a request and its responses. Both
// sides need the request's kid and Partial IV (they go into every response's AAD, §5.4) and its nonce (reused by a
// response without Partial IV, §5.2). The server also tracks whether the request nonce may still be reused; the
// client tracks which responses it has accepted (one, or a Notification Number for Observe, §7.4.1).

import type { CanProtect, RequestContext, ResponseContext } from './capabilities';
import { NotificationTracker, ResponseAcceptance } from './replay';

export interface RequestBindingInit<C extends CanProtect = RequestContext> {
  context: C;
  /** request_kid: the client's Sender ID as carried in the request */
  kid: Buffer;
  /** request_piv: the request's Partial IV bytes as carried */
  piv: Buffer;
  /** the AEAD nonce of the request */
  nonce: Buffer;
  kidContext?: Buffer;
  /** the request registered an observation (Observe = 0 reached the server end-to-end) */
  observe: boolean;
  /** the Class I options every response binds (RFC 8613 §5.4 'options'), encoded */
  classI?: Buffer;
  /**
   * the Request-Hash of a Deterministic Request (draft-ietf-core-cacheable-oscore-02 §3.3, §3.4.4): its responses
   * are cacheable (outer 2.05 and Max-Age), always carry a Partial IV, and bind the value as a Class I option
   */
  requestHash?: Buffer;
}

abstract class RequestBinding<C extends CanProtect> {
  readonly context: C;
  readonly kid: Buffer;
  readonly piv: Buffer;
  readonly nonce: Buffer;
  readonly kidContext?: Buffer;
  readonly observe: boolean;
  readonly classI?: Buffer;
  readonly requestHash?: Buffer;

  constructor(init: RequestBindingInit<C>) {
    this.context = init.context;
    this.kid = init.kid;
    this.piv = init.piv;
    this.nonce = init.nonce;
    if (init.kidContext) this.kidContext = init.kidContext;
    this.observe = init.observe;
    if (init.classI) this.classI = init.classI;
    if (init.requestHash) this.requestHash = init.requestHash;
  }
}

/** Kept by the client from protectRequest() until the exchange (or observation) ends (§8.1 step 6). */
export class ClientBinding extends RequestBinding<RequestContext> {
  /** accept several responses (e.g. through a proxy, oscore-capable-proxies-07 §2.6.1), each fresh by Partial IV */
  readonly multipleResponses: boolean;
  /**
   * One Notification Number per responding server (RFC 10021 §5.1, §5.3.1 "Response Number"); an RFC 8613 context
   * has one responder. Bounded by the number of Recipient Contexts the context has.
   */
  private readonly trackers?: Map<string, NotificationTracker>;
  private readonly trackerOpts: { size?: number; onlyNewer?: boolean };
  private finished = false;
  private accepted = 0;

  constructor(init: RequestBindingInit & { multipleResponses?: boolean; onlyNewerNotifications?: boolean; notificationWindow?: number }) {
    super(init);
    this.multipleResponses = init.multipleResponses ?? false;
    this.trackerOpts = { size: init.notificationWindow, onlyNewer: init.onlyNewerNotifications };
    if (this.observe || this.multipleResponses) this.trackers = new Map();
  }

  private tracker(responder: string): NotificationTracker {
    let t = this.trackers!.get(responder);
    if (!t) this.trackers!.set(responder, (t = new NotificationTracker(this.trackerOpts)));
    return t;
  }

  /** §7.4: a non-notification response ends the binding; only one is accepted. */
  get done(): boolean {
    return this.finished;
  }

  get responsesAccepted(): number {
    return this.accepted;
  }

  /** The Notification Number (§4.1.3.5.2): highest Partial IV accepted on this binding (from `responder`, hex Recipient ID; default: the only or first one). */
  notificationNumberOf(responder?: string): number | undefined {
    if (!this.trackers) return undefined;
    const t = responder !== undefined ? this.trackers.get(responder) : this.trackers.values().next().value;
    return t?.notificationNumber;
  }

  get notificationNumber(): number | undefined {
    return this.notificationNumberOf();
  }

  /** @internal replay check before decryption; `tracked` = the response belongs to a multi-response stream */
  checkResponse(piv: number | undefined, tracked: boolean, responder = ''): void {
    if (tracked) this.trackers!.get(responder)?.check(piv);
  }

  /** @internal after successful decryption */
  acceptResponse(piv: number | undefined, tracked: boolean, responder = ''): ResponseAcceptance {
    this.accepted++;
    if (tracked) return this.tracker(responder).accept(piv);
    this.finished = true;
    return { newest: true };
  }

  /** End the binding, e.g. when the observation is cancelled. */
  finish(): void {
    this.finished = true;
  }

  /** @internal whether a response of this kind belongs to the tracked stream */
  tracks(notification: boolean): boolean {
    return this.trackers !== undefined && (notification || this.multipleResponses);
  }
}

/** Kept by the server from unprotectRequest() until all responses to the request are sent (§7.1). */
export class ServerBinding extends RequestBinding<ResponseContext> {
  /** false when the request's freshness is unknown (replay window not initialized, App. B.1.2) */
  readonly requestFresh: boolean;
  /**
   * a Deterministic Request with an Inner Observe but no Outer one (draft-ietf-core-cacheable-oscore-02 §3.1): no
   * observation, but a successful response of an observable resource carries an Inner Observe (§3.4.4 steps 3, 8)
   */
  readonly innerObserveOnly: boolean;
  private nonceUsed = false;
  private sent = 0;

  constructor(init: RequestBindingInit<ResponseContext> & { requestFresh?: boolean; innerObserveOnly?: boolean }) {
    super(init);
    this.requestFresh = init.requestFresh ?? true;
    this.innerObserveOnly = init.innerObserveOnly ?? false;
  }

  /**
   * §8.3 step 3: a response may reuse the request nonce only once and only for a request verified as fresh
   * (App. B.1.2: otherwise the server MUST use its own Partial IV); every further response needs a new one.
   */
  get canReuseRequestNonce(): boolean {
    return this.requestFresh && !this.nonceUsed;
  }

  get responsesSent(): number {
    return this.sent;
  }

  /** @internal */
  recordResponse(reusedRequestNonce: boolean): void {
    if (reusedRequestNonce) this.nonceUsed = true;
    this.sent++;
  }
}
