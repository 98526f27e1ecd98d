// coap-oscore-context (config node): one OSCORE security context (RFC 8613 §3), derived once and shared by every
// node that selects it. Master Secret and Master Salt are Node-RED credentials. The Sender Sequence Number is
// reserved ahead of use in a file in the user directory (App. B.1.1); on close the replay window is saved beside
// it so a redeploy or a clean restart resumes it, while after a crash the first request is challenged with Echo
// (App. B.1.2). Nothing here ever puts key material into a log, a status, a msg or an error text.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_REPLAY_WINDOW,
  FileSequenceStore,
  HkdfHash,
  MemorySequenceStore,
  OscoreError,
  SecurityContext,
  SequenceStore,
} from '../src/oscore';
import { SavedWindow, fingerprint, replayFile, saveWindow, sequenceFile, takeSavedWindow } from '../src/node-support/replay-persistence';
import { OscoreExchanges } from './lib/oscore-exchanges';

// still reachable from this module (tests and users imported them from here)
export { replayFile, sequenceFile };
import { Node, NodeAPI, NodeDef } from './lib/red';

export interface OscoreContextConfigNode extends Node {
  /** The shared security context; throws the configuration error (never containing a secret) if there is one. */
  getContext(): SecurityContext;
  /** Request/response bindings shared by the coap-oscore-layer nodes using this context. */
  readonly exchanges: OscoreExchanges;
  /** Identity for logs and status: IDs and algorithms, no key material. */
  describe(): string;
}

export type SequenceStorage = 'file' | 'memory';

interface OscoreContextDef extends NodeDef {
  senderId?: string;
  recipientId?: string;
  idContext?: string;
  alg?: string | number;
  hkdf?: string;
  replayWindow?: string | number;
  sequenceStore?: SequenceStorage;
}

/** AEAD algorithms offered in the editor (COSE numbers, RFC 9053); 10 is RFC 8613's mandatory default. */
export const OFFERED_AEADS = [10, 30, 1, 3, 24] as const;

/**
 * Hex from the editor: spaces, colons and a leading 0x are allowed. The error names the field, never its value,
 * because the same parser reads the Master Secret.
 */
