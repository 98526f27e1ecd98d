// Echo challenges for replay-window recovery after a reboot (RFC 8613 App. B.1.2, Echo per RFC 9175 §2): while
// the window is not initialized, a verified request is answered with a protected 4.01 carrying a fresh Echo value;
// the retry that returns one of these values was created after the reboot, so its Partial IV can set the window.
// Values are random and kept until used or pushed out by newer ones; no clock is needed, since any value issued
// after the reboot proves what B.1.2 needs.

import crypto from 'node:crypto';

export const DEFAULT_ECHO_LENGTH = 8;
export const DEFAULT_MAX_PENDING_ECHOES = 4;

export class EchoChallenges {
  private pending: Buffer[] = [];

  constructor(
    readonly length = DEFAULT_ECHO_LENGTH,
    readonly maxPending = DEFAULT_MAX_PENDING_ECHOES,
  ) {
    // RFC 9175 §2.2.1: Echo values are 1..40 bytes.
    if (!Number.isInteger(length) || length < 1 || length > 40) throw new RangeError(`invalid Echo length ${length}`);
  }

  issue(): Buffer {
    const value = crypto.randomBytes(this.length);
    this.pending.push(value);
    if (this.pending.length > this.maxPending) this.pending.shift();
    return value;
  }

  /** True (and the value is consumed) when `value` is one this endpoint issued and has not seen back yet. */
  redeem(value: Uint8Array): boolean {
    const i = this.pending.findIndex((p) => p.length === value.length && crypto.timingSafeEqual(p, value));
    if (i < 0) return false;
    this.pending.splice(i, 1);
    return true;
  }

  clear(): void {
    this.pending = [];
  }

  get outstanding(): number {
    return this.pending.length;
  }
}
