// Sender Sequence Numbers persisted ahead of use (RFC 8613 §7.2.1, App. B.1.1): a simulated restart (a new store
// on the same file) never hands out a number already handed out; the reservation is on disk before a number is
// used; a damaged file stops the sender instead of restarting at 0; the 2^40 - 1 limit is enforced.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileSequenceStore, MemorySequenceStore, OscoreError, SecurityContext, SenderSequence, protectRequest } from '../../src/oscore';
import { CODES } from '../../src/coap/codes';

function isCode(code: string) {
  return (err: unknown) => err instanceof OscoreError && err.code === code;
}

describe('OSCORE sender sequence numbers (RFC 8613 §7.2.1, App. B.1.1)', function () {
  let dir: string;
  beforeEach(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oscore-ssn-'));
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('starts at 0 and counts up by one', function () {
    const seq = new SenderSequence(new MemorySequenceStore());
    assert.deepEqual([seq.next(), seq.next(), seq.next()], [0, 1, 2]);
    assert.equal(seq.peek(), 3);
  });

  it('writes one reservation per block of K numbers, before using the first of them', function () {
    const store = new MemorySequenceStore();
    const seq = new SenderSequence(store, { blockSize: 10 });
    assert.equal(store.writes, 0);
    seq.next();
    assert.equal(store.writes, 1);
    assert.equal(store.load(), 10);
    for (let i = 1; i < 10; i++) seq.next();
    assert.equal(store.writes, 1);
    assert.equal(seq.next(), 10);
    assert.equal(store.writes, 2);
    assert.equal(store.load(), 20);
  });

  it('a restart on the same file never hands out a number already handed out', function () {
    const file = path.join(dir, 'client.ssn');
    const handedOut = new Set<number>();
    for (let restart = 0; restart < 20; restart++) {
      const seq = new SenderSequence(new FileSequenceStore(file), { blockSize: 7 });
      const count = (restart * 5) % 17; // crash at arbitrary points inside a block, sometimes before any use
      for (let i = 0; i < count; i++) {
        const n = seq.next();
        assert.ok(!handedOut.has(n), `number ${n} handed out twice (restart ${restart})`);
        handedOut.add(n);
        // the durable limit is always above every number in use
        assert.ok(new FileSequenceStore(file).load()! > n);
      }
    }
    assert.ok(handedOut.size > 100);
  });

  it('resumes at the stored limit, skipping at most one block', function () {
    const file = path.join(dir, 'ssn');
    const a = new SenderSequence(new FileSequenceStore(file), { blockSize: 50 });
    for (let i = 0; i < 3; i++) a.next();
    const b = new SenderSequence(new FileSequenceStore(file), { blockSize: 50 });
    assert.equal(b.next(), 50);
  });

  it('the file is replaced atomically and holds the limit as JSON', function () {
    const file = path.join(dir, 'ssn');
    const seq = new SenderSequence(new FileSequenceStore(file), { blockSize: 4 });
    for (let i = 0; i < 9; i++) seq.next();
    assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { format: 'oscore-ssn-1', limit: 12 });
    assert.deepEqual(fs.readdirSync(dir), ['ssn'], 'no temporary file left behind');
  });

  it('a damaged file stops the sender instead of restarting at 0', function () {
    const file = path.join(dir, 'ssn');
    for (const content of ['', 'garbage', '{"format":"oscore-ssn-1","limit":-1}', '{"limit":5}', '{"format":"oscore-ssn-1","limit":"7"}']) {
      fs.writeFileSync(file, content);
      assert.throws(() => new SenderSequence(new FileSequenceStore(file)), isCode('ERR_OSCORE_SEQUENCE_STORE'), content);
    }
  });

  it('a failed write hands out no number', function () {
    const file = path.join(dir, 'missing-dir', 'ssn');
    const seq = new SenderSequence(new FileSequenceStore(file));
    assert.throws(() => seq.next(), isCode('ERR_OSCORE_SEQUENCE_STORE'));
    assert.throws(() => seq.next(), isCode('ERR_OSCORE_SEQUENCE_STORE'));
    assert.equal(seq.peek(), 0);
  });

  it('refuses to go past the maximum (2^40 - 1 by default, §7.2.1)', function () {
    const seq = new SenderSequence(new MemorySequenceStore(2 ** 40 - 2), { blockSize: 100 });
    assert.equal(seq.next(), 2 ** 40 - 2);
    assert.equal(seq.next(), 2 ** 40 - 1);
    assert.throws(() => seq.next(), isCode('ERR_OSCORE_SEQUENCE_EXHAUSTED'));
    assert.equal(seq.exhausted, true);
    const small = new SenderSequence(new MemorySequenceStore(), { max: 2 });
    small.next();
    small.next();
    small.next();
    assert.throws(() => small.next(), isCode('ERR_OSCORE_SEQUENCE_EXHAUSTED'));
  });

  it('a security context on a file store keeps its Partial IVs unique across restarts', function () {
    const file = path.join(dir, 'ctx.ssn');
    const params = { masterSecret: Buffer.alloc(16, 7), senderId: Buffer.from([1]), recipientId: Buffer.from([2]) };
    const pivs = new Set<string>();
    for (let restart = 0; restart < 3; restart++) {
      const ctx = SecurityContext.derive(params, { sequenceStore: new FileSequenceStore(file), sequence: { blockSize: 3 } });
      for (let i = 0; i < 4; i++) {
        const { binding } = protectRequest(ctx, { code: CODES.GET });
        const piv = binding.piv.toString('hex');
        assert.ok(!pivs.has(piv), `Partial IV ${piv} reused`);
        pivs.add(piv);
      }
    }
  });
});