export function parseHex(field: string, text: unknown): Buffer {
  if (text === undefined || text === null) return Buffer.alloc(0);
  if (typeof text !== 'string') throw new OscoreError('ERR_OSCORE_CONFIG', `${field} must be a hex string`);
  const clean = text.trim().replace(/^0x/i, '').replace(/[\s:]/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new OscoreError('ERR_OSCORE_CONFIG', `${field} must be hex digits, an even number of them`);
  return Buffer.from(clean, 'hex');
}

/**
 * 'memory' storage survives redeploys inside one process (a redeploy must not restart the sequence number at 0
 * with the same keys), but not a restart of Node-RED: that is the documented weakness of the option.
 */
const memoryState = new Map<string, { store: MemorySequenceStore; window?: SavedWindow }>();

function register(RED: NodeAPI): void {
  function CoapOscoreContextNode(this: OscoreContextConfigNode, def: OscoreContextDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const exchanges = new OscoreExchanges();
    (node as { exchanges: OscoreExchanges }).exchanges = exchanges;
    const storage: SequenceStorage = def.sequenceStore === 'memory' ? 'memory' : 'file';
    const dir = RED.settings.userDir || path.join(os.homedir(), '.node-red');
    let ctx: SecurityContext | undefined;
    let failure: Error | undefined;
    let closed = false;

    node.describe = () => `sender ID ${def.senderId || '(empty)'}, recipient ID ${def.recipientId || '(empty)'}${def.idContext ? `, ID context ${def.idContext}` : ''}, AEAD ${Number(def.alg || 10)}`;

    try {
      const creds = node.credentials ?? {};
      const masterSecret = parseHex('Master Secret', creds.masterSecret);
      if (masterSecret.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'no Master Secret: set it in the context node');
      const masterSalt = parseHex('Master Salt', creds.masterSalt);
      const idContext = parseHex('ID Context', def.idContext);
      const alg = Number(def.alg || 10);
      const hkdfHash = (def.hkdf || 'SHA-256') as HkdfHash;
      const windowSize = def.replayWindow === undefined || def.replayWindow === '' ? DEFAULT_REPLAY_WINDOW : Number(def.replayWindow);
      if (!Number.isInteger(windowSize) || windowSize < 1 || windowSize > 65536) throw new OscoreError('ERR_OSCORE_CONFIG', 'replay window size must be an integer from 1 to 65536');

      let store: SequenceStore;
      let usedBefore: boolean;
      let saved: SavedWindow | undefined;
      if (storage === 'file') {
        fs.mkdirSync(dir, { recursive: true });
        const file = new FileSequenceStore(sequenceFile(dir, node.id));
        usedBefore = file.load() !== undefined; // a damaged file throws: never guess a sequence number
        // Mark the context as used from its very first start, so that after a crash the missing window is noticed
        // even if this side never sent a Partial IV of its own.
        if (!usedBefore) file.reserve(0);
        saved = takeSavedWindow(replayFile(dir, node.id));
        store = file;
      } else {
        let entry = memoryState.get(node.id);
        usedBefore = entry !== undefined;
        if (!entry) memoryState.set(node.id, (entry = { store: new MemorySequenceStore() }));
        saved = entry.window;
        entry.window = undefined;
        store = entry.store;
        node.warn(RED._('coap-oscore-context.warn.memory'));
      }

      const params = {
        masterSecret,
          masterSalt,
        senderId: parseHex('Sender ID', def.senderId),
        recipientId: parseHex('Recipient ID', def.recipientId),
        ...(idContext.length > 0 ? { idContext } : {}),
        alg,
        hkdf: hkdfHash,
      };
      try {
        ctx = SecurityContext.derive(params, { sequenceStore: store, replayWindowSize: windowSize, replayWindowInitialized: !usedBefore });
      } finally {
        masterSecret.fill(0); // the context keeps only derived keys
      }
      if (saved && saved.context !== fingerprint(ctx)) {
        // Saved under other keys or IDs: this is a new security context, and its peer starts afresh too.
        ctx.replay.reset(true);
      } else if (saved) {
        try {
          ctx.replay.restore(saved.window);
        } catch {
          ctx.requireEchoRecovery();
        }
      }
      if (ctx.awaitingEchoRecovery) node.log(RED._('coap-oscore-context.log.echo-recovery'));
    } catch (err) {
      // OscoreError and file-system messages name fields and paths, never the credential values.
      failure = err instanceof Error ? err : new Error(String(err));
      ctx = undefined;
      node.error(RED._('coap-oscore-context.errors.invalid', { reason: failure.message }));
    }

    node.getContext = () => {
      if (closed) throw new OscoreError('ERR_OSCORE_CONFIG', 'security context closed (redeploy in progress)');
      if (!ctx) throw failure ?? new OscoreError('ERR_OSCORE_CONFIG', 'security context not available');
      return ctx;
    };

    node.on('close', (_removed, done) => {
      closed = true;
      exchanges.clear();
      // The sequence number needs no flush: every number handed out was reserved durably before use. The replay
      // window is saved so the next start resumes it (files and memory entries stay when the node is removed: an
      // undo would bring back the same keys, and must not bring back sequence number 0).
      const window = ctx?.replay.snapshot();
      const state = ctx && window ? { context: fingerprint(ctx), window } : undefined;
      if (state) {
        if (storage === 'memory') {
          const entry = memoryState.get(node.id);
          if (entry) entry.window = state;
        } else {
          try {
            saveWindow(replayFile(dir, node.id), state);
          } catch (err) {
            node.warn(RED._('coap-oscore-context.warn.window-not-saved', { reason: (err as Error).message }));
          }
        }
      }
      ctx = undefined;
      done();
    });
  }

  RED.nodes.registerType('coap-oscore-context', CoapOscoreContextNode, {
    credentials: { masterSecret: { type: 'password' }, masterSalt: { type: 'password' } },
  });
}

// Node-RED loads the module as this function; the helpers exported above stay reachable on it.
module.exports = Object.assign(register, exports);
