// Recipient Context lookup for servers with several contexts (RFC 8613 §3.3, §8.2 step 2): by Recipient ID = kid,
// narrowed by `kid context` when the request carries one. Without a kid context, a kid shared by several contexts
// is ambiguous; the registry then prefers a context without ID Context and otherwise reports "not found" rather
// than guess (trial decryption is left to callers that need it).

import { ContextResolver } from './protect';
import { SecurityContext } from './context';

const key = (recipientId: Buffer, idContext?: Buffer): string => `${idContext ? idContext.toString('hex') : '-'}/${recipientId.toString('hex')}`;

export class ContextRegistry {
  private readonly byKey = new Map<string, SecurityContext>();

  add(ctx: SecurityContext): this {
    const k = key(ctx.recipientId, ctx.idContext);
    if (this.byKey.has(k)) throw new RangeError(`a context with Recipient ID ${ctx.recipientId.toString('hex')} and this ID Context is already registered`);
    this.byKey.set(k, ctx);
    return this;
  }

  remove(ctx: SecurityContext): boolean {
    const k = key(ctx.recipientId, ctx.idContext);
    return this.byKey.get(k) === ctx && this.byKey.delete(k);
  }

  find(kid: Buffer, kidContext?: Buffer): SecurityContext | undefined {
    if (kidContext !== undefined) return this.byKey.get(key(kid, kidContext));
    const plain = this.byKey.get(key(kid));
    if (plain) return plain;
    const matches = [...this.byKey.values()].filter((c) => c.recipientId.equals(kid));
    return matches.length === 1 ? matches[0] : undefined;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** A resolver for unprotectRequest(). */
  get resolver(): ContextResolver {
    return (kid, kidContext) => this.find(kid, kidContext);
  }
}
