// coap-group-oscore-context (config node): one member's Group OSCORE Security Context (RFC 10021 §2), provisioned by
// configuration (no Group Manager): the Gid, the algorithms, this node's Sender ID with its private key, and the
// other members' Sender IDs with their public authentication credentials (CCS). Master Secret, Master Salt and the
// private key are Node-RED credentials. The Sender Sequence Number is reserved ahead of use in a file in the user
// directory; on close every member's replay window is saved beside it, and read back (and removed) on the next
// start; after a crash the windows are unknown and the first request of each member is challenged with Echo. An
// admin endpoint generates a key pair for the dialog. Nothing here puts key material into a log, status or msg.
// For examples and trials, "keys made in this Node-RED process" provisions a group whose Master Secret and key pairs
// are generated in memory when the first member starts: every member of that Gid in this process knows every
// other; nothing secret is in the flow file, and a restart of Node-RED makes a new group (new keys), so sequence
// numbers kept in memory can never repeat a nonce.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_REPLAY_WINDOW,
  FileSequenceStore,
  GroupContext,
  HkdfHash,
  MemorySequenceStore,
  OscoreError,
  ReplayWindowState,
  SequenceStore,
  generateGroupKeyPair,
  parseCcs,
} from '../src/oscore';
import { oscoreServerTransform } from '../src/oscore/nested';
import { SavedWindows, groupFingerprint, groupReplayFile, groupSequenceFile, saveWindows, takeSavedWindows } from '../src/node-support/replay-persistence';
import type { RequestTransform } from '../src/group/group-server';
import { OscoreExchanges } from './lib/oscore-exchanges';
import type { OscoreLayerSource } from './lib/oscore-source';
import { Node, NodeAPI, NodeDef } from './lib/red';

export interface GroupOscoreContextConfigNode extends Node, OscoreLayerSource {
  /** The member's Group OSCORE context; throws the configuration error (never containing a secret) if there is one. */
  getContext(): GroupContext;
  /** A GroupServer requestTransform that removes this group's layer and protects every response (RFC 10021 §8.2-§8.3). */
  serverTransform(): RequestTransform;
  /** Identity for logs and status: Gid, Sender ID, members, algorithms; no key material. */
  describe(): string;
}

interface MemberDef {
  senderId?: string;
  credential?: string;
}

interface GroupOscoreContextDef extends NodeDef {
  gid?: string;
  senderId?: string;
  /** own public authentication credential (CCS, hex); public, so it may live in the flow */
  credential?: string;
  members?: MemberDef[];
  gmCredential?: string;
  groupEncryptionAlg?: string;
  aeadAlg?: string;
  signatureAlg?: string;
  hkdf?: string;
  replayWindow?: string | number;
  sequenceStore?: 'file' | 'memory';
  /** 'credentials' (default): keys from this node's credentials; 'process': a group generated in this process */
  provisioning?: 'credentials' | 'process';
  /** the group uses Deterministic Requests (draft-ietf-core-cacheable-oscore-02 §3.4.1) */
  deterministic?: boolean;
  /** the Deterministic Client's Sender ID, hex ('det_senderId', §4) */
  detSenderId?: string;
  /** its hash algorithm, a COSE algorithm number ('det_hash_alg', §4); default -16 (SHA-256) */
  detHashAlg?: string;
  /** §3.1 / §3.4.2 step 5: an Inner Observe 0 in every Deterministic Request (the same in every member) */
  detInnerObserve?: boolean;
  /** App. A.2: pad Deterministic Requests to a multiple of this many bytes (0 or empty: none; the same in every member) */
  detPadding?: string | number;
}

/**
 * Hex from the editor: spaces, colons and a leading 0x are allowed. The error names the field, never its value
 * (the same parser reads the Master Secret and the private key). Kept here: a node module's named exports do not
 * survive its `module.exports = function (RED)`.
 */
