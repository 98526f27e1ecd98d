// DedupTable: the duplicate cache of RFC 7252 §4.5, checked against a plain list that does the same by brute force,
// over random sequences of messages, kept replies, sweeps and both caps; and the chunks its replies are kept in.

import assert from 'node:assert/strict';
import { DEDUP_ENTRY_OVERHEAD, DEDUP_SOURCE_OVERHEAD, DedupTable } from '../../src/messaging/dedup-table';

interface Entry {
  seq: number;
  address: string;
  port: number;
  mid: number;
  token: Buffer;
  code: number;
  expires: number;
  reply?: Buffer;
}

/**
 * The reference: live entries oldest first; an entry goes when replaced, when it expired and was swept, when
 * `maxEntries` newer messages were inserted (replaced ones count), or at the byte cap (oldest first).
 */
class ListModel {
  entries: Entry[] = [];
  evicted = 0;
  private seq = 0;
  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}
  get bytes(): number {
    const sources = new Set(this.entries.map((e) => `${e.address}|${e.port}`)).size;
    return sources * DEDUP_SOURCE_OVERHEAD + this.entries.reduce((n, e) => n + DEDUP_ENTRY_OVERHEAD + (e.reply?.length ?? 0), 0);
  }
  find(address: string, port: number, mid: number, now: number): Entry | undefined {
    return this.entries.find((e) => e.address === address && e.port === port && e.mid === mid && e.expires > now);
  }
  insert(e: Omit<Entry, 'seq'>, now: number): number {
    const seq = this.seq++;
    this.entries = this.entries.filter((x) => !(x.address === e.address && x.port === e.port && x.mid === e.mid));
    const gone = this.entries.filter((x) => x.seq <= seq - this.maxEntries);
    this.evicted += gone.filter((x) => x.expires > now).length;
    this.entries = this.entries.filter((x) => x.seq > seq - this.maxEntries);
    this.entries.push({ ...e, seq });
    this.enforce();
    return seq;
  }
  keepReply(seq: number, reply: Buffer): void {
    const e = this.entries.find((x) => x.seq === seq);
    if (!e) return;
    e.reply = Buffer.from(reply);
    this.enforce();
  }
  sweep(now: number): void {
    while (this.entries.length && this.entries[0].expires <= now) this.entries.shift();
  }
  private enforce(): void {
    while (this.bytes > this.maxBytes && this.entries.length) {
      this.entries.shift();
      this.evicted++;
    }
  }
}

