// A map keyed by a peer's address and port, looked up without building a key string per datagram (the key of a
// string-keyed map, `${address}|${port}`, was made and hashed anew for every message). Used for the state the
// message layer keeps per peer: Message ID counters (message-ids.ts) and windows of recent NON responses
// (recent-non.ts).

import { RemoteAddress } from '../transport/udp-transport';

export class EndpointMap<V> {
  /** address → port → value */
  private readonly byAddress = new Map<string, Map<number, V>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(remote: RemoteAddress): V | undefined {
    return this.byAddress.get(remote.address)?.get(remote.port);
  }

  /** Add or replace the value for `remote`. */
  set(remote: RemoteAddress, value: V): void {
    let ports = this.byAddress.get(remote.address);
    if (!ports) {
      ports = new Map();
      this.byAddress.set(remote.address, ports);
    }
    if (!ports.has(remote.port)) this.count++;
    ports.set(remote.port, value);
  }

  delete(remote: RemoteAddress): boolean {
    const ports = this.byAddress.get(remote.address);
    if (!ports?.delete(remote.port)) return false;
    this.count--;
    if (ports.size === 0) this.byAddress.delete(remote.address);
    return true;
  }

  values(): IterableIterator<V> {
    return (function* (m: Map<string, Map<number, V>>) {
      for (const ports of m.values()) yield* ports.values();
    })(this.byAddress);
  }

  /**
   * Delete the values `drop` says to, at most `limit` of them, going through addresses in the order they were first
   * added; returns how many went.
   */
  deleteWhere(drop: (value: V) => boolean, limit = Infinity): number {
    let dropped = 0;
    for (const [address, ports] of this.byAddress) {
      for (const [port, v] of ports) {
        if (dropped >= limit) return dropped;
        if (drop(v)) {
          ports.delete(port);
          this.count--;
          dropped++;
        }
      }
      if (ports.size === 0) this.byAddress.delete(address);
    }
    return dropped;
  }

  clear(): void {
    this.byAddress.clear();
    this.count = 0;
  }
}