function parseHex(field: string, text: unknown): Buffer {
  if (text === undefined || text === null) return Buffer.alloc(0);
  if (typeof text !== 'string') throw new OscoreError('ERR_OSCORE_CONFIG', `${field} must be a hex string`);
  const clean = text.trim().replace(/^0x/i, '').replace(/[\s:]/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new OscoreError('ERR_OSCORE_CONFIG', `${field} must be hex digits, an even number of them`);
  return Buffer.from(clean, 'hex');
}

/** Signature Algorithms offered (RFC 10021 §2.1.5, §10: EdDSA with Ed25519 and ECDSA with P-256). */
export const OFFERED_SIGNATURE_ALGS = [-8, -7] as const;

/** 'memory' storage survives redeploys in one process, not a restart (the documented weakness of the option). */
const memoryState = new Map<string, { store: MemorySequenceStore; saved?: SavedWindows }>();

interface ProcessMember {
  senderId: Buffer;
  privateKey: Buffer;
  credential: Buffer;
  store: MemorySequenceStore;
  saved?: Record<string, ReplayWindowState>;
  /** the running context of this member, if its node is deployed */
  context?: GroupContext;
}

/** Groups provisioned in this process, by hex Gid: their secrets live only here, for the life of the process. */
const processGroups = new Map<string, { masterSecret: Buffer; masterSalt: Buffer; signatureAlg: number; members: Map<string, ProcessMember> }>();

/**
 * The member `senderId` of the process-provisioned group `gid`: its key pair and sequence number are made once per
 * process (kept across redeploys, so no nonce repeats), and every running member learns its credential.
 */
function processMember(gid: Buffer, senderId: Buffer, signatureAlg: number): { group: { masterSecret: Buffer; masterSalt: Buffer }; me: ProcessMember; others: ProcessMember[] } {
  const key = gid.toString('hex');
  let g = processGroups.get(key);
  if (!g) processGroups.set(key, (g = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), signatureAlg, members: new Map() }));
  if (g.signatureAlg !== signatureAlg) throw new OscoreError('ERR_OSCORE_CONFIG', 'the members of this group in this process use different signature algorithms');
  const id = senderId.toString('hex');
  let me = g.members.get(id);
  if (!me) {
    const kp = generateGroupKeyPair({ signatureAlg });
    g.members.set(id, (me = { senderId, privateKey: kp.privateKey, credential: kp.credential, store: new MemorySequenceStore() }));
  }
  return { group: g, me, others: [...g.members.values()].filter((m) => m !== me) };
}

const algOrNull = (v: string | undefined, def: number): number | null => (v === 'none' ? null : v === undefined || v === '' ? def : Number(v));

/** The admin API slice this node uses (the key-pair button). */
interface AdminResponse {
  json(v: unknown): void;
  status(n: number): { json(v: unknown): void };
}
interface AdminApi {
  httpAdmin?: { post(path: string, permission: unknown, handler: (req: { body?: Record<string, unknown> }, res: AdminResponse) => void): void };
  auth?: { needsPermission(p: string): unknown };
}

