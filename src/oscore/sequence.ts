// Sender Sequence Numbers (RFC 8613 §3.2.2, §7.2.1) persisted ahead of use (App. B.1.1): before handing out a number
// at or above the durable limit, the sender stores limit = number + K; after a restart it resumes at that limit, so
// no number (no nonce) is used twice. The file store writes a temp file, fsyncs, renames it over the old one and
// fsyncs the directory, synchronously on purpose: durable before use, and atomic read-and-increment in the event
// loop (§7.2: reading and increasing the number "MUST be atomic").

import fs from 'node:fs';
import path from 'node:path';
import { MAX_SEQUENCE_NUMBER } from './cose';
import { OscoreError } from './errors';

export interface SequenceStore {
  /** The durable limit: every number handed out before is below it. undefined = nothing stored yet (start at 0). */
  load(): number | undefined;
  /** Durably record that numbers below `limit` may have been handed out. Must not return before it is durable. */
  reserve(limit: number): void;
}

/** For tests and ephemeral contexts: "durable" only for the life of the object. */
export class MemorySequenceStore implements SequenceStore {
  private limit: number | undefined;
  /** how many times reserve() was called (tests use it to see the block size at work) */
  writes = 0;

  constructor(initial?: number) {
    this.limit = initial;
  }

  load(): number | undefined {
    return this.limit;
  }

  reserve(limit: number): void {
    this.limit = limit;
    this.writes++;
  }
}

const FORMAT = 'oscore-ssn-1';

/**
 * One file per sender context, holding `{"format":"oscore-ssn-1","limit":N}`. A crash between writing the temp file
 * and renaming it leaves `<file>.<pid>.tmp` behind; load() removes such leftovers (the limit they hold was never
 * durable, so the file itself is still the truth).
 */
export class FileSequenceStore implements SequenceStore {
  constructor(readonly file: string) {}

  /** Remove temp files of earlier runs that crashed mid-write. Returns how many were removed. */
  cleanStaleTempFiles(): number {
    const dir = path.dirname(this.file);
    const base = path.basename(this.file);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return 0; // no directory yet: nothing left behind
    }
    let removed = 0;
    for (const name of names) {
      if (!name.startsWith(base + '.') || !/^\.\d+\.tmp$/.test(name.slice(base.length))) continue;
      try {
        fs.unlinkSync(path.join(dir, name));
        removed++;
      } catch {
        /* gone already, or not ours to remove: leave it */
      }
    }
    return removed;
  }

  load(): number | undefined {
    this.cleanStaleTempFiles();
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new OscoreError('ERR_OSCORE_SEQUENCE_STORE', `cannot read sequence number file ${this.file}: ${(err as Error).message}`);
    }
    // A damaged file must stop the sender: restarting at 0 would reuse nonces.
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const limit = (parsed as { format?: unknown; limit?: unknown } | undefined)?.limit;
    if ((parsed as { format?: unknown } | undefined)?.format !== FORMAT || typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0) {
      throw new OscoreError('ERR_OSCORE_SEQUENCE_STORE', `sequence number file ${this.file} is damaged; refusing to guess a sequence number`);
    }
    return limit;
  }

  reserve(limit: number): void {
    const dir = path.dirname(this.file);
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.writeSync(fd, JSON.stringify({ format: FORMAT, limit }) + '\n');
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, this.file);
    } catch (err) {
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* nothing to clean up */
      }
      throw new OscoreError('ERR_OSCORE_SEQUENCE_STORE', `cannot write sequence number file ${this.file}: ${(err as Error).message}`);
    }
    // Make the rename itself durable. Directories cannot be opened for fsync on Windows; there the rename is
    // as durable as the platform makes it.
    if (process.platform !== 'win32') {
      let dfd: number | undefined;
      try {
        dfd = fs.openSync(dir, 'r');
        fs.fsyncSync(dfd);
      } catch (err) {
        throw new OscoreError('ERR_OSCORE_SEQUENCE_STORE', `cannot sync directory of ${this.file}: ${(err as Error).message}`);
      } finally {
        if (dfd !== undefined) fs.closeSync(dfd);
      }
    }
  }
}

export const DEFAULT_SEQUENCE_BLOCK = 64;

export interface SenderSequenceOptions {
  /** K of App. B.1.1: how many numbers one durable write covers (default 64) */
  blockSize?: number;
  /** highest usable number; default 2^40 - 1 (§7.2.1), lower if the AEAD's limits demand it (§12.6) */
  max?: number;
}

export class SenderSequence {
  private nextValue: number;
  private limit: number;
  readonly blockSize: number;
  readonly max: number;

  constructor(
    private readonly store: SequenceStore = new MemorySequenceStore(),
    opts: SenderSequenceOptions = {},
  ) {
    this.blockSize = opts.blockSize ?? DEFAULT_SEQUENCE_BLOCK;
    this.max = opts.max ?? MAX_SEQUENCE_NUMBER;
    if (!Number.isSafeInteger(this.blockSize) || this.blockSize < 1) throw new RangeError(`invalid sequence block size ${this.blockSize}`);
    if (!Number.isSafeInteger(this.max) || this.max < 0 || this.max > MAX_SEQUENCE_NUMBER) throw new RangeError(`invalid maximum sequence number ${this.max}`);
    // Everything below the stored limit may have been used before the restart; nothing at or above it was.
    const start = store.load() ?? 0;
    this.nextValue = start;
    this.limit = start;
  }

  /** The number the next call to next() returns (without reserving it). */
  peek(): number {
    return this.nextValue;
  }

  /** Numbers below this are durably reserved. */
  get reservedUpTo(): number {
    return this.limit;
  }

  get exhausted(): boolean {
    return this.nextValue > this.max;
  }

  /** §8.1 step 3 / §8.3 step 3: take the current number and increment. Throws instead of ever repeating one. */
  next(): number {
    const n = this.nextValue;
    // §7.2.1: past the maximum the endpoint MUST NOT process any more messages with this Sender Context.
    if (n > this.max) throw new OscoreError('ERR_OSCORE_SEQUENCE_EXHAUSTED', 'Sender Sequence Number space exhausted; a new security context is needed');
    if (n >= this.limit) {
      const limit = Math.min(n + this.blockSize, this.max + 1);
      this.store.reserve(limit); // throws on failure: the number is not handed out
      this.limit = limit;
    }
    this.nextValue = n + 1;
    return n;
  }
}
