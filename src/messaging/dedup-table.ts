// The duplicate cache of RFC 7252 §4.5 for the messages that need one entry each: requests, and CON responses
// (NON responses are remembered per source in recent-non.ts). An entry is (source, Message ID) with the message's
// token and code (the same ID with another token is a new message from a peer whose IDs wrapped), and, for a CON,
// the bytes of our ACK, repeated to a retransmission. The table is bounded in entries and in bytes; the oldest go
// first.
//
// Kept in parallel typed arrays, not one object per message: a server keeps an entry for every CON request it
// served, for EXCHANGE_LIFETIME, and each entry object with its key and token strings and the Buffer of its reply
// (about 400 B in all) survived every young-generation collection until V8 promoted it. At 30,000 requests/s that
// copying made the scavenges 2-10 ms long, and every scavenge stalls every request in flight (docs/BENCHMARKS.md
// §6.8). Here an entry is a slot of the arrays and a reply is a run of bytes in a shared chunk: nothing per message
// for the garbage collector to trace or move.
//
// Layout: the n-th entry lives in slot n mod maxEntries (as in non-resets.ts), so an entry is forgotten at the latest
// when maxEntries newer messages were remembered (an entry replaced by a newer message with the same source and
// Message ID still counts among them), and expiry walks from the oldest. The slots are in pages of 1,024 (40 KiB),
// allocated when an entry is first written to them and released when their last entry goes, and the table never moves
// its entries (a ring that doubled stalled the server for 4-14 ms per doubling as it filled, docs/BENCHMARKS.md
// §6.8). Lookup goes through buckets hashed from the source and the Message ID with a per-table random seed (a sender
// picks its Message IDs and ports, so it must not be able to pile entries into one chain). A source is a small
// number: each (address, port) with live entries has an id and a count of entries, and goes when its last entry
// goes. Replies are appended to 16 KiB chunks (a reply over 4 KiB gets one of its own); a chunk is released when its
// last reply goes.
//
// Memory: the byte cap counts DEDUP_ENTRY_OVERHEAD per entry, DEDUP_SOURCE_OVERHEAD per source and the replies'
// bytes. Beyond that count, the pages hold at most maxEntries slots of 40 B (4 MB at the default 100,000) whatever
// the order of the messages, about one page more than the entries in first-in-first-out use; and a chunk stays while
// one of its replies does, so replies that go out of order (replaced entries) could pin chunks: when the chunks hold
// more than twice the replies' bytes plus four chunks, the live replies are copied into fresh chunks (compaction, rare
// and linear in the slots in use).

import { randomBytes } from 'node:crypto';
import { RemoteAddress } from '../transport/udp-transport';
import { EndpointMap } from './endpoint-map';

/**
 * Bytes an entry is counted as besides its reply: its slot (expiry 8 B; source, chain link, reply chunk, offset and
 * length 4 B each; Message ID, code, token length and token 12 B: 40 B) and its share of the buckets. (Pages are
 * held while any of their slots is: see the file header.)
 */
export const DEDUP_ENTRY_OVERHEAD = 64;

/**
 * Bytes a source (address and port) with live entries is counted as: its entry in the map from address and port (a
 * Map per address), its record and the address string. Measured on Node 20 with 100,000 IPv6 sources of one entry
 * each: about 370 B of heap per entry, its slot included.
 */
export const DEDUP_SOURCE_OVERHEAD = 320;

/** the largest entry cap the slot links (Int32Array) and page arithmetic allow */
const MAX_ENTRIES = 2 ** 30;

const CHUNK = 16 * 1024;
/** a reply longer than this gets a chunk of its own (a large response would otherwise waste most of a chunk) */
const OWN_CHUNK_FROM = CHUNK / 4;

/** Bytes of replies, appended to shared chunks; a chunk is released when its last reply is freed. */
class ReplyArena {
  private chunks: (Buffer | undefined)[] = [];
  private liveIn: number[] = [];
  private freeIds: number[] = [];
  /** one released chunk kept for the next, so that a steady load does not allocate */
  private spare: Buffer | undefined;
  private writeId = -1;
  private writeAt = CHUNK;
  /** bytes of the chunks held */
  allocated = 0;
  /** where put() wrote its bytes in the chunk it returned */
  lastOffset = 0;

