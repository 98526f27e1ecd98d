// Request-response binding (RFC 8613 §7.1, §8): what each side keeps between a request and its responses. Both
// sides need the request's kid and Partial IV (they go into every response's AAD, §5.4) and its nonce (reused by a
// response without Partial IV, §5.2). The server also tracks whether the request nonce may still be reused; the
// client tracks which responses it has accepted (one, or a Notification Number for Observe, §7.4.1).

import { NotificationTracker, ResponseAcceptance } from './replay';
import { SecurityContext } from './context';

export interface RequestBindingInit {
  context: SecurityContext;
  /** request_kid: the client's Sender ID as carried in the request */
  kid: Buffer;
  /** request_piv: the request's Partial IV bytes as carried */
  piv: Buffer;
  /** the AEAD nonce of the request */
  nonce: Buffer;
  kidContext?: Buffer;
  /** the request registered an observation (Observe = 0 reached the server end-to-end) */
  observe: boolean;
}

abstract class RequestBinding {
  readonly context: SecurityContext;
  readonly kid: Buffer;
  readonly piv: Buffer;
  readonly nonce: Buffer;
  readonly kidContext?: Buffer;
  readonly observe: boolean;

  constructor(init: RequestBindingInit) {
    this.context = init.context;
    this.kid = init.kid;
    this.piv = init.piv;
    this.nonce = init.nonce;
    if (init.kidContext) this.kidContext = init.kidContext;
    this.observe = init.observe;
  }
}

/** Kept by the client from protectRequest() until the exchange (or observation) ends (§8.1 step 6). */
export class ClientBinding extends RequestBinding {
  /** accept several responses (e.g. through a proxy, oscore-capable-proxies-07 §2.6.1), each fresh by Partial IV */
  readonly multipleResponses: boolean;
  private readonly tracker?: NotificationTracker;
  private finished = false;
  private accepted = 0;

  constructor(init: RequestBindingInit & { multipleResponses?: boolean; onlyNewerNotifications?: boolean; notificationWindow?: number }) {
    super(init);
    this.multipleResponses = init.multipleResponses ?? false;
    if (this.observe || this.multipleResponses) this.tracker = new NotificationTracker({ size: init.notificationWindow, onlyNewer: init.onlyNewerNotifications });
  }

  /** §7.4: a non-notification response ends the binding; only one is accepted. */
  get done(): boolean {
    return this.finished;
  }

  get responsesAccepted(): number {
    return this.accepted;
  }

  /** The Notification Number (§4.1.3.5.2): highest Partial IV accepted on this binding. */
  get notificationNumber(): number | undefined {
    return this.tracker?.notificationNumber;
  }

  /** @internal replay check before decryption; `tracked` = the response belongs to a multi-response stream */
  checkResponse(piv: number | undefined, tracked: boolean): void {
    if (tracked) this.tracker!.check(piv);
  }

  /** @internal after successful decryption */
  acceptResponse(piv: number | undefined, tracked: boolean): ResponseAcceptance {
    this.accepted++;
    if (tracked) return this.tracker!.accept(piv);
    this.finished = true;
    return { newest: true };
  }

  /** End the binding, e.g. when the observation is cancelled. */
  finish(): void {
    this.finished = true;
  }

  /** @internal whether a response of this kind belongs to the tracked stream */
  tracks(notification: boolean): boolean {
    return this.tracker !== undefined && (notification || this.multipleResponses);
  }
}

/** Kept by the server from unprotectRequest() until all responses to the request are sent (§7.1). */
export class ServerBinding extends RequestBinding {
  /** false when the request's freshness is unknown (replay window not initialized, App. B.1.2) */
  readonly requestFresh: boolean;
  private nonceUsed = false;
  private sent = 0;

  constructor(init: RequestBindingInit & { requestFresh?: boolean }) {
    super(init);
    this.requestFresh = init.requestFresh ?? true;
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
