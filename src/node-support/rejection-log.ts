// Log lines that a sender can cause, kept bounded: a flood of forged or replayed notifications (each dropped by the
// verification of observe-multicast-notifications-15 §9.3) must not become a flood of log lines. The 1st, 10th,
// 100th, ... rejection is logged with the running count; the node's status carries the exact count all along.

/** Why a message did not verify, as a short text for a log line: the error's code and message, cut to one line. */
export function rejectionReason(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const line = message.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 160);
  return code ? `${code}: ${line}` : line;
}

export class RejectionLog {
  private count = 0;
  private nextLogged = 1;

  /** Counts one rejection; returns the line to log, or undefined when this one is not logged. */
  add(err: unknown): string | undefined {
    this.count++;
    if (this.count < this.nextLogged) return undefined;
    this.nextLogged *= 10;
    return `${this.count} ${this.count === 1 ? 'notification' : 'notifications'} dropped (did not verify); latest: ${rejectionReason(err)}`;
  }

  get total(): number {
    return this.count;
  }
}