  /** Copy `bytes` in; returns the chunk id, the offset is `lastOffset`. */
  put(bytes: Buffer): number {
    const n = bytes.length;
    let id: number;
    if (n > OWN_CHUNK_FROM) {
      id = this.newChunk(Buffer.allocUnsafeSlow(n));
      this.lastOffset = 0;
    } else {
      if (this.writeId < 0 || this.writeAt + n > CHUNK) {
        const old = this.writeId;
        this.writeId = this.newChunk(this.spare ?? Buffer.allocUnsafeSlow(CHUNK));
        this.spare = undefined;
        this.writeAt = 0;
        if (old >= 0 && this.liveIn[old] === 0) this.release(old);
      }
      id = this.writeId;
      this.lastOffset = this.writeAt;
      this.writeAt += n;
    }
    bytes.copy(this.chunks[id]!, this.lastOffset);
    this.liveIn[id]++;
    return id;
  }

  view(id: number, offset: number, length: number): Buffer {
    return this.chunks[id]!.subarray(offset, offset + length);
  }

  free(id: number): void {
    if (--this.liveIn[id] > 0) return;
    if (id === this.writeId) this.writeAt = 0; // empty: write from its start again
    else this.release(id);
  }

  clear(): void {
    this.chunks = [];
    this.liveIn = [];
    this.freeIds = [];
    this.spare = undefined;
    this.writeId = -1;
    this.writeAt = CHUNK;
    this.allocated = 0;
  }

  private newChunk(buf: Buffer): number {
    const id = this.freeIds.pop() ?? this.chunks.length;
    this.chunks[id] = buf;
    this.liveIn[id] = 0;
    this.allocated += buf.length;
    return id;
  }

  private release(id: number): void {
    const buf = this.chunks[id]!;
    this.chunks[id] = undefined;
    this.allocated -= buf.length;
    if (buf.length === CHUNK && !this.spare) this.spare = buf;
    this.freeIds.push(id);
  }
}

/** An entry found by find(): its slot, to be read with sameMessage() and replyOf() before the next change. */
export type DedupSlot = number;

const PAGE_BITS = 10;

/** The fields of 2^bits slots. */
class Page {
  readonly expires: Float64Array;
  /** source id, or -1: the slot is free */
  readonly srcs: Int32Array;
  readonly mids: Uint16Array;
  readonly codes: Uint8Array;
  readonly tokenLengths: Uint8Array;
  /** 8 bytes per slot (RFC 7252 §3: a token has at most 8) */
  readonly tokens: Uint8Array;
  /** the next older slot in the same bucket, or -1 */
  readonly older: Int32Array;
  /** the reply's chunk id, or -1 for none */
  readonly replyChunks: Int32Array;
  readonly replyOffsets: Int32Array;
  readonly replyLengths: Int32Array;
  live = 0;
  constructor(size: number) {
    this.expires = new Float64Array(size);
    this.srcs = new Int32Array(size).fill(-1);
    this.mids = new Uint16Array(size);
    this.codes = new Uint8Array(size);
    this.tokenLengths = new Uint8Array(size);
    this.tokens = new Uint8Array(size * 8);
    this.older = new Int32Array(size);
    this.replyChunks = new Int32Array(size).fill(-1);
    this.replyOffsets = new Int32Array(size);
    this.replyLengths = new Int32Array(size);
  }
}

export class DedupTable {
  /** slots per page: 2^pageBits */
  private readonly pageBits: number;
  private readonly pageMask: number;
  private readonly pages: (Page | undefined)[];
  /** a released page, kept for the next one needed (all its slots are free) */
  private sparePage: Page | undefined;
  private buckets = new Int32Array(0);
  private shift = 32;
  private readonly seed = randomBytes(4).readInt32LE(0);

