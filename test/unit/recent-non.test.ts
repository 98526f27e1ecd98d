// RecentNonResponses: duplicate detection of NON responses per source (RFC 7252 §4.5), a window of the last
// NON_WINDOW responses of each source, younger than NON_LIFETIME.

import assert from 'node:assert/strict';
import { BUSY_WINDOW, NON_WINDOW, RecentNonResponses } from '../../src/messaging/recent-non';

const A = { address: '127.0.0.2', port: 5683 };
const B = { address: '127.0.0.2', port: 5684 };
const T = Buffer.from('0102030405060708', 'hex');
const LIFETIME = 145_000;

describe('RecentNonResponses', function () {
  it('a repeat of (source, Message ID, token, code) is a duplicate; another token, code, port or ID is not', function () {
    const r = new RecentNonResponses(LIFETIME);
    assert.equal(r.seen(A, 7, T, 69, 0), false);
    assert.equal(r.seen(A, 7, T, 69, 10), true);
    assert.equal(r.seen(A, 7, Buffer.from('0102030405060709', 'hex'), 69, 20), false); // IDs wrapped: a new message
    assert.equal(r.seen(A, 7, T, 68, 30), false); // another code
    assert.equal(r.seen(B, 7, T, 69, 40), false); // another source port
    assert.equal(r.seen(A, 8, T, 69, 50), false);
    assert.equal(r.seen(A, 8, T, 69, 60), true);
    assert.equal(r.size, 2);
  });

  it('remembers the last NON_WINDOW responses of a source (no busy windows left), each for NON_LIFETIME', function () {
    const r = new RecentNonResponses(LIFETIME, 10_000, 0);
    for (let id = 0; id < NON_WINDOW; id++) assert.equal(r.seen(A, id, T, 69, id), false);
    for (let id = 0; id < NON_WINDOW; id++) assert.equal(r.seen(A, id, T, 69, 100), true, `ID ${id} within the window`);
    assert.equal(r.seen(A, NON_WINDOW, T, 69, 200), false); // pushes ID 0 out
    assert.equal(r.seen(A, 0, T, 69, 300), false, 'ID 0 fell out of the window and counts as new');
    assert.equal(r.seen(A, NON_WINDOW, T, 69, 200 + LIFETIME - 1), true);
    assert.equal(r.seen(A, NON_WINDOW, T, 69, 200 + LIFETIME), false, 'older than NON_LIFETIME');
  });

  it('a busy source (its oldest remembered response younger than NON_LIFETIME) gets BUSY_WINDOW, up to maxBusySources', function () {
    const r = new RecentNonResponses(LIFETIME, 10_000, 1);
    for (let id = 0; id < BUSY_WINDOW; id++) r.seen(A, id, T, 69, id);
    for (let id = 0; id < BUSY_WINDOW; id++) assert.equal(r.has(A, id, T, 69, 1000), true, `ID ${id} within the busy window`);
    assert.equal(r.seen(A, BUSY_WINDOW, T, 69, 1000), false);
    assert.equal(r.has(A, 0, T, 69, 1000), false, 'the busy window is full: ID 0 went');
    // the second busy source finds no larger window left
    for (let id = 0; id <= NON_WINDOW; id++) r.seen(B, id, T, 69, id);
    assert.equal(r.has(B, 0, T, 69, 1000), false);
    assert.equal(r.has(B, 1, T, 69, 1000), true);
  });

  it('has() looks without recording', function () {
    const r = new RecentNonResponses(LIFETIME);
    assert.equal(r.has(A, 7, T, 69, 0), false);
    assert.equal(r.has(A, 7, T, 69, 0), false);
    assert.equal(r.size, 0);
  });

  it('holds at most maxSources sources (the oldest go first), and forgets sources gone quiet for NON_LIFETIME', function () {
    const r = new RecentNonResponses(LIFETIME, 100);
    for (let i = 0; i < 250; i++) r.seen({ address: `127.0.${i >> 8}.${i & 0xff}`, port: 5683 }, 1, T, 69, i);
    assert.equal(r.size, 100);
    assert.equal(r.evicted, 150);
    assert.equal(r.seen({ address: '127.0.0.249', port: 5683 }, 1, T, 69, 300), true, 'the newest are kept');
    assert.equal(r.seen({ address: '127.0.0.0', port: 5683 }, 1, T, 69, 300), false, 'the oldest were dropped');
    r.sweep(300 + LIFETIME);
    assert.equal(r.size, 0);
  });
});
