// Recipient Context lookup for servers with several contexts (RFC 8613 §3.3, §8.2 step 2): by Recipient ID = kid,
// narrowed by `kid context` when the request carries one. Without a kid context, a kid shared by several contexts
// is ambiguous; the registry then prefers a context without ID Context and otherwise reports "not found" rather
// than guess (trial decryption is left to callers that need it). Group OSCORE contexts (RFC 10021) are found by
// their Gid, which every Group OSCORE request carries as kid context (§3.2), and then resolve the kid themselves.

import type { ContextSource, PeerContext } from './capabilities';
import type { ContextResolver } from './protect';

const key = (recipientId: Buffer, idContext?: Buffer): string => `${idContext ? idContext.toString('hex') : '-'}/${recipientId.toString('hex')}`;

export class ContextRegistry implements ContextSource {
  private readonly byKey = new Map<string, PeerContext>();
  private readonly groups = new Map<string, ContextSource>();

  add(ctx: PeerContext): this {
    const k = key(ctx.recipientId, ctx.idContext);
    if (this.byKey.has(k)) throw new RangeError(`a context with Recipient ID ${ctx.recipientId.toString('hex')} and this ID Context is already registered`);
    this.byKey.set(k, ctx);
    return this;
  }

  remove(ctx: PeerContext): boolean {
    const k = key(ctx.recipientId, ctx.idContext);
    return this.byKey.get(k) === ctx && this.byKey.delete(k);
  }

  /** A Group OSCORE context (or any source) answering for every kid under `gid`. */
  addGroup(gid: Buffer, group: ContextSource): this {
    const k = gid.toString('hex');
    if (this.groups.has(k)) throw new RangeError('a group with this Gid is already registered');
    this.groups.set(k, group);
    return this;
  }

  removeGroup(gid: Buffer): boolean {
    return this.groups.delete(gid.toString('hex'));
  }

  find(kid: Buffer, kidContext?: Buffer, group = false): PeerContext | undefined {
    if (kidContext !== undefined) {
      const g = this.groups.get(kidContext.toString('hex'));
      if (g) return g.resolve(kid, kidContext, group);
      return this.byKey.get(key(kid, kidContext));
    }
    const plain = this.byKey.get(key(kid));
    if (plain) return plain;
    const matches = [...this.byKey.values()].filter((c) => c.recipientId.equals(kid));
    return matches.length === 1 ? matches[0] : undefined;
  }

  resolve(kid: Buffer, kidContext: Buffer | undefined, group: boolean): PeerContext | undefined {
    return this.find(kid, kidContext, group);
  }

  get size(): number {
    return this.byKey.size + this.groups.size;
  }

  /** A resolver for unprotectRequest(). */
  get resolver(): ContextResolver {
    return (kid, kidContext, group) => this.find(kid, kidContext, group);
  }
}
