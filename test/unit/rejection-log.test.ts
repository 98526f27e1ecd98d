// src/node-support/rejection-log.ts: what a sender can make a node log stays bounded, and a log line carries the
// reason's code and text on one printable line.

import assert from 'node:assert/strict';
import { RejectionLog, rejectionReason } from '../../src/node-support/rejection-log';
import { OscoreError } from '../../src/oscore/errors';

describe('node-support: rejection log (bounded log lines for notifications that did not verify)', function () {
  it('logs the 1st, 10th, 100th and 1000th of 5000 rejections, each with the running count; counts every one', function () {
    const log = new RejectionLog();
    const lines: { n: number; line: string }[] = [];
    for (let n = 1; n <= 5000; n++) {
      const line = log.add(new OscoreError('ERR_OSCORE_REPLAY', 'replayed'));
      if (line) lines.push({ n, line });
    }
    assert.deepEqual(lines.map((l) => l.n), [1, 10, 100, 1000]);
    assert.equal(lines[0].line, '1 notification dropped (did not verify); latest: ERR_OSCORE_REPLAY: replayed');
    assert.match(lines[3].line, /^1000 notifications dropped/);
    assert.equal(log.total, 5000);
  });

  it('a reason is one printable line of at most 160 characters of the message, behind the error code', function () {
    const e = Object.assign(new Error(`bad\r\nline\u0000${'x'.repeat(300)}`), { code: 'ERR_X' });
    const r = rejectionReason(e);
    assert.ok(r.startsWith('ERR_X: bad line?x'));
    assert.equal(r.length, 'ERR_X: '.length + 160);
    assert.doesNotMatch(r, /[^\x20-\x7e]/);
    assert.equal(rejectionReason('plain'), 'plain');
  });
});
