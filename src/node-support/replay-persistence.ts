// Where an OSCORE context's state lives between runs (RFC 8613 App. B.1.1 sequence numbers reserved ahead of use in a
// file; App. B.1.2: the replay window saved at a clean close and resumed, removed durably before use so that after a
// crash the window is not resumed and the first request is challenged with Echo instead), for an RFC 8613 context
// (one window) and a Group OSCORE member (RFC 10021: one window per other member). Files are written atomically
// (temp file, fsync, rename, fsync of the directory) and name the context by a fingerprint that holds nothing secret.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { GroupContext, ReplayWindowState, SecurityContext } from '../oscore';

/** File names keep only characters that are safe on every file system. */
const safeId = (id: string): string => id.replace(/[^A-Za-z0-9._-]/g, '_');

export function sequenceFile(dir: string, nodeId: string): string {
  return path.join(dir, `oscore-${safeId(nodeId)}.ssn.json`);
}

export function replayFile(dir: string, nodeId: string): string {
  return path.join(dir, `oscore-${safeId(nodeId)}.replay.json`);
}

export function groupSequenceFile(dir: string, nodeId: string): string {
  return path.join(dir, `group-oscore-${safeId(nodeId)}.ssn.json`);
}

export function groupReplayFile(dir: string, nodeId: string): string {
  return path.join(dir, `group-oscore-${safeId(nodeId)}.replay.json`);
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

export function syncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Read a saved JSON state once: the file is removed durably before the caller uses what it held (RFC 8613 App.
 * B.1.2: if the process crashes later, the next start must not resume state that no longer describes what was
 * accepted). Undefined when there is no file, or it is damaged or of another format (it is removed all the same).
 */
export function takeJsonFile(file: string, format: string): Record<string, unknown> | undefined {
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
    const parsed = JSON.parse(text) as unknown;
    return parsed && typeof parsed === 'object' && (parsed as { format?: unknown }).format === format ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Write `{format, ...body}` atomically and durably, readable by the owner only: a crash leaves the old file or the new. */
export function saveJsonFile(file: string, format: string, body: object): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ format, ...body }) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  syncDir(path.dirname(file));
}

/** The RFC 8613 context's window saved at the last clean close, removed durably before the context is used. */
export function takeSavedWindow(file: string): SavedWindow | undefined {
  const p = takeJsonFile(file, REPLAY_FORMAT);
  return p && typeof p.context === 'string' && p.window ? { context: p.context, window: p.window as ReplayWindowState } : undefined;
}

export function saveWindow(file: string, state: SavedWindow): void {
  saveJsonFile(file, REPLAY_FORMAT, state);
}

const GROUP_REPLAY_FORMAT = 'group-oscore-replay-1';

/** A Group OSCORE member's saved windows, one per other member by hex Sender ID, plus which context they belong to. */
export interface SavedWindows {
  context: string;
  windows: Record<string, ReplayWindowState>;
}

/**
 * Which Group OSCORE context saved windows belong to, without anything secret: a hash of the Common IV (RFC 10021
 * §2), the Gid, the own Sender ID and the algorithms. Other keys, another Gid or another algorithm start empty.
 */
export function groupFingerprint(g: GroupContext): string {
  const h = crypto.createHash('sha256');
  const d = g.describe();
  for (const part of [Buffer.from(GROUP_REPLAY_FORMAT), g.commonIv, g.idContext, g.senderId, Buffer.from(`${d.groupEncryptionAlg}/${d.aeadAlg}/${d.signatureAlg}/${d.pairwiseKeyAgreementAlg}`)]) {
    h.update(Buffer.from([part.length & 0xff]));
    h.update(part);
  }
  return h.digest('hex').slice(0, 32);
}

/** The member windows saved at the last clean close, removed durably before the group context is used. */
export function takeSavedWindows(file: string): SavedWindows | undefined {
  const p = takeJsonFile(file, GROUP_REPLAY_FORMAT);
  return p && typeof p.context === 'string' && p.windows && typeof p.windows === 'object' ? { context: p.context, windows: p.windows as Record<string, ReplayWindowState> } : undefined;
}

export function saveWindows(file: string, state: SavedWindows): void {
  saveJsonFile(file, GROUP_REPLAY_FORMAT, state);
}
