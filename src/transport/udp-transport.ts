// UDP transport for CoAP (RFC 7252 §3, groupcomm-bis §3.9 / RFC 10020): one unicast socket that sends and
// receives, plus optional group receivers bound to a multicast address with membership per interface, so a
// group member answers from its own unicast address. Every multicast-sending socket pins its interface and TTL.
// Errors are reported as events; nothing throws out of a socket callback.

import dgram from 'node:dgram';
import dns from 'node:dns';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { isMulticastAddress } from '../coap/uri';

export interface RemoteAddress {
  address: string;
  port: number;
}

/**
 * A peer as a string key, "address|port": the one spelling of the keys that name a server or client across modules
 * (the proxy's known servers, its cache's members, an exchange's per-server counts, Echo verification), so that keys
 * built in one place match those built in another.
 */
export function peerKey(address: string, port: number | string): string {
  return `${address}|${port}`;
}

export interface Datagram {
  data: Buffer;
  remote: RemoteAddress;
  /** true when it arrived on a group receiver, i.e. it was sent to a multicast address */
  multicast: boolean;
  /** the multicast group it was addressed to, when `multicast` */
  group?: string;
}

export interface GroupMembership {
  /** multicast address, e.g. "224.0.1.187" or "ff02::fd" */
  address: string;
  /** port the group uses (default 5683) */
  port?: number;
  /** local interface address(es) to join on: IPv4 address, or "::%eth0" / "%eth0" for IPv6 */
  interfaces?: string[];
}

export interface UdpTransportOptions {
  /** 'udp4' or 'udp6'; default taken from bindAddress, else udp4 */
  family?: 'udp4' | 'udp6';
  /** address of the unicast socket (default 0.0.0.0 / ::) */
  bindAddress?: string;
  /** port of the unicast socket (0 = ephemeral) */
  port?: number;
  /** interface for outgoing multicast: IPv4 address or "::%ifname" (default 127.0.0.1 for udp4, ::%lo for udp6) */
  multicastInterface?: string;
  /** multicast TTL / hop limit (default 1: the link only) */
  multicastTtl?: number;
  /** receive our own multicast (default true, needed on loopback) */
  multicastLoopback?: boolean;
  /** groups to receive, each on its own receiver socket */
  groups?: GroupMembership[];
  /** SO_REUSEADDR on the unicast socket, so that several servers can share a port on distinct addresses */
  reuseAddr?: boolean;
  /** socket receive buffer size in bytes (large fan-ins need more than the default) */
  recvBufferSize?: number;
}

export interface TransportCounters {
  received: number;
  sent: number;
  bytesReceived: number;
  bytesSent: number;
  sendErrors: number;
  socketErrors: number;
}

export interface Transport extends EventEmitter {
  readonly family: 'udp4' | 'udp6';
  send(data: Buffer, remote: RemoteAddress): void;
  address(): RemoteAddress;
  close(): Promise<void>;
  readonly counters: TransportCounters;
  /**
   * Capability: start receiving a multicast group (groupcomm-bis §3.9), e.g. the group of multicast notifications
   * (observe-multicast-notifications-15 §5.2). Absent on transports that cannot join groups.
   */
  joinGroup?(g: GroupMembership): Promise<void>;
  /** Capability: stop receiving a group joined with joinGroup (counted: the last user leaving closes it). */
  leaveGroup?(address: string, port?: number): Promise<void>;
}

/** A transport with the group-membership capability. */
export type GroupTransport = Transport & Required<Pick<Transport, 'joinGroup' | 'leaveGroup'>>;

/** True if the transport can join and leave multicast groups. */
export function canJoinGroups(t: Transport): t is GroupTransport {
  return typeof t.joinGroup === 'function' && typeof t.leaveGroup === 'function';
}

/**
 * node:dgram resolves the destination of every send with `lookup` (dns.lookup by default), which answers even an
 * address literal on the next tick, so each datagram waited for a tick of its own before it was sent. An address
 * literal (nearly every destination here: a peer's source address, a group, a URI's IP) is passed on at once; a host
 * name still goes to dns.lookup.
 */
export function literalLookup(host: string, family: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const f = net.isIP(host);
  if (f !== 0) return callback(null, host, f);
  dns.lookup(host, family as dns.LookupOneOptions, callback);
}

export class TransportError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/**
 * Events: 'datagram' (Datagram), 'error' (Error; transient errors only: sockets stay open), 'close'.
 */
export class UdpTransport extends EventEmitter implements Transport {
  readonly family: 'udp4' | 'udp6';
  readonly counters: TransportCounters = { received: 0, sent: 0, bytesReceived: 0, bytesSent: 0, sendErrors: 0, socketErrors: 0 };
  private unicast!: dgram.Socket;
  private receivers: { socket: dgram.Socket; group: string; port: number; users: number }[] = [];
  private closed = false;
  private bound: RemoteAddress = { address: '', port: 0 };

  private constructor(private readonly opts: UdpTransportOptions) {
    super();
    const fam = opts.family ?? (opts.bindAddress && net.isIPv6(opts.bindAddress.split('%')[0]) ? 'udp6' : 'udp4');
    this.family = fam;
  }

  /** Create and bind; resolves once every socket is bound and every group joined. */
  static async open(opts: UdpTransportOptions = {}): Promise<UdpTransport> {
    const t = new UdpTransport(opts);
    try {
      await t.start();
    } catch (err) {
      await t.close();
      throw err;
    }
    return t;
  }