/** A small deterministic generator, so that a failure repeats. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('DedupTable', function () {
  for (const [maxEntries, maxBytes] of [
    [1, Infinity],
    [9000, Infinity],
    [7, Infinity],
    [50, Infinity],
    [1000, Infinity],
    [1000, 20_000],
    [100, 3_000],
  ]) {
    it(`finds, replaces, expires and evicts as the brute-force list does (maxEntries ${maxEntries}, maxBytes ${maxBytes})`, function () {
      const rnd = lcg(maxEntries * 31 + (maxBytes === Infinity ? 0 : maxBytes));
      const t = new DedupTable(maxEntries, maxBytes);
      const m = new ListModel(maxEntries, maxBytes);
      const seqs: number[] = [];
      let now = 0;
      let found = 0;
      for (let step = 0; step < 20_000; step++) {
        now += Math.floor(rnd() * 3);
        // few IDs, addresses and ports, so that one ID comes from several sources and entries are replaced
        const address = `127.0.0.${1 + Math.floor(rnd() * 3)}`;
        const port = 5683 + Math.floor(rnd() * 3);
        const mid = Math.floor(rnd() * 40) * [1, 257, 4096][Math.floor(rnd() * 3)] & 0xffff;
        const op = rnd();
        if (op < 0.55) {
          const token = Buffer.from([...Array(Math.floor(rnd() * 9))].map(() => Math.floor(rnd() * 4)));
          const code = rnd() < 0.5 ? 1 : 2;
          const expected = m.find(address, port, mid, now);
          const slot = t.find({ address, port }, mid, now);
          assert.equal(slot >= 0, expected !== undefined, `step ${step}: find`);
          if (expected) {
            found++;
            assert.equal(t.sameMessage(slot, token, code), expected.token.equals(token) && expected.code === code, `step ${step}: sameMessage`);
            assert.deepEqual(t.replyOf(slot), expected.reply, `step ${step}: reply`);
          }
          const expires = now + (rnd() < 0.7 ? 300 : 150);
          const seq = t.insert({ address, port }, mid, token, code, expires, now);
          assert.equal(seq, m.insert({ address, port, mid, token, code, expires }, now));
          seqs.push(seq);
        } else if (op < 0.9) {
          // a reply for a recent entry (possibly gone already), of 4 to 300 bytes, or past the shared chunks' limit
          const seq = seqs[seqs.length - 1 - Math.floor(rnd() * Math.min(seqs.length, 20))] ?? 0;
          const len = rnd() < 0.9 ? 4 + Math.floor(rnd() * 300) : 4097 + Math.floor(rnd() * 200);
          const reply = Buffer.alloc(len, step & 0xff);
          reply.writeUInt32BE(step);
          t.keepReply(seq, reply);
          m.keepReply(seq, reply);
        } else {
          t.sweep(now);
          m.sweep(now);
        }
        assert.equal(t.size, m.entries.length, `step ${step}: size`);
        assert.equal(t.bytes, m.bytes, `step ${step}: bytes`);
        assert.equal(t.evicted, m.evicted, `step ${step}: evicted`);
        // now and then, every live entry: found, the same message, its reply intact (chunks reused or compacted
        // must never hand one reply's bytes to another)
        if (step % 50 === 0) {
          for (const e of m.entries) {
            if (e.expires <= now) continue;
            const slot = t.find({ address: e.address, port: e.port }, e.mid, now);
            assert.ok(slot >= 0 && t.sameMessage(slot, e.token, e.code), `step ${step}: entry ${e.seq} lost`);
            assert.deepEqual(t.replyOf(slot), e.reply, `step ${step}: reply of entry ${e.seq}`);
          }
        }
      }
      assert.ok(found > (maxEntries > 1 ? 100 : 10), `only ${found} lookups found an entry`);
      // everything expires; the reply chunks are released but for the one being written
      now += 1000;
      t.sweep(now);
      assert.equal(t.size, 0);
      assert.equal(t.bytes, 0);
      assert.ok(t.chunkBytes <= 16 * 1024, `chunks ${t.chunkBytes}`);
      assert.equal(t.pagesHeld, 0);
    });
  }

  it('keeps replies in shared chunks, released as their entries go: memory follows the replies held', function () {
    const t = new DedupTable(100_000, Infinity);
    const reply = Buffer.alloc(40, 1);
    let now = 0;
    for (let i = 0; i < 20_000; i++) {
      now++;
      t.sweep(now);
      const seq = t.insert({ address: '127.0.0.1', port: 40_000 + (i % 7) }, i & 0xffff, Buffer.from([i & 0xff]), 1, now + 2000, now);
      t.keepReply(seq, reply);
    }
    // 2,000 live entries of 40 B replies: 80,000 B of replies in 16 KiB chunks, plus at most the chunk of the oldest
    assert.equal(t.size, 2000);
    assert.equal(t.bytes, 2000 * (DEDUP_ENTRY_OVERHEAD + 40) + 7 * DEDUP_SOURCE_OVERHEAD);
    assert.ok(t.chunkBytes <= 80_000 + 2 * 16 * 1024, `chunks ${t.chunkBytes}`);
    // and the slots: the 2,000 live entries span at most three pages of 1,024
    assert.ok(t.pagesHeld <= 3, `pages ${t.pagesHeld}`);
  });

  it('replies that go out of order cannot pin chunks: the live replies are compacted, each one intact', function () {
    // One small reply kept per round, and a large one replaced three times (the same source and Message ID with a new
    // token): without compaction each 16 KiB chunk would stay for the one small reply in it, 240 times the bytes held.
    const t = new DedupTable(100_000, 64 * 1024 * 1024);
    const peer = { address: '::1', port: 40_000 };
    const pins: { mid: number; token: Buffer; reply: Buffer }[] = [];
    for (let k = 0; k < 2000; k++) {
      const token = Buffer.from([k >> 8, k & 0xff]);
      const reply = Buffer.alloc(4, k & 0xff);
      t.keepReply(t.insert(peer, k, token, 1, 1e9, 0), reply);
      pins.push({ mid: k, token, reply });
      for (let j = 0; j < 3; j++) t.keepReply(t.insert(peer, 0xffff, Buffer.from([j, k & 0xff]), 1, 1e9, 0), Buffer.alloc(4096, j));
      const replies = 4 * (k + 1) + 4096;
      assert.ok(t.chunkBytes <= 2 * replies + 4 * 16 * 1024 + 4096, `round ${k}: chunks ${t.chunkBytes} for ${replies} B of replies`);
    }
    assert.ok(t.compactions > 0);
    for (const p of pins) assert.deepEqual(t.replyOf(t.find(peer, p.mid, 0)), p.reply);
    assert.deepEqual(t.replyOf(t.find(peer, 0xffff, 0)), Buffer.alloc(4096, 2));
  });

  it('counts each source once, and forgets it with its last entry', function () {
    const t = new DedupTable(100, Infinity);
    t.insert({ address: '127.0.0.1', port: 1 }, 1, Buffer.alloc(0), 1, 10, 0);
    t.insert({ address: '127.0.0.1', port: 1 }, 2, Buffer.alloc(0), 1, 20, 0);
    t.insert({ address: '127.0.0.1', port: 2 }, 1, Buffer.alloc(0), 1, 20, 0);
    assert.equal(t.bytes, 3 * DEDUP_ENTRY_OVERHEAD + 2 * DEDUP_SOURCE_OVERHEAD);
    t.sweep(10);
    assert.equal(t.bytes, 2 * DEDUP_ENTRY_OVERHEAD + 2 * DEDUP_SOURCE_OVERHEAD);
    t.sweep(20);
    assert.equal(t.bytes, 0);
    assert.throws(() => t.insert({ address: '127.0.0.1', port: 1 }, 1, Buffer.alloc(9), 1, 30, 20), RangeError);
  });

  it('one Message ID from many sources, and many IDs from one: each found as its own entry', function () {
    const t = new DedupTable(100_000, Infinity);
    for (let port = 1; port <= 2000; port++) t.insert({ address: '::1', port }, 7, Buffer.from([port & 0xff]), 1, 10, 0);
    for (let mid = 0; mid < 2000; mid++) t.insert({ address: '127.0.0.1', port: 9 }, mid, Buffer.from([mid & 0xff]), 1, 10, 0);
    for (let port = 1; port <= 2000; port++) {
      const s = t.find({ address: '::1', port }, 7, 0);
      assert.ok(s >= 0 && t.sameMessage(s, Buffer.from([port & 0xff]), 1), `port ${port}`);
    }
    for (let mid = 0; mid < 2000; mid++) assert.ok(t.sameMessage(t.find({ address: '127.0.0.1', port: 9 }, mid, 0), Buffer.from([mid & 0xff]), 1));
    assert.equal(t.find({ address: '127.0.0.1', port: 10 }, 7, 0), -1);
    assert.equal(t.find({ address: '::1', port: 1 }, 7, 10), -1, 'expired');
  });
});
