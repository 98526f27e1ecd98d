// Replay-window persistence (RFC 8613 App. B.1.2, src/node-support/replay-persistence.ts): a saved window is read
// once and removed before use (a crash afterwards must not resume it), saved atomically with owner-only
// permissions, and tied to its context by a fingerprint that holds no secret; the same for a Group OSCORE member's
// per-member windows (RFC 10021).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GroupContext, MemorySequenceStore, ReplayWindowState, SecurityContext, generateGroupKeyPair } from '../../src/oscore';
import {
  fingerprint,
  groupFingerprint,
  groupReplayFile,
  groupSequenceFile,
  replayFile,
  saveWindow,
  saveWindows,
  sequenceFile,
  takeSavedWindow,
  takeSavedWindows,
} from '../../src/node-support/replay-persistence';

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

describe('node-support: Group OSCORE replay-window persistence', function () {
  let dir: string;
  beforeEach(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'group-oscore-persist-'));
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const me = generateGroupKeyPair({ signatureAlg: -8 });
  const peer = generateGroupKeyPair({ signatureAlg: -8 });
  const group = (secret: Buffer, opts: { gid?: string; senderId?: string; windows?: Record<string, ReplayWindowState> } = {}) =>
    new GroupContext(
      {
        masterSecret: secret,
        masterSalt: Buffer.from('5a17', 'hex'),
        idContext: Buffer.from(opts.gid ?? 'feedca57', 'hex'),
        senderId: Buffer.from(opts.senderId ?? '01', 'hex'),
        privateKey: me.privateKey,
        credential: me.credential,
        members: [{ senderId: Buffer.from('02', 'hex'), credential: peer.credential }],
        signatureAlg: -8,
      },
      { sequenceStore: new MemorySequenceStore(), replayWindowSize: 32, ...(opts.windows ? { replayWindows: opts.windows } : {}) },
    );

  it('file names are the ones earlier versions wrote', function () {
    assert.equal(path.basename(groupSequenceFile(dir, 'a/b')), 'group-oscore-a_b.ssn.json');
    assert.equal(path.basename(groupReplayFile(dir, '../x')), 'group-oscore-.._x.replay.json');
    assert.equal(path.dirname(groupReplayFile(dir, '../x')), dir);
  });

  it('saved windows round-trip once into a context of the same keys', function () {
    const secret = crypto.randomBytes(16);
    const windows = { '02': { size: 32, highest: 9, seen: '0000000b' } };
    const before = group(Buffer.from(secret), { windows });
    const file = groupReplayFile(dir, 'g-1');
    saveWindows(file, { context: groupFingerprint(before), windows: before.replayWindows() });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).format, 'group-oscore-replay-1', 'the format tag earlier versions wrote');

    const saved = takeSavedWindows(file);
    assert.equal(fs.existsSync(file), false, 'removed before use');
    assert.deepEqual(fs.readdirSync(dir), [], 'no temporary file left behind');
    assert.ok(saved);
    assert.equal(saved.context, groupFingerprint(group(Buffer.from(secret))), 'the same context is recognised');
    assert.deepEqual(group(Buffer.from(secret), { windows: saved.windows }).replayWindows(), before.replayWindows());
    assert.equal(takeSavedWindows(file), undefined, 'read once');
  });

  it('windows saved by a context of other keys, Gid or Sender ID are not resumed', function () {
    const secret = crypto.randomBytes(16);
    const file = groupReplayFile(dir, 'g-2');
    saveWindows(file, { context: groupFingerprint(group(Buffer.from(secret))), windows: {} });
    const saved = takeSavedWindows(file);
    assert.ok(saved);
    assert.notEqual(saved.context, groupFingerprint(group(crypto.randomBytes(16))), 'other keys');
    assert.notEqual(saved.context, groupFingerprint(group(Buffer.from(secret), { gid: 'feedca58' })), 'other Gid');
    assert.notEqual(saved.context, groupFingerprint(group(Buffer.from(secret), { senderId: '03' })), 'other Sender ID');
    assert.ok(!saved.context.includes(secret.toString('hex').slice(0, 8)));
  });

  it('a damaged or foreign file gives undefined and is removed', function () {
    const file = groupReplayFile(dir, 'g-3');
    const texts = [
      '{not json',
      'null',
      JSON.stringify({ format: 'oscore-replay-1', context: 'x', window: { size: 32, highest: 1, seen: '01' } }),
      JSON.stringify({ format: 'group-oscore-replay-1', context: 1, windows: {} }),
      JSON.stringify({ format: 'group-oscore-replay-1', context: 'x', windows: 'none' }),
    ];
    for (const text of texts) {
      fs.writeFileSync(file, text);
      assert.equal(takeSavedWindows(file), undefined, text);
      assert.equal(fs.existsSync(file), false);
    }
  });

  it('an RFC 8613 window file is not read as group windows, nor the reverse', function () {
    const file = path.join(dir, 'x.json');
    saveWindows(file, { context: 'c', windows: {} });
    assert.equal(takeSavedWindow(file), undefined);
    saveWindow(file, { context: 'c', window: { size: 32, highest: null, seen: '00' } });
    assert.equal(takeSavedWindows(file), undefined);
  });
});