module.exports = function (RED: NodeAPI & AdminApi) {
  function CoapGroupOscoreContextNode(this: GroupOscoreContextConfigNode, def: GroupOscoreContextDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const storage = def.sequenceStore === 'memory' ? 'memory' : 'file';
    const dir = RED.settings.userDir || path.join(os.homedir(), '.node-red');
    let group: GroupContext | undefined;
    let failure: Error | undefined;
    let closed = false;
    const members = Array.isArray(def.members) ? def.members : [];
    const exchanges = new OscoreExchanges();
    (node as { exchanges: OscoreExchanges }).exchanges = exchanges;

    node.describe = () => `group ${def.gid || '(empty Gid)'}, sender ID ${def.senderId || '(empty)'}, ${members.length} member(s), signature ${def.signatureAlg || -8}`;

    let processed: ProcessMember | undefined;
    try {
      // What the Group Manager would hand out about the Deterministic Client (draft-ietf-core-cacheable-oscore-02 §4).
      const deterministic = def.deterministic
        ? { deterministicClient: { senderId: parseHex('Deterministic Client Sender ID', def.detSenderId), hashAlg: Number(def.detHashAlg || -16), innerObserve: def.detInnerObserve === true, padding: Number(def.detPadding || 0) } }
        : {};
      if (def.provisioning === 'process') {
        const windowSize = def.replayWindow === undefined || def.replayWindow === '' ? DEFAULT_REPLAY_WINDOW : Number(def.replayWindow);
        const signatureAlg = Number(def.signatureAlg || -8);
        const gid = parseHex('Group ID', def.gid);
        const { group: pg, me, others } = processMember(gid, parseHex('Sender ID', def.senderId), signatureAlg);
        if (me.context) throw new OscoreError('ERR_OSCORE_CONFIG', 'another node is already this member of the group');
        group = new GroupContext(
          {
            masterSecret: pg.masterSecret,
            masterSalt: pg.masterSalt,
            idContext: gid,
            senderId: me.senderId,
            privateKey: me.privateKey,
            credential: me.credential,
            members: others.map((m) => ({ senderId: m.senderId, credential: m.credential })),
            groupEncryptionAlg: algOrNull(def.groupEncryptionAlg, 10),
            aeadAlg: algOrNull(def.aeadAlg, 10),
            signatureAlg,
            hkdf: (def.hkdf || 'SHA-256') as HkdfHash,
            ...deterministic,
          },
          { sequenceStore: me.store, replayWindowSize: windowSize, ...(me.saved ? { replayWindows: me.saved } : {}) },
        );
        me.saved = undefined;
        me.context = group;
        processed = me;
        // the running members that started before this one learn its credential now
        for (const m of others) {
          if (m.context && !m.context.memberIds.some((x) => x.equals(me.senderId))) m.context.addMember({ senderId: me.senderId, credential: me.credential });
        }
      } else {
        const creds = node.credentials ?? {};
        const masterSecret = parseHex('Master Secret', creds.masterSecret);
        if (masterSecret.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'no Master Secret: set it in the group context node');
        const privateKey = parseHex('private key', creds.privateKey);
        if (privateKey.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'no private key: set it, or generate a key pair, in the group context node');
        const credential = parseHex('own credential', def.credential);
        if (credential.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'no own authentication credential');
        const windowSize = def.replayWindow === undefined || def.replayWindow === '' ? DEFAULT_REPLAY_WINDOW : Number(def.replayWindow);
        if (!Number.isInteger(windowSize) || windowSize < 1 || windowSize > 65536) throw new OscoreError('ERR_OSCORE_CONFIG', 'replay window size must be an integer from 1 to 65536');
        const memberList = members.map((m, i) => {
          const cred = parseHex(`credential of member ${i + 1}`, m.credential);
          parseCcs(cred); // a broken credential is named here rather than deep in a handshake
          return { senderId: parseHex(`Sender ID of member ${i + 1}`, m.senderId), credential: cred };
        });

        let store: SequenceStore;
        let usedBefore: boolean;
        let saved: SavedWindows | undefined;
        if (storage === 'file') {
          fs.mkdirSync(dir, { recursive: true });
          const file = new FileSequenceStore(groupSequenceFile(dir, node.id));
          usedBefore = file.load() !== undefined;
          if (!usedBefore) file.reserve(0);
          saved = takeSavedWindows(groupReplayFile(dir, node.id));
          store = file;
        } else {
          let entry = memoryState.get(node.id);
          usedBefore = entry !== undefined;
          if (!entry) memoryState.set(node.id, (entry = { store: new MemorySequenceStore() }));
          saved = entry.saved;
          entry.saved = undefined;
          store = entry.store;
          node.warn(RED._('coap-group-oscore-context.warn.memory'));
        }
        const params = {
          masterSecret,
          masterSalt: parseHex('Master Salt', creds.masterSalt),
          idContext: parseHex('Group ID', def.gid),
          senderId: parseHex('Sender ID', def.senderId),
          privateKey,
          credential,
          members: memberList,
          ...(def.gmCredential ? { gmCredential: parseHex('Group Manager credential', def.gmCredential) } : {}),
          groupEncryptionAlg: algOrNull(def.groupEncryptionAlg, 10),
          aeadAlg: algOrNull(def.aeadAlg, 10),
          signatureAlg: Number(def.signatureAlg || -8),
          hkdf: (def.hkdf || 'SHA-256') as HkdfHash,
          ...deterministic,
        };
        try {
          // Windows of a context whose fingerprint matches are resumed; without saved windows after an earlier run
          // (a crash), every member's window is unknown: Echo recovery (RFC 10021 §10 of -28, RFC 8613 App. B.1.2).
          const probe = new GroupContext(params, { sequenceStore: new MemorySequenceStore(), replayWindowSize: windowSize });
          const matching = saved && saved.context === groupFingerprint(probe) ? saved.windows : undefined;
          try {
            group = new GroupContext(params, { sequenceStore: store, replayWindowSize: windowSize, replayWindowInitialized: !usedBefore || saved !== undefined, ...(matching ? { replayWindows: matching } : {}) });
          } catch (err) {
            if (!matching) throw err;
            // a damaged saved window: start with every window unknown (Echo recovery) rather than guess
            group = new GroupContext(params, { sequenceStore: store, replayWindowSize: windowSize, replayWindowInitialized: false });
          }
          if (usedBefore && !saved) node.log(RED._('coap-group-oscore-context.log.echo-recovery'));
        } finally {
          masterSecret.fill(0);
          privateKey.fill(0);
        }
      }
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      group = undefined;
      node.error(RED._('coap-group-oscore-context.errors.invalid', { reason: failure.message }));
    }

    node.getContext = () => {
      if (closed) throw new OscoreError('ERR_OSCORE_CONFIG', 'group context closed (redeploy in progress)');
      if (!group) throw failure ?? new OscoreError('ERR_OSCORE_CONFIG', 'group context not available');
      return group;
    };

    node.serverTransform = () => oscoreServerTransform({ contexts: node.getContext(), maxLayers: 1 });
    // coap-oscore-layer's view (nodes/lib/oscore-source.ts): group mode for requests, or pairwise mode towards one
    // member; incoming requests from every member, by kid, Gid and Group Flag (RFC 10021 §8.2, §9.3 of -28).
    node.requestContext = (recipient?: Buffer) => {
      const g = node.getContext();
      if (!recipient) return g.groupRequests();
      const peer = g.peer(recipient, 'pairwise');
      if (!peer) throw new OscoreError('ERR_OSCORE_CONFIG', 'no pairwise association with that Sender ID in this group');
      return peer;
    };
    node.requestVerifier = () => {
      const g = node.getContext();
      return (kid, kidContext, groupFlag) => g.resolve(kid, kidContext, groupFlag);
    };

    node.on('close', (_removed, done) => {
      closed = true;
      exchanges.clear();
      if (processed) {
        // kept in this process for the next deploy: the windows (the sequence number store already is)
        if (group) processed.saved = group.replayWindows();
        processed.context = undefined;
        group = undefined;
        return done();
      }
      const state = group ? { context: groupFingerprint(group), windows: group.replayWindows() } : undefined;
      if (state) {
        if (storage === 'memory') {
          const entry = memoryState.get(node.id);
          if (entry) entry.saved = state;
        } else {
          try {
            saveWindows(groupReplayFile(dir, node.id), state);
          } catch (err) {
            node.warn(RED._('coap-group-oscore-context.warn.window-not-saved', { reason: (err as Error).message }));
          }
        }
      }
      group = undefined;
      done();
    });
  }

  RED.nodes.registerType('coap-group-oscore-context', CoapGroupOscoreContextNode, {
    credentials: { masterSecret: { type: 'password' }, masterSalt: { type: 'password' }, privateKey: { type: 'password' } },
  });

  // The dialog's "generate key pair" button: a fresh private key (hex, goes into the credential field of the dialog)
  // and its public authentication credential (a CCS, hex, to copy to the other members). Nothing is stored here.
  if (RED.httpAdmin && RED.auth) {
    RED.httpAdmin.post('/coap-group-oscore-context/keypair', RED.auth.needsPermission('coap-group-oscore-context.write'), (req, res) => {
      const alg = Number(req.body?.signatureAlg ?? -8);
      if (!(OFFERED_SIGNATURE_ALGS as readonly number[]).includes(alg)) {
        res.status(400).json({ error: 'unsupported signature algorithm' });
        return;
      }
      const kp = generateGroupKeyPair({ signatureAlg: alg });
      res.json({ privateKey: kp.privateKey.toString('hex'), credential: kp.credential.toString('hex') });
      kp.privateKey.fill(0);
    });
  }
};
