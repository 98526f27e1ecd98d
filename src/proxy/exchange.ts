// The life of one proxied group exchange (groupcomm-proxy-07 §5.2.1 step 6, §5.2.3, §5.4.2; RFC 10020 §3.7):
// explicit states and every transition between them in one place. The timers that drive the transitions belong
// to the fan-out (group-proxy.ts); this file only decides what a state allows.
//
//   collecting ──T' passed, an observation is active──▶ observing
//   collecting ──T' passed, none active──▶ ended
//   collecting | observing ──deregistration (Observe 1, same token)──▶ deregistering ──its T' passed──▶ ended
//   any ──early stop, token reuse, client RST / no ACK, upstream failure, close──▶ ended

import { codeClass } from '../coap/codes';

export type ExchangeState = 'collecting' | 'observing' | 'deregistering' | 'ended';

export class ExchangeLife {
  private current: ExchangeState = 'collecting';
  /** servers ("addr|port") whose observation is active: they sent a 2.xx with Observe (RFC 7641 §3.2); made on the first */
  private observed?: Set<string>;

  constructor(readonly wantsObserve: boolean) {}

  get state(): ExchangeState {
    return this.current;
  }

  get ended(): boolean {
    return this.current === 'ended';
  }

  /**
   * May a response from `server` go to the client now? Before T' every response may (§5.4); after T' only
   * notifications of active observations (§5.4.2); while deregistering, the servers' answers to it.
   */
  admit(server: string, code: number, hasObserve: boolean): boolean {
    const notification = codeClass(code) === 2 && hasObserve;
    switch (this.current) {
      case 'collecting':
        if (this.wantsObserve && notification) (this.observed ??= new Set()).add(server);
        return true;
      case 'observing':
        if (!this.observed?.has(server)) return false;
        // RFC 7641 §3.2: a response that is not a notification ends that server's observation (relayed, once).
        if (!notification) this.observed!.delete(server);
        return true;
      case 'deregistering':
        return true;
      case 'ended':
        return false;
    }
  }

  /** T' passed: keep relaying notifications if an observation is active (§5.4.2); 'end' tells the owner to end(). */
  tPrimePassed(): 'observing' | 'end' {
    if (this.current === 'collecting' && this.wantsObserve && (this.observed?.size ?? 0) > 0) this.current = 'observing';
    return this.current === 'observing' ? 'observing' : 'end';
  }

  /** RFC 10020 §3.7: the client deregisters on the same token. */
  deregister(): boolean {
    if (this.current !== 'collecting' && this.current !== 'observing') return false;
    this.current = 'deregistering';
    return true;
  }

  /** Is an observation still held upstream (so ending must cancel it)? */
  get holdsObservation(): boolean {
    return this.wantsObserve && (this.current === 'collecting' || this.current === 'observing');
  }

  /** The exchange is over; false if it already was. */
  end(): boolean {
    if (this.current === 'ended') return false;
    this.current = 'ended';
    return true;
  }
}