  private arena = new ReplyArena();

  private readonly sourceIds = new EndpointMap<number>();
  private sourceRemotes: (RemoteAddress | undefined)[] = [];
  private sourceEntries: number[] = [];
  private freeSourceIds: number[] = [];

  /** bytes of the replies held */
  private replyBytes = 0;
  private compactionCount = 0;
  private nextSeq = 0;
  /** no entry older than this one is live */
  private oldestSeq = 0;
  private live = 0;
  private totalBytes = 0;
  /** entries removed before their time because a cap (entries or bytes) was reached */
  evicted = 0;

  private readonly maxEntries: number;

  constructor(
    maxEntries: number,
    private readonly maxBytes: number,
  ) {
    if (!(maxEntries >= 1)) throw new RangeError(`maxDedupEntries must be at least 1, not ${maxEntries}`);
    this.maxEntries = Math.min(MAX_ENTRIES, Math.floor(maxEntries));
    this.pageBits = Math.min(PAGE_BITS, Math.ceil(Math.log2(this.maxEntries)));
    this.pageMask = 2 ** this.pageBits - 1;
    // (grown by assignment: an entry cap of 2^30 must not cost an array of a million holes up front)
    this.pages = [];
  }

  /** Live entries. */
  get size(): number {
    return this.live;
  }

  /** Bytes counted against maxBytes: DEDUP_ENTRY_OVERHEAD per entry, DEDUP_SOURCE_OVERHEAD per source, the replies. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Bytes of reply chunks held (the replies' bytes and the unused rest of their chunks). */
  get chunkBytes(): number {
    return this.arena.allocated;
  }

  /** Times the reply chunks were compacted (see the file header). */
  get compactions(): number {
    return this.compactionCount;
  }

  /** Pages of slots held. */
  get pagesHeld(): number {
    return this.pages.reduce((n, p) => n + (p ? 1 : 0), 0);
  }

  /** The live, unexpired entry for (source, Message ID), or -1. */
  find(remote: RemoteAddress, messageId: number, now: number): DedupSlot {
    if (this.live === 0) return -1;
    const src = this.sourceIds.get(remote);
    if (src === undefined) return -1;
    const i = this.slotFor(src, messageId);
    return i >= 0 && this.pages[i >>> this.pageBits]!.expires[i & this.pageMask] > now ? i : -1;
  }

  /** Is the entry in `slot` the same message (token and code) as the one received? */
  sameMessage(slot: DedupSlot, token: Buffer, code: number): boolean {
    const p = this.pages[slot >>> this.pageBits]!;
    const o = slot & this.pageMask;
    const n = token.length;
    if (p.codes[o] !== code || p.tokenLengths[o] !== n) return false;
    const at = o * 8;
    for (let k = 0; k < n; k++) if (p.tokens[at + k] !== token[k]) return false;
    return true;
  }

  /** The reply kept in the entry, as a view that is valid until the table changes; undefined if none. */
  replyOf(slot: DedupSlot): Buffer | undefined {
    const p = this.pages[slot >>> this.pageBits]!;
    const o = slot & this.pageMask;
    const c = p.replyChunks[o];
    return c < 0 ? undefined : this.arena.view(c, p.replyOffsets[o], p.replyLengths[o]);
  }

