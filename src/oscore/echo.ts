// Echo challenges for replay-window recovery after a reboot (RFC 8613 App. B.1.2, Echo per RFC 9175 §2): while
// the window is not initialized, a verified request is answered with a protected 4.01 carrying an Echo value;
// the retry that returns it was created after the reboot, so its Partial IV can set the window.
// One value per context is outstanding at a time, and every challenge repeats it until a retry returns it: any value
// issued after the reboot proves what B.1.2 needs, so nothing requires a new one, and a flood of replayed (old but
// validly encrypted) requests can never push out the value a live client holds. The value is sent only inside
// responses protected for that client, so only it can return the value. No clock is needed.

import crypto from 'node:crypto';

export const DEFAULT_ECHO_LENGTH = 8;

export class EchoChallenges {
  private current?: Buffer;
  /** how many challenges repeated the outstanding value (e.g. replays while the window is lost) */
  repeated = 0;

  constructor(readonly length = DEFAULT_ECHO_LENGTH) {
    // RFC 9175 §2.2.1: Echo values are 1..40 bytes.
    if (!Number.isInteger(length) || length < 1 || length > 40) throw new RangeError(`invalid Echo length ${length}`);
  }

  /** The Echo value for a challenge: the outstanding one, or a fresh random value when none is outstanding. */
  issue(): Buffer {
    if (this.current) {
      this.repeated++;
      return this.current;
    }
    this.current = crypto.randomBytes(this.length);
    return this.current;
  }

  /** True (and the value is consumed) when `value` is the outstanding value this endpoint issued. */
  redeem(value: Uint8Array): boolean {
    const c = this.current;
    if (!c || c.length !== value.length || !crypto.timingSafeEqual(c, value)) return false;
    this.current = undefined;
    return true;
  }

  clear(): void {
    this.current = undefined;
  }

  get outstanding(): number {
    return this.current ? 1 : 0;
  }
}
