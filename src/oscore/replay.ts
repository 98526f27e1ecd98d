// Replay protection (RFC 8613 §7.4): the server's sliding anti-replay window (RFC 6347 §4.1.2.6 type, default size
// 32, §3.2.2), with the "not initialized" state of a window lost in a reboot (App. B.1.2), and the client's
// per-observation Notification Number (§4.1.3.5.2, §7.4.1), which also serves requests answered by several
// responses (oscore-capable-proxies §2.6.1: at most one response without Partial IV, treated as the oldest).

import { DIAGNOSTICS, OscoreError } from './errors';

export const DEFAULT_REPLAY_WINDOW = 32;

export interface ReplayWindowOptions {
  /** window size in sequence numbers, default 32 */
  size?: number;
  /** false for a window whose state was lost (App. B.1.2): every request is challenged with Echo first */
  initialized?: boolean;
}

export type ReplayVerdict = 'ok' | 'duplicate' | 'too-old';

export class ReplayWindow {
  readonly size: number;
  /** highest accepted sequence number, -1 before the first */
  private top = -1;
  /** bit i set = (top - i) was accepted */
  private bits = 0n;
  private readonly mask: bigint;
  private _initialized: boolean;

  constructor(opts: ReplayWindowOptions = {}) {
    const size = opts.size ?? DEFAULT_REPLAY_WINDOW;
    if (!Number.isInteger(size) || size < 1 || size > 65536) throw new RangeError(`invalid replay window size ${size}`);
    this.size = size;
    this.mask = (1n << BigInt(size)) - 1n;
    this._initialized = opts.initialized ?? true;
  }

  /** False until App. B.1.2 recovery has set the lower limit (or for a fresh context: always true). */
  get initialized(): boolean {
    return this._initialized;
  }

  /** The highest sequence number accepted so far, or undefined. */
  get highest(): number | undefined {
    return this.top < 0 ? undefined : this.top;
  }

  verdict(seq: number): ReplayVerdict {
    if (seq > this.top) return 'ok';
    const offset = this.top - seq;
    if (offset >= this.size) return 'too-old';
    return (this.bits >> BigInt(offset)) & 1n ? 'duplicate' : 'ok';
  }

  /** §8.2 step 3: before decryption. Throws the 4.01 "Replay detected" error; changes nothing. */
  check(seq: number): void {
    const v = this.verdict(seq);
    if (v !== 'ok') throw new OscoreError('ERR_OSCORE_REPLAY', `replayed Partial IV (${v})`, DIAGNOSTICS.REPLAY);
  }

  /** §8.2 step 6: after successful decryption. Call check() first; there is no await in between, so this is atomic. */
  update(seq: number): void {
    if (seq > this.top) {
      const shift = seq - this.top;
      this.bits = shift >= this.size ? 1n : ((this.bits << BigInt(shift)) | 1n) & this.mask;
      this.top = seq;
    } else {
      this.bits |= 1n << BigInt(this.top - seq);
    }
  }

  /**
   * App. B.1.2: a request with verified freshness sets the lower limit: `seq` becomes the newest accepted number and
   * everything at or below it counts as seen, since the numbers used before the reboot are unknown.
   */
  initializeFrom(seq: number): void {
    this.top = seq;
    this.bits = this.mask;
    this._initialized = true;
  }

  /** Forget the state, e.g. after a restart without persisted window (App. B.1.2). */
  reset(initialized = false): void {
    this.top = -1;
    this.bits = 0n;
    this._initialized = initialized;
  }

  /**
   * The window as plain data, for a clean shutdown that wants to resume it instead of demanding Echo after the
   * restart (App. B.1.2 only applies when the state was lost). undefined while the window is not initialized.
   */
  snapshot(): ReplayWindowState | undefined {
    if (!this._initialized) return undefined;
    return { size: this.size, highest: this.top < 0 ? null : this.top, seen: this.bits.toString(16) };
  }

  /**
   * Resume a window saved by snapshot(). A state from a smaller window leaves the extra older positions marked as
   * seen (their fate is unknown). Throws RangeError for a malformed state and changes nothing then.
   */
  restore(state: ReplayWindowState): void {
    const ok =
      typeof state === 'object' && state !== null && Number.isInteger(state.size) && state.size >= 1 &&
      (state.highest === null || (Number.isSafeInteger(state.highest) && state.highest >= 0)) &&
      typeof state.seen === 'string' && /^[0-9a-f]{1,16384}$/.test(state.seen);
    if (!ok) throw new RangeError('malformed replay window state');
    let bits = BigInt(`0x${state.seen}`);
    if (state.size < this.size) bits |= (this.mask >> BigInt(state.size)) << BigInt(state.size);
    this.top = state.highest ?? -1;
    this.bits = this.top < 0 ? 0n : bits & this.mask;
    this._initialized = true;
  }
}

/** A replay window as plain JSON-able data (ReplayWindow.snapshot / restore). */
export interface ReplayWindowState {
  size: number;
  /** highest accepted sequence number, null before the first */
  highest: number | null;
  /** hex bitmap: bit i set = (highest - i) was accepted */
  seen: string;
}

export interface ResponseAcceptance {
  /** true when this response is newer than every response accepted before on the same request */
  newest: boolean;
}

/**
 * Client-side freshness of the responses to one request that may get several (Observe notifications, or a proxy
 * relaying many). RFC 8613 §7.4.1: the Notification Number is the highest Partial IV verified; a Partial IV seen
 * before is rejected; older but unseen ones are accepted as not newest unless `onlyNewer` is set ("Applications
 * MAY decide that a client only processes notifications that have greater Partial IV"). §4.1.3.5.2: at most one
 * response without Partial IV, treated as the oldest.
 */
export class NotificationTracker {
  private readonly window: ReplayWindow;
  private noPivSeen = false;
  readonly onlyNewer: boolean;

  constructor(opts: { size?: number; onlyNewer?: boolean } = {}) {
    this.window = new ReplayWindow({ size: opts.size ?? DEFAULT_REPLAY_WINDOW });
    this.onlyNewer = opts.onlyNewer ?? false;
  }

  /** The Notification Number: highest Partial IV accepted, undefined before the first. */
  get notificationNumber(): number | undefined {
    return this.window.highest;
  }

  /** Before decryption. `piv` undefined = response without Partial IV. */
  check(piv: number | undefined): void {
    if (piv === undefined) {
      if (this.noPivSeen) throw new OscoreError('ERR_OSCORE_REPLAY', 'second response without Partial IV');
      return;
    }
    const v = this.window.verdict(piv);
    if (v !== 'ok') throw new OscoreError('ERR_OSCORE_REPLAY', `notification Partial IV ${v}`);
    const nn = this.window.highest;
    if (this.onlyNewer && nn !== undefined && piv <= nn) throw new OscoreError('ERR_OSCORE_REPLAY', 'notification older than the Notification Number');
  }

  /** After decryption succeeded. */
  accept(piv: number | undefined): ResponseAcceptance {
    if (piv === undefined) {
      this.noPivSeen = true;
      // The response without Partial IV is the oldest: newest only if nothing came before it.
      return { newest: this.window.highest === undefined };
    }
    const nn = this.window.highest;
    this.window.update(piv);
    return { newest: nn === undefined || piv > nn };
  }
}
