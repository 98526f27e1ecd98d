// OSCORE (RFC 8613) fixtures for the proxy tests: pairwise client<->proxy contexts, and one server with an RFC 8613
// end-to-end context (one Sender ID per server, a Recipient Context per client Sender ID). A group of servers that
// protects end to end uses Group OSCORE instead: test/support/group-oscore.ts. The lamps are GroupServers that remove
// the end-to-end layer and protect every response (GroupServer `requestTransform`).

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
