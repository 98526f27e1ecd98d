// A Group OSCORE group (RFC 10021) provisioned by configuration for the tests: one Master Secret, Salt and Gid,
// a key pair and a Sender ID per member (clients 0x25.., servers 0xa1..), and every member holding the others'
// credentials. Lamps are GroupServers on 127.0.0.2.. that remove the end-to-end layer with their GroupContext
// (oscore-capable-proxies-07 §2.4 loop, RFC 10021 §8.2) and answer each request in group mode, or in pairwise
// mode when asked (RFC 10021 §9.5 of -28: a server may answer a group-mode request in pairwise mode).

import crypto from 'node:crypto';
import { CODES } from '../../src/coap/codes';
import { GroupServer } from '../../src/group/group-server';
import { GroupContext, GroupContextOptions, generateGroupKeyPair, protectResponse } from '../../src/oscore';
import { protectResponseLayers, removeRequestLayers, LayerError } from '../../src/oscore/nested';
import { GROUP_V4 } from './lamps';

export interface GroupMaterial {
  masterSecret: Buffer;
  masterSalt: Buffer;
  gid: Buffer;
  signatureAlg: number;
  /** every member by hex Sender ID: its key pair */
  keys: Map<string, { privateKey: Buffer; credential: Buffer }>;
  /** the group's Deterministic Client (draft-ietf-core-cacheable-oscore-02 §3.4.1), given to every member */
  deterministicClient?: { senderId: Buffer; hashAlg?: number };
}

export function groupMaterial(ids: string[], signatureAlg = -8): GroupMaterial {
  const keys = new Map<string, { privateKey: Buffer; credential: Buffer }>();
  for (const id of ids) keys.set(id, generateGroupKeyPair({ signatureAlg }));
  return { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), gid: crypto.randomBytes(3), signatureAlg, keys };
}

/** The GroupContext of member `id`, knowing the credentials of `peers` (default: every other member). */
export function memberContext(g: GroupMaterial, id: string, opts: GroupContextOptions & { peers?: string[] } = {}): GroupContext {
  const own = g.keys.get(id);
  if (!own) throw new Error(`no member ${id}`);
  const peers = opts.peers ?? [...g.keys.keys()].filter((k) => k !== id);
  return new GroupContext(
    {
      masterSecret: g.masterSecret,
      masterSalt: g.masterSalt,
      idContext: g.gid,
      senderId: Buffer.from(id, 'hex'),
      privateKey: own.privateKey,
      credential: own.credential,
      signatureAlg: g.signatureAlg,
      members: peers.map((p) => ({ senderId: Buffer.from(p, 'hex'), credential: g.keys.get(p)!.credential })),
      ...(g.deterministicClient ? { deterministicClient: g.deterministicClient } : {}),
    },
    opts,
  );
}

export const serverIds = (n: number): string[] => Array.from({ length: n }, (_, i) => (0xa1 + i).toString(16));

export interface GroupOscoreLamp {
  server: GroupServer;
  name: string;
  address: string;
  kid: string;
  context: GroupContext;
  /** inner requests the resource saw (after the end-to-end layer came off) */
  seen: { code: number; path: string }[];
  /** requests the OSCORE layer refused (never reached a resource) */
  refused: string[];
}

/**
 * n lamps in GROUP_V4:groupPort on 127.0.0.2.., each with its own GroupContext. `pairwise` lists the lamps (by
 * index) that answer in pairwise mode.
 */
export async function startGroupOscoreLamps(n: number, opts: { groupPort: number; material: GroupMaterial; leisure?: number; pairwise?: number[]; firstHost?: number }): Promise<GroupOscoreLamp[]> {
  const lamps: GroupOscoreLamp[] = [];
  const ids = serverIds(n);
  try {
    for (let i = 0; i < n; i++) {
      const context = memberContext(opts.material, ids[i]);
      const address = `127.0.0.${(opts.firstHost ?? 2) + i}`;
      const mode = opts.pairwise?.includes(i) ? 'pairwise' : undefined;
      const lamp: GroupOscoreLamp = { server: undefined as unknown as GroupServer, name: `lamp-${i + 1}`, address, kid: ids[i], context, seen: [], refused: [] };
      lamp.server = await GroupServer.open({
        address,
        port: 0,
        groups: [{ address: GROUP_V4, port: opts.groupPort }],
        leisure: opts.leisure ?? 50,
        requestTransform: (req) => {
          try {
            const r = removeRequestLayers(req.message, { contexts: context, source: req.remote, maxLayers: 1 });
            if (r.layers.length === 0) return { reject: { code: CODES.UNAUTHORIZED, options: [], payload: Buffer.from('OSCORE required') } };
            return { request: { ...req, message: r.message }, protect: (res) => (mode ? protectResponse(r.layers[0].binding, res, { mode }) : protectResponseLayers(r.layers, res)) };
          } catch (err) {
            if (!(err instanceof LayerError)) throw err;
            lamp.refused.push(err.message);
            const res = err.response;
            return { reject: res ? { code: res.code, options: res.options ?? [], payload: res.payload ?? Buffer.alloc(0) } : undefined };
          }
        },
      });
      lamp.server.addResource('/light', (req) => {
        lamp.seen.push({ code: req.message.code, path: req.path });
        return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name, on: true }) };
      });
      lamps.push(lamp);
    }
  } catch (err) {
    await Promise.all(lamps.map((l) => l.server?.close()));
    throw err;
  }
  return lamps;
}

/**
 * A host on `address` that is not (or not the claimed) member: it reads a group request of `client` with a
 * GroupContext that knows that client, and answers with a response protected under `kid` but signed with its own
 * key pair, so that neither the signature nor (for an unknown kid) the sender can verify.
 */
export async function intruder(address: string, groupPort: number, g: GroupMaterial, kid: string, client: string): Promise<GroupServer> {
  const own = generateGroupKeyPair();
  const ctx = new GroupContext({
    masterSecret: g.masterSecret,
    masterSalt: g.masterSalt,
    idContext: g.gid,
    senderId: Buffer.from(kid, 'hex'),
    privateKey: own.privateKey,
    credential: own.credential,
    members: [{ senderId: Buffer.from(client, 'hex'), credential: g.keys.get(client)!.credential }],
  });
  const server = await GroupServer.open({
    address,
    port: 0,
    groups: [{ address: GROUP_V4, port: groupPort }],
    leisure: 20,
    requestTransform: (req) => {
      const r = removeRequestLayers(req.message, { contexts: ctx, maxLayers: 1 });
      return { request: { ...req, message: r.message }, protect: (res) => protectResponse(r.layers[0].binding, res) };
    },
  });
  server.addResource('/light', () => ({ code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: 'intruder', on: false }) }));
  return server;
}