  /**
   * Remember a message until `expires`, in place of an entry with the same source and Message ID. Returns the entry's
   * sequence number, by which keepReply() finds it again (if it is still there).
   */
  insert(remote: RemoteAddress, messageId: number, token: Buffer, code: number, expires: number, now: number): number {
    // RFC 7252 §3 (the codec refuses longer ones; RFC 8974's extended tokens would need another layout)
    if (token.length > 8) throw new RangeError(`a token has at most 8 bytes, not ${token.length}`);
    if (this.buckets.length === 0) this.makeBuckets();
    let src = this.sourceIds.get(remote);
    if (src === undefined) src = this.addSource(remote);
    this.sourceEntries[src]++; // before the old entry goes, so that the source stays
    const old = this.live > 0 ? this.slotFor(src, messageId) : -1;
    if (old >= 0) this.remove(old);
    const seq = this.nextSeq++;
    const i = seq % this.maxEntries;
    let p = this.pages[i >>> this.pageBits];
    const o = i & this.pageMask;
    if (p && p.srcs[o] >= 0) {
      // the entry made maxEntries entries ago
      if (p.expires[o] > now) this.evicted++;
      this.remove(i);
      p = this.pages[i >>> this.pageBits]; // (released if that was its last entry)
    }
    if (!p) p = this.pages[i >>> this.pageBits] = this.newPage();
    this.oldestSeq = Math.max(this.oldestSeq, seq - this.maxEntries + 1);
    p.srcs[o] = src;
    p.mids[o] = messageId;
    p.codes[o] = code;
    p.expires[o] = expires;
    const n = token.length;
    p.tokenLengths[o] = n;
    for (let k = 0; k < n; k++) p.tokens[o * 8 + k] = token[k];
    const b = this.bucketOf(src, messageId);
    p.older[o] = this.buckets[b];
    this.buckets[b] = i;
    p.live++;
    this.live++;
    this.totalBytes += DEDUP_ENTRY_OVERHEAD;
    this.enforceBytes();
    return seq;
  }

  /** Keep `reply` in the entry `seq` (replacing a reply kept before), if the entry is still there. */
  keepReply(seq: number, reply: Buffer): void {
    const i = this.slotOf(seq);
    if (i < 0) return;
    const p = this.pages[i >>> this.pageBits]!;
    const o = i & this.pageMask;
    this.dropReply(p, o);
    p.replyChunks[o] = this.arena.put(reply);
    p.replyOffsets[o] = this.arena.lastOffset;
    p.replyLengths[o] = reply.length;
    this.totalBytes += reply.length;
    this.replyBytes += reply.length;
    if (this.arena.allocated > 2 * this.replyBytes + 4 * CHUNK) this.compact();
    this.enforceBytes();
  }

  /** Forget the entries that expired. Entries with a shorter lifetime may wait behind a longer one (find() skips them). */
  sweep(now: number): void {
    while (this.live > 0 && this.oldestSeq < this.nextSeq) {
      const i = this.slotOf(this.oldestSeq);
      if (i >= 0) {
        if (this.pages[i >>> this.pageBits]!.expires[i & this.pageMask] > now) return;
        this.remove(i);
      }
      this.oldestSeq++;
    }
  }

  clear(): void {
    this.pages.length = 0;
    this.sparePage = undefined;
    this.buckets = new Int32Array(0);
    this.arena.clear();
    this.sourceIds.clear();
    this.sourceRemotes = [];
    this.sourceEntries = [];
    this.freeSourceIds = [];
    this.live = 0;
    this.totalBytes = 0;
    this.replyBytes = 0;
    this.oldestSeq = this.nextSeq;
  }

  /** The live entry for (source id, Message ID), expired or not (there is at most one), or -1. */
  private slotFor(src: number, messageId: number): number {
    for (let i = this.buckets[this.bucketOf(src, messageId)]; i >= 0; ) {
      const p = this.pages[i >>> this.pageBits]!;
      const o = i & this.pageMask;
      if (p.srcs[o] === src && p.mids[o] === messageId) return i;
      i = p.older[o];
    }
    return -1;
  }

  /**
   * The slot of the live entry with sequence number `seq`, or -1. No slot needs to say which entry it holds: every live
   * entry is in the window oldestSeq..nextSeq, which spans at most maxEntries sequence numbers (insert() moves
   * oldestSeq past the entry whose slot it takes), so a live slot in that window holds the one entry that maps to it.
   */
  private slotOf(seq: number): number {
    if (seq < this.oldestSeq || seq >= this.nextSeq) return -1;
    const i = seq % this.maxEntries;
    const p = this.pages[i >>> this.pageBits];
    return p && p.srcs[i & this.pageMask] >= 0 ? i : -1;
  }