  private async start(): Promise<void> {
    const o = this.opts;
    const v6 = this.family === 'udp6';
    this.unicast = this.createSocket(o.reuseAddr ?? false, false);
    await bind(this.unicast, o.port ?? 0, o.bindAddress ?? (v6 ? '::' : '0.0.0.0'));
    this.configureMulticastSender(this.unicast);
    const a = this.unicast.address();
    this.bound = { address: a.address, port: a.port };
    for (const g of o.groups ?? []) await this.joinGroup(g);
  }

  private createSocket(reuseAddr: boolean, isReceiver: boolean, group?: string): dgram.Socket {
    const s = dgram.createSocket({ type: this.family, reuseAddr, recvBufferSize: this.opts.recvBufferSize, lookup: literalLookup });
    s.on('error', (err) => {
      this.counters.socketErrors++;
      this.emitError(err);
    });
    s.on('message', (data, rinfo) => {
      this.counters.received++;
      this.counters.bytesReceived += data.length;
      const dg: Datagram = { data, remote: { address: rinfo.address, port: rinfo.port }, multicast: isReceiver, group };
      try {
        this.emit('datagram', dg);
      } catch (err) {
        // A listener bug must not take the socket (or the runtime) down.
        this.emitError(err as Error);
      }
    });
    return s;
  }

  private configureMulticastSender(s: dgram.Socket): void {
    const v6 = this.family === 'udp6';
    // Network safety: pin the interface (loopback unless told otherwise) and keep TTL / hop limit at 1.
    s.setMulticastInterface(this.opts.multicastInterface ?? (v6 ? '::%lo' : '127.0.0.1'));
    s.setMulticastTTL(this.opts.multicastTtl ?? 1);
    s.setMulticastLoopback(this.opts.multicastLoopback ?? true);
  }

  /** Add a group receiver: a socket bound to the group address and port, joined on each interface. */
  async joinGroup(g: GroupMembership): Promise<void> {
    const v6 = this.family === 'udp6';
    const port = g.port ?? 5683;
    if (!isMulticastAddress(g.address)) throw new TransportError(`${g.address} is not a multicast address`, 'ERR_JOIN');
    // Several users of one transport may join the same group: one receiver, counted.
    const existing = this.receivers.find((r) => r.group === g.address && r.port === port);
    if (existing) {
      existing.users++;
      return;
    }
    const s = this.createSocket(true, true, g.address);
    this.receivers.push({ socket: s, group: g.address, port, users: 1 });
    // Binding to the group address (not the wildcard) keeps unicast traffic for that port off this socket.
    const bindAddr = v6 ? (g.interfaces?.[0]?.includes('%') ? `${g.address}%${g.interfaces[0].split('%')[1]}` : g.address) : g.address;
    await bind(s, port, bindAddr);
    const ifaces = g.interfaces && g.interfaces.length ? g.interfaces : [v6 ? '::%lo' : '127.0.0.1'];
    for (const iface of ifaces) {
      try {
        s.addMembership(g.address, iface);
      } catch (err) {
        throw new TransportError(`cannot join ${g.address} on ${iface}: ${(err as Error).message}`, 'ERR_JOIN');
      }
    }
    // A receiver never sends, but pin it anyway so nothing can leave by accident.
    this.configureMulticastSender(s);
  }

  /** Stop receiving a group (its receiver closes when the last user of that group and port leaves). */
  async leaveGroup(address: string, port?: number): Promise<void> {
    // after close() every receiver is closed already: leaving then is a no-op, never a second close (which throws)
    if (this.closed) return;
    const r = this.receivers.find((x) => x.group === address && (port === undefined || x.port === port));
    if (!r || --r.users > 0) return;
    this.receivers = this.receivers.filter((x) => x !== r);
    await new Promise<void>((resolve) => {
      try {
        r.socket.close(() => resolve());
      } catch {
        resolve(); // already closed
      }
    });
  }

  /** The port the first group receiver is bound to (useful when the group port was 0). */
  groupPort(index = 0): number {
    return this.receivers[index].socket.address().port;
  }

  send(data: Buffer, remote: RemoteAddress): void {
    if (this.closed) return;
    try {
      this.unicast.send(data, remote.port, remote.address, this.onSent);
    } catch (err) {
      // e.g. ERR_SOCKET_BAD_PORT for port 0: a bad destination must not throw into a timer or a flow.
      this.counters.sendErrors++;
      this.emitError(err as Error);
    }
  }

  /** One callback for every send (no closure per datagram on the hot path). */
  private readonly onSent = (err: Error | null, bytes: number): void => {
    if (err) {
      this.counters.sendErrors++;
      this.emitError(err);
    } else {
      this.counters.sent++;
      this.counters.bytesSent += bytes;
    }
  };

  address(): RemoteAddress {
    return this.bound;
  }

  private emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const sockets = [this.unicast, ...this.receivers.map((r) => r.socket)].filter(Boolean);
    this.receivers = [];
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // not bound yet or already closed
            }
          }),
      ),
    );
    this.receivers = [];
    this.emit('close');
  }
}

function bind(s: dgram.Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new TransportError(`cannot bind ${address}:${port}: ${err.message}`, 'ERR_BIND'));
    s.once('error', onError);
    s.bind({ port, address, exclusive: false }, () => {
      s.removeListener('error', onError);
      resolve();
    });
  });
}
