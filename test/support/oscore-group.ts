// OSCORE fixtures for the proxy tests: pairwise client<->proxy contexts, and the stand-in for Group OSCORE (which
// the core does not implement) used end to end: one Master Secret / Salt for the group, one Sender ID per client
// that every server holds a Recipient Context for, and one Sender ID per server so that no two servers ever encrypt
// under the same key (a context literally shared by all servers would repeat (key, nonce) pairs). The lamps are
// GroupServers that remove the end-to-end layer and protect every response (GroupServer `requestTransform`).

import crypto from 'node:crypto';
import { CODES } from '../../src/coap/codes';
import { GroupServer } from '../../src/group/group-server';
import { ContextRegistry, SecurityContext, SecurityContextOptions } from '../../src/oscore';
import { oscoreServerTransform } from '../../src/oscore/nested';
import { GROUP_V4 } from './lamps';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');

/** Both ends of a pairwise association: `client` sends with `clientId`, `peer` (the proxy) with `peerId`. */
export function pairwise(clientId: string, peerId: string, opts: { client?: SecurityContextOptions; peer?: SecurityContextOptions; masterSecret?: Buffer } = {}) {
  const base = { masterSecret: opts.masterSecret ?? crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
  return {
    client: SecurityContext.derive({ ...base, senderId: h(clientId), recipientId: h(peerId) }, opts.client),
    peer: SecurityContext.derive({ ...base, senderId: h(peerId), recipientId: h(clientId) }, opts.peer),
    /** a context with the client's IDs but other keys (a wrong key) */
    wrongKey: (o?: SecurityContextOptions) => SecurityContext.derive({ masterSecret: crypto.randomBytes(16), masterSalt: base.masterSalt, senderId: h(clientId), recipientId: h(peerId) }, o),
  };
}

export interface GroupKeys {
  masterSecret: Buffer;
  masterSalt: Buffer;
  /** Sender IDs of the servers, hex, in lamp order */
  serverIds: string[];
}

export function groupKeys(n: number): GroupKeys {
  return { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), serverIds: Array.from({ length: n }, (_, i) => (0xa1 + i).toString(16)) };
}

/**
 * The client's side for one client Sender ID: the context that protects requests (its Recipient ID is the first
 * server's, unused for requests) and the Recipient Context for each server, by the server's unicast address.
 */
export function groupClient(keys: GroupKeys, clientId: string, addresses: string[], opts: SecurityContextOptions = {}) {
  const derive = (serverId: string, o: SecurityContextOptions = {}) =>
    SecurityContext.derive({ masterSecret: keys.masterSecret, masterSalt: keys.masterSalt, senderId: h(clientId), recipientId: h(serverId) }, o);
  const request = derive(keys.serverIds[0], opts);
  const byAddress = new Map<string, SecurityContext>(addresses.map((a, i) => [a, i === 0 ? request : derive(keys.serverIds[i])]));
  return { request, byAddress, responder: (origin: { address: string }) => byAddress.get(origin.address) };
}

export interface OscoreLamp {
  server: GroupServer;
  name: string;
  address: string;
  /** inner requests the resource saw (after the end-to-end layer came off) */
  seen: { code: number; path: string }[];
}

/** n lamps on 127.0.0.2.. in GROUP_V4:groupPort, each with Recipient Contexts for the given client Sender IDs. */
export async function startOscoreLamps(n: number, opts: { groupPort: number; keys: GroupKeys; clientIds: string[]; leisure?: number }): Promise<OscoreLamp[]> {
  const lamps: OscoreLamp[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const contexts = new ContextRegistry();
      for (const c of opts.clientIds) {
        contexts.add(SecurityContext.derive({ masterSecret: opts.keys.masterSecret, masterSalt: opts.keys.masterSalt, senderId: h(opts.keys.serverIds[i]), recipientId: h(c) }));
      }
      const address = `127.0.0.${2 + i}`;
      const server = await GroupServer.open({ address, port: 0, groups: [{ address: GROUP_V4, port: opts.groupPort }], leisure: opts.leisure ?? 50, requestTransform: oscoreServerTransform({ contexts, maxLayers: 1 }) });
      const lamp: OscoreLamp = { server, name: `lamp-${i + 1}`, address, seen: [] };
      server.addResource('/light', (req) => {
        lamp.seen.push({ code: req.message.code, path: req.path });
        return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name }) };
      });
      lamps.push(lamp);
    }
  } catch (err) {
    await Promise.all(lamps.map((l) => l.server.close()));
    throw err;
  }
  return lamps;
}