  /** Drop the oldest entries while the bytes are over the cap. */
  private enforceBytes(): void {
    while (this.totalBytes > this.maxBytes && this.live > 0) {
      const i = this.slotOf(this.oldestSeq);
      if (i >= 0) {
        this.remove(i);
        this.evicted++;
      }
      this.oldestSeq++;
    }
  }

  /** Buckets for up to maxEntries at two entries per bucket on average (at most 2^19 buckets, 2 MiB). */
  private makeBuckets(): void {
    const bits = Math.max(4, Math.min(19, Math.ceil(Math.log2(this.maxEntries / 2))));
    this.buckets = new Int32Array(2 ** bits).fill(-1);
    this.shift = 32 - bits;
  }

  private bucketOf(src: number, messageId: number): number {
    // murmur3's finalizer over the seeded pair: every input bit moves every bucket bit
    let h = Math.imul(src, 0x9e3779b1) ^ messageId ^ this.seed;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> this.shift;
  }

  private newPage(): Page {
    const p = this.sparePage ?? new Page(2 ** this.pageBits);
    this.sparePage = undefined;
    return p;
  }

  private remove(i: number): void {
    const k = i >>> this.pageBits;
    const p = this.pages[k]!;
    const o = i & this.pageMask;
    const src = p.srcs[o];
    const b = this.bucketOf(src, p.mids[o]);
    if (this.buckets[b] === i) this.buckets[b] = p.older[o];
    else {
      // unlink from the chain: find the slot that points at this one
      let j = this.buckets[b];
      while (j >= 0) {
        const q = this.pages[j >>> this.pageBits]!;
        const qo = j & this.pageMask;
        if (q.older[qo] === i) {
          q.older[qo] = p.older[o];
          break;
        }
        j = q.older[qo];
      }
    }
    this.dropReply(p, o);
    p.srcs[o] = -1;
    this.live--;
    this.totalBytes -= DEDUP_ENTRY_OVERHEAD;
    if (--p.live === 0) {
      // every slot of the page is free again: give it back (or keep it as the spare)
      this.pages[k] = undefined;
      if (!this.sparePage) this.sparePage = p;
    }
    if (--this.sourceEntries[src] === 0) this.dropSource(src);
  }

  private dropReply(p: Page, o: number): void {
    const c = p.replyChunks[o];
    if (c < 0) return;
    p.replyChunks[o] = -1;
    this.totalBytes -= p.replyLengths[o];
    this.replyBytes -= p.replyLengths[o];
    this.arena.free(c);
  }

  /** Copy the live replies, oldest first, into a fresh arena and let the old chunks go. */
  private compact(): void {
    this.compactionCount++;
    const old = this.arena;
    const fresh = new ReplyArena();
    for (let seq = this.oldestSeq; seq < this.nextSeq; seq++) {
      const i = this.slotOf(seq);
      if (i < 0) continue;
      const p = this.pages[i >>> this.pageBits]!;
      const o = i & this.pageMask;
      const c = p.replyChunks[o];
      if (c < 0) continue;
      p.replyChunks[o] = fresh.put(old.view(c, p.replyOffsets[o], p.replyLengths[o]));
      p.replyOffsets[o] = fresh.lastOffset;
    }
    this.arena = fresh;
  }

  private addSource(remote: RemoteAddress): number {
    this.totalBytes += DEDUP_SOURCE_OVERHEAD;
    const id = this.freeSourceIds.pop() ?? this.sourceEntries.length;
    // a copy: the datagram's own remote object may carry more than the address and port
    this.sourceRemotes[id] = { address: remote.address, port: remote.port };
    this.sourceEntries[id] = 0;
    this.sourceIds.set(remote, id);
    return id;
  }

  private dropSource(id: number): void {
    this.totalBytes -= DEDUP_SOURCE_OVERHEAD;
    this.sourceIds.delete(this.sourceRemotes[id]!);
    this.sourceRemotes[id] = undefined;
    this.freeSourceIds.push(id);
  }
}
