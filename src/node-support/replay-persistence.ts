// Where an OSCORE context's state lives between runs (RFC 8613 App. B.1.1 sequence numbers reserved ahead of use in a
// file; App. B.1.2: the replay window saved at a clean close and resumed, removed durably before use so that after a
// crash the window is not resumed and the first request is challenged with Echo instead). Files are written
// atomically (temp file, fsync, rename, fsync of the directory) and name the context by a fingerprint that holds
// nothing secret.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ReplayWindowState, SecurityContext } from '../oscore';

/** File names keep only characters that are safe on every file system. */
const safeId = (id: string): string => id.replace(/[^A-Za-z0-9._-]/g, '_');

export function sequenceFile(dir: string, nodeId: string): string {
  return path.join(dir, `oscore-${safeId(nodeId)}.ssn.json`);
}

export function replayFile(dir: string, nodeId: string): string {
  return path.join(dir, `oscore-${safeId(nodeId)}.replay.json`);
}

const REPLAY_FORMAT = 'oscore-replay-1';

/** A saved window plus which context it belongs to: a window of other keys must not be resumed. */
export interface SavedWindow {
  context: string;
  window: ReplayWindowState;
}

/**
 * Which context a saved window belongs to, without writing anything secret: a one-way hash of the Common IV (a
 * pseudo-random value derived from the secrets, itself no key), the IDs and the algorithm. New keys, a new ID or
 * a new algorithm give a new context (RFC 8613 §3.2), whose replay window starts empty.
 */
export function fingerprint(ctx: SecurityContext): string {
  const h = crypto.createHash('sha256');
  for (const part of [Buffer.from('oscore-replay-window'), ctx.commonIv, ctx.senderId, ctx.recipientId, ctx.idContext ?? Buffer.alloc(0), Buffer.from(String(ctx.alg))]) {
    h.update(Buffer.from([part.length]));
    h.update(part);
  }
  return h.digest('hex').slice(0, 32);
}

function syncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Read the replay window saved at the last clean close, and remove it durably before the context is used: if the
 * process crashes later, the next start must not resume a window that no longer describes what was accepted.
 */
export function takeSavedWindow(file: string): SavedWindow | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  fs.unlinkSync(file);
  syncDir(path.dirname(file));
  try {
    const parsed = JSON.parse(text) as { format?: unknown; context?: unknown; window?: ReplayWindowState };
    return parsed.format === REPLAY_FORMAT && typeof parsed.context === 'string' && parsed.window ? { context: parsed.context, window: parsed.window } : undefined;
  } catch {
    return undefined;
  }
}

export function saveWindow(file: string, state: SavedWindow): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ format: REPLAY_FORMAT, ...state }) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  syncDir(path.dirname(file));
}

