// Replay-window persistence (RFC 8613 App. B.1.2, src/node-support/replay-persistence.ts): a saved window is read
// once and removed before use (a crash afterwards must not resume it), saved atomically with owner-only
// permissions, and tied to its context by a fingerprint that holds no secret.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SecurityContext } from '../../src/oscore';
import { fingerprint, replayFile, saveWindow, sequenceFile, takeSavedWindow } from '../../src/node-support/replay-persistence';

const params = (secret: Buffer, senderId = '01') => ({ masterSecret: secret, senderId: Buffer.from(senderId, 'hex'), recipientId: Buffer.from('02', 'hex'), alg: 10 });

describe('node-support: replay-window persistence', function () {
  let dir: string;
  beforeEach(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oscore-persist-'));
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a saved window is read once: taking it removes the file', function () {
    const file = replayFile(dir, 'ctx-1');
    const state = { context: 'abc', window: { size: 32, highest: 7, seen: 'ff' } };
    saveWindow(file, state);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(takeSavedWindow(file), state);
    assert.equal(fs.existsSync(file), false);
    assert.equal(takeSavedWindow(file), undefined);
    assert.deepEqual(fs.readdirSync(dir), [], 'no temporary file left behind');
  });

  it('a damaged or foreign file is removed and not resumed', function () {
    const file = replayFile(dir, 'ctx-2');
    for (const text of ['{not json', JSON.stringify({ format: 'other', context: 'x', window: {} }), JSON.stringify({ format: 'oscore-replay-1', context: 1, window: {} })]) {
      fs.writeFileSync(file, text);
      assert.equal(takeSavedWindow(file), undefined);
      assert.equal(fs.existsSync(file), false);
    }
  });

  it('file names keep only safe characters of the node id', function () {
    assert.equal(path.basename(sequenceFile(dir, 'a/b:c')), 'oscore-a_b_c.ssn.json');
    assert.equal(path.basename(replayFile(dir, '../x')), 'oscore-.._x.replay.json');
    assert.equal(path.dirname(replayFile(dir, '../x')), dir);
  });

  it('the fingerprint names the context (keys, IDs) without containing the secret', function () {
    const secret = crypto.randomBytes(16);
    const a = fingerprint(SecurityContext.derive(params(Buffer.from(secret))));
    assert.equal(a, fingerprint(SecurityContext.derive(params(Buffer.from(secret)))), 'same context, same fingerprint');
    assert.notEqual(a, fingerprint(SecurityContext.derive(params(crypto.randomBytes(16)))), 'other keys');
    assert.notEqual(a, fingerprint(SecurityContext.derive(params(Buffer.from(secret), '03'))), 'other Sender ID');
    assert.ok(!a.includes(secret.toString('hex').slice(0, 8)));
  });
});
