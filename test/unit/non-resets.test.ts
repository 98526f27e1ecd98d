// NonResetTable: the NON messages a RST may still reject (RFC 7252 §4.3), checked against a plain list that does
// the same by brute force, over random sequences of sends, RSTs and sweeps.

import assert from 'node:assert/strict';
import { NonResetTable } from '../../src/messaging/non-resets';

interface Rec {
  mid: number;
  address: string;
  port: number;
  expires: number;
  handler: () => void;
}

/** The reference: the records among the last `capacity` sent, in order; a RST takes the newest match. */
class ListModel {
  recs: (Rec & { seq: number })[] = [];
  private seq = 0;
  constructor(private readonly capacity: number) {}
  add(r: Rec): void {
    const seq = this.seq++;
    this.recs.push({ ...r, seq });
    this.recs = this.recs.filter((x) => x.seq > seq - this.capacity);
  }
  take(mid: number, address: string, port: number, now: number): (() => void) | undefined {
    for (let i = this.recs.length - 1; i >= 0; i--) {
      const r = this.recs[i];
      if (r.mid !== mid || r.address !== address || r.port !== port) continue;
      this.recs.splice(i, 1);
      return r.expires > now ? r.handler : undefined;
    }
    return undefined;
  }
  sweep(now: number): void {
    while (this.recs.length && this.recs[0].expires <= now) this.recs.shift();
  }
}

/** A small deterministic generator, so that a failure repeats. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('NonResetTable', function () {
  it('a RST at full capacity costs no rewrite of the table: the next record takes its own slot', function () {
    const t = new NonResetTable(1000);
    const h = () => undefined;
    for (let i = 0; i < 1000; i++) t.add(i, { address: '127.0.0.1', port: 5683 }, h, 1e9);
    const grow = (t as unknown as { grow(): void }).grow;
    let grown = 0;
    (t as unknown as { grow(): void }).grow = function (this: NonResetTable) {
      grown++;
      grow.call(this);
    };
    for (let i = 0; i < 500; i++) {
      assert.equal(t.take(1000 + i - 1000, { address: '127.0.0.1', port: 5683 }, 0), h);
      t.add(1000 + i, { address: '127.0.0.1', port: 5683 }, h, 1e9);
    }
    assert.equal(grown, 0);
    assert.equal(t.size, 1000);
  });

  for (const capacity of [1, 5, 16, 40, 100, 1000]) {
    it(`answers every RST as the brute-force list does (capacity ${capacity}, same IDs to several destinations, different IDs in one bucket)`, function () {
      const rnd = lcg(capacity);
      const t = new NonResetTable(capacity);
      const m = new ListModel(capacity);
      let now = 0;
      let taken = 0;
      for (let step = 0; step < 20_000; step++) {
        now += Math.floor(rnd() * 3);
        // few IDs, so that one ID goes to several destinations; multiples of powers of two (up to 2^14, over the whole
        // 16-bit range), so that different IDs share the low bits that pick a bucket at every ring size
        const mid = (Math.floor(rnd() * 8) * [1, 16, 128, 1024, 16384][Math.floor(rnd() * 5)] + Math.floor(rnd() * 2)) & 0xffff;
        const address = `127.0.0.${1 + Math.floor(rnd() * 3)}`;
        const port = 5683 + Math.floor(rnd() * 2);
        const op = rnd();
        if (op < 0.6) {
          const handler = () => undefined;
          t.add(mid, { address, port }, handler, now + 500);
          m.add({ mid, address, port, expires: now + 500, handler });
        } else if (op < 0.97) {
          const got = t.take(mid, { address, port }, now);
          const want = m.take(mid, address, port, now);
          assert.equal(got, want, `step ${step}: RST for ${mid} from ${address}:${port}`);
          if (want) taken++;
        } else {
          t.sweep(now);
          m.sweep(now);
          assert.equal(t.size, m.recs.length, `step ${step}: size after a sweep`);
        }
        assert.ok(t.size <= capacity);
      }
      // one record at a time (capacity 1) is rarely the one a RST names
      assert.ok(taken > (capacity === 1 ? 20 : 100), `only ${taken} RSTs matched: the sequence does not test much`);
      assert.equal(t.size, m.recs.length);
      t.clear();
      assert.equal(t.size, 0);
      assert.equal(t.take(0, { address: '127.0.0.1', port: 5683 }, now), undefined);
    });
  }
});
