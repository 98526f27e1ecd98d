// The sequence-number store after a crash (RFC 8613 App. B.1.1): a process killed between writing its temp file
// and renaming it leaves the temp file behind; opening the store again removes it and resumes at the last durable
// limit, so no number is reused and no file piles up.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileSequenceStore, SenderSequence } from '../../src/oscore';

describe('sequence-number store after a crash (RFC 8613 App. B.1.1)', function () {
  let dir: string;
  beforeEach(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oscore-ssn-crash-'));
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a process killed before the rename leaves <file>.<pid>.tmp; the next open removes it and resumes at the durable limit', function () {
    const file = path.join(dir, 'ctx.ssn');
    const seq = new SenderSequence(new FileSequenceStore(file), { blockSize: 10 });
    for (let i = 0; i < 10; i++) seq.next(); // durable limit 10
    const modulePath = require.resolve('../../src/oscore/sequence');
    // The child writes the next block's temp file and is killed (SIGKILL) at the rename.
    const child = spawnSync(
      process.execPath,
      [
        '-e',
        `const fs = require('node:fs');
         fs.renameSync = () => process.kill(process.pid, 'SIGKILL');
         const { FileSequenceStore, SenderSequence } = require(${JSON.stringify(modulePath)});
         const s = new SenderSequence(new FileSequenceStore(${JSON.stringify(file)}), { blockSize: 10 });
         for (let i = 0; i < 11; i++) s.next();`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(child.signal, 'SIGKILL');
    const left = fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'));
    assert.deepEqual(left, [`ctx.ssn.${child.pid}.tmp`]);
    fs.writeFileSync(path.join(dir, 'other.tmp'), 'not ours');
    fs.writeFileSync(path.join(dir, 'ctx.ssn.backup.tmp'), 'not ours either');

    const after = new SenderSequence(new FileSequenceStore(file), { blockSize: 10 });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['ctx.ssn', 'ctx.ssn.backup.tmp', 'other.tmp']);
    // The child's numbers 10..19 were never durable, and it never sent any: resuming at the durable limit is safe.
    // (Numbers below 10 may have been used, so the next is at least 10.)
    assert.equal(after.next(), 10);
  });
});
