// A Group OSCORE group (RFC 10021) provisioned by configuration for the tests: one Master Secret, Salt and Gid,
// a key pair and a Sender ID per member (clients 0x25.., servers 0xa1..), and every member holding the others'
// credentials. Lamps are GroupServers on 127.0.0.2.. that remove the end-to-end layer with their GroupContext
// (oscore-capable-proxies-07 §2.4 loop, RFC 10021 §8.2) and answer each request in group mode, or in pairwise
// mode when asked (RFC 10021 §9.5 of -28: a server may answer a group-mode request in pairwise mode). Also: a group
// proxy that a client reaches through an RFC 8613 layer (oscore-capable-proxies-07 §2.3), a forger's context, and
// the coap-group-oscore-context config node of a member for the Node-RED tests.

import crypto from 'node:crypto';
import fs from 'node:fs';
import { CODES } from '../../src/coap/codes';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { ContextRegistry, DeterministicClientConfig, GroupContext, GroupContextOptions, generateGroupKeyPair, protectResponse } from '../../src/oscore';
import { protectResponseLayers, removeRequestLayers, LayerError } from '../../src/oscore/nested';
import { GroupProxy, GroupProxyOptions } from '../../src/proxy/group-proxy';
import { UdpTransport } from '../../src/transport/udp-transport';
import { GROUP_V4, stopAll } from './lamps';
import { pairwise } from './oscore-group';

export interface GroupMaterial {
  masterSecret: Buffer;
  masterSalt: Buffer;
  gid: Buffer;
  signatureAlg: number;
  /** every member by hex Sender ID: its key pair */
  keys: Map<string, { privateKey: Buffer; credential: Buffer }>;
  /** the group's Deterministic Client (draft-ietf-core-cacheable-oscore-02 §3.4.1), given to every member */
  deterministicClient?: DeterministicClientConfig;
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
  /** the state the resource reports (default on); change it and call server.notify('/light') */
  on?: boolean;
}

/**
 * n lamps in GROUP_V4:groupPort on 127.0.0.2.., each with its own GroupContext. `pairwise` lists the lamps (by
 * index) that answer in pairwise mode.
 */
export async function startGroupOscoreLamps(n: number, opts: { groupPort: number; material: GroupMaterial; leisure?: number; pairwise?: number[]; firstHost?: number; observable?: boolean }): Promise<GroupOscoreLamp[]> {
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
            return { request: { ...req, message: r.message }, protect: (res, hints) => (mode ? protectResponse(r.layers[0].binding, res, { mode, ...hints }) : protectResponseLayers(r.layers, res, hints)) };
          } catch (err) {
            if (!(err instanceof LayerError)) throw err;
            lamp.refused.push(err.message);
            const res = err.response;
            return { reject: res ? { code: res.code, options: res.options ?? [], payload: res.payload ?? Buffer.alloc(0) } : undefined };
          }
        },
      });
      lamp.server.addResource(
        '/light',
        (req) => {
          if (!req.notification) lamp.seen.push({ code: req.message.code, path: req.path });
          return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name, on: lamp.on ?? true }) };
        },
        { observable: opts.observable === true },
      );
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

/**
 * A forger's context: it claims Sender ID `id` but signs with a new key pair of its own, not the one the group lists
 * for `id` (consistent in itself: RFC 10021 §2 refuses a private key that does not match the own credential), and
 * knows the credentials of `peers`. Its countersignatures cannot verify.
 */
export function forgerContext(g: GroupMaterial, id: string, peers: string[]): GroupContext {
  const keys = generateGroupKeyPair({ signatureAlg: g.signatureAlg });
  return new GroupContext({
    masterSecret: g.masterSecret,
    masterSalt: g.masterSalt,
    idContext: g.gid,
    senderId: Buffer.from(id, 'hex'),
    privateKey: keys.privateKey,
    credential: keys.credential,
    signatureAlg: g.signatureAlg,
    members: peers.map((p) => ({ senderId: Buffer.from(p, 'hex'), credential: g.keys.get(p)!.credential })),
  });
}

/** A CoAP endpoint on `address` (port 0) with a short ACK_TIMEOUT. */
export async function endpointOn(address = '127.0.0.1'): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: address }), { params: { ACK_TIMEOUT: 300 } });
}

export interface OscoreGroupProxy {
  client: CoapEndpoint;
  /** the proxy's client-facing and group-facing endpoints */
  listen: CoapEndpoint;
  upstream: CoapEndpoint;
  proxy: GroupProxy;
  /** the client-proxy association (RFC 8613): `client` is the client's context, `peer` the proxy's */
  alice: ReturnType<typeof pairwise>;
  close(): Promise<void>;
}

/**
 * A client endpoint and a GroupProxy on 127.0.0.1 that admits only the client with kid 0xa0 through the RFC 8613
 * client-proxy layer (oscore-capable-proxies-07 §2.3); `extra` adds proxy options (cache, members).
 */
export async function openOscoreGroupProxy(extra: Partial<Omit<GroupProxyOptions, 'listen' | 'upstream'>> = {}): Promise<OscoreGroupProxy> {
  const alice = pairwise('a0', '01');
  const client = await endpointOn();
  const listen = await endpointOn();
  const upstream = await endpointOn();
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '*', kid: 'a0' }], oscore: { contexts: new ContextRegistry().add(alice.peer) }, ...extra });
  return {
    client,
    listen,
    upstream,
    proxy,
    alice,
    async close() {
      await proxy.close();
      await stopAll(client, listen, upstream);
    },
  };
}

/**
 * The coap-group-oscore-context config node of member `id` of `g`, knowing `peers`, with `fields` added (node
 * options a test sets), and its credentials.
 */
export function memberConfigNode(g: GroupMaterial, nodeId: string, id: string, o: { peers: string[]; sequenceStore: 'file' | 'memory'; fields?: Record<string, unknown> }) {
  const own = g.keys.get(id)!;
  const hex = (b: Buffer) => b.toString('hex');
  return {
    node: {
      id: nodeId,
      type: 'coap-group-oscore-context',
      gid: hex(g.gid),
      senderId: id,
      credential: hex(own.credential),
      members: o.peers.map((p) => ({ senderId: p, credential: hex(g.keys.get(p)!.credential) })),
      signatureAlg: String(g.signatureAlg),
      replayWindow: 32,
      sequenceStore: o.sequenceStore,
      ...o.fields,
    },
    credentials: { masterSecret: hex(g.masterSecret), masterSalt: hex(g.masterSalt), privateKey: hex(own.privateKey) },
  };
}

/**
 * The end of a Node-RED test file with Group OSCORE lamps: the runtime's userDir unset, the lamps stopped, the
 * temporary folder `root` removed.
 */
export async function endNodeRedLampTests(helper: { settings(s: { userDir?: string }): void }, lamps: GroupOscoreLamp[], root: string): Promise<void> {
  helper.settings({ userDir: undefined });
  await stopAll(lamps.map((l) => l.server));
  fs.rmSync(root, { recursive: true, force: true });
}
