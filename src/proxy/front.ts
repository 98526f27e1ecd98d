// The CoAP front of the proxy: the leg towards the client. The answer to the request itself (piggybacked, or an
// empty ACK and separate responses, RFC 7252 §5.2), each relayed response as a separate NON or CON on the client's
// token (groupcomm-proxy-07 §5.4 step 2; RFC 7641 §4.5: now and then a CON), the client's RST or missing ACK ending
// the exchange (RFC 7252 §4.2-§4.3), and the OSCORE layers the client applied for the proxy put back on every
// response in reverse order (oscore-capable-proxies-07 §2.5, §2.2 for the 5.02 on an unrecognized option).
// Towards a source that is not identified the front never sends more than 3x the bytes that source sent
// (RFC 9000 §8.1) and keeps no reply in the duplicate cache. Another front (HTTP, groupcomm-proxy-07 §9) implements
// ClientLeg beside this one; the stages behind it see only that interface.

import { CODES, codeToString } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, sortOptions } from '../coap/message';
import { CoapEndpoint, IncomingRequest, ResponseContext, SendOptions } from '../messaging/endpoint';
import { PROXY_TO_CLIENT_VIEW, RemovedLayer, escalatedOptions, firstUnrecognizedOption, protectResponseLayers } from '../oscore/nested';
import { MessageParts } from '../oscore/protect';
import { ProxyClient, encodedSizeBound, encodedSizeFloor, withinAmplificationLimit } from './admission';
import { relayDatagram } from './relay-datagram';

/** What the stages behind the front use to talk to the client. */
export interface ClientLeg {
  readonly client: ProxyClient;
  readonly token: Buffer;
  /** OSCORE layers removed from the request (outermost first); empty for a plain client */
  readonly layers: RemovedLayer[];
  /** the client is identified (OSCORE, or an allow-listed address verified with Echo) */
  identified: boolean;
  /** the one answer to the request itself */
  answer(parts: MessageParts): void;
  /** accept the request without answering it now (relayed responses follow as separate messages) */
  accept(): void;
  /** protect `parts` for the client (undefined when that fails: nothing then goes out) */
  protect(parts: MessageParts, keep?: CoapOption[]): MessageParts | undefined;
  /** one relayed response on the client's token; `gone` is called when the client RSTs it or never ACKs it */
  relay(parts: MessageParts, keep: CoapOption[], confirmable: boolean, gone: (reason: string) => void): boolean;
  /**
   * The same as a NON, patched from the server's datagram (`data`, decoded as `m`) with `added` inserted
   * (relay-datagram.ts). False when this leg cannot (OSCORE layers to put back, another front, an unusual
   * datagram): nothing was sent and the caller relays with relay().
   */
  relayDatagram?(data: Buffer, m: CoapMessage, added: CoapOption[], gone: (reason: string) => void): boolean;
  /** the exchange is over: a late RST or missing ACK is no longer reported */
  close(): void;
}

export interface CoapFrontOptions {
  /** option numbers recognized beyond the option table (oscore-capable-proxies-07 §2.2) */
  understoodOptions?: number[];
  /** reports a response that could not be protected */
  onDrop?: (client: ProxyClient, token: Buffer, reason: string) => void;
}

/** A ResponseContext option the message layer reads (keepReply: false = keep no reply bytes for this source). */
type RespondOpts = { separate?: boolean };
const NO_KEEP = { keepReply: false } as RespondOpts;

/**
 * RFC 7252 §4.2-§4.3: a RST to a relayed CON or NON (the message layer matches MID and peer), or no ACK to a CON,
 * ends the exchange. Built outside the leg so that the callbacks the message layer keeps capture nothing else.
 */
function endsOn(state: { closed: boolean }, gone: (reason: string) => void): { onReset(): void; onFail(): void } {
  return {
    onReset: () => {
      if (!state.closed) gone('client sent RST');
    },
    onFail: () => {
      if (!state.closed) gone('client did not acknowledge');
    },
  };
}

/**
 * One client's leg: a class, so that a pending exchange holds its fields and no closures of its own. The message
 * layer's ResponseContext (and with it the request) is let go once the request is answered or accepted: a pending
 * group exchange keeps only what relaying needs (docs/BENCHMARKS.md §6.6).
 */
class CoapLeg implements ClientLeg {
  identified: boolean;
  private ctx: ResponseContext | undefined;
  /** what the message layer's RST / no-ACK callbacks of relayed messages see (made at the first relay) */
  private state?: { closed: boolean };
  /** those callbacks, made at the first relay and shared by every relayed message of the exchange */
  private ends?: SendOptions;

  constructor(
    private readonly front: CoapFront,
    ctx: ResponseContext,
    readonly client: ProxyClient,
    readonly token: Buffer,
    readonly layers: RemovedLayer[],
    private readonly requestBytes: number,
  ) {
    this.ctx = ctx;
    this.identified = client.kid !== undefined;
  }

  protect(parts: MessageParts, keep: CoapOption[] = []): MessageParts | undefined {
    return this.layers.length ? this.front.protectForClient(this.layers, parts, this.client, this.token, keep) : parts;
  }

  answer(parts: MessageParts): void {
    const ctx = this.ctx;
    if (!ctx) return; // answered or accepted already: the message layer would ignore it too
    this.ctx = undefined;
    const out = this.protect(parts);
    if (!out) return ctx.ignore();
    if (!this.identified) {
      // RFC 9000 §8.1: at most 3x the bytes received from a source whose address is not verified.
      if (!withinAmplificationLimit(this.requestBytes, encodedSizeBound({ token: this.token, options: out.options, payload: out.payload }))) {
        this.front.amplificationDrops++;
        return ctx.ignore();
      }
      return ctx.respond({ code: out.code, options: out.options ?? [], payload: out.payload }, NO_KEEP);
    }
    ctx.respond({ code: out.code, options: out.options ?? [], payload: out.payload });
  }

  accept(): void {
    const ctx = this.ctx;
    this.ctx = undefined;
    ctx?.ignore();
  }

  relay(parts: MessageParts, keep: CoapOption[], confirmable: boolean, gone: (reason: string) => void): boolean {
    const out = this.protect(parts, keep);
    if (!out) return false;
    const ep = this.front.endpoint;
    const msg = createMessage({ type: confirmable ? 'CON' : 'NON', code: out.code, token: this.token, messageId: ep.newMessageId(this.client), options: out.options, payload: out.payload });
    ep.sendMessage(msg, this.client, (this.ends ??= endsOn((this.state ??= { closed: false }), gone)));
    return true;
  }

  relayDatagram(data: Buffer, m: CoapMessage, added: CoapOption[], gone: (reason: string) => void): boolean {
    // oscore-capable-proxies-07 §2.5: a response to a client that used OSCORE for the proxy is protected in full
    if (this.layers.length) return false;
    const ep = this.front.endpoint;
    const messageId = ep.newMessageId(this.client);
    const bytes = relayDatagram(data, m, 1, messageId, this.token, added);
    if (!bytes) return false;
    ep.sendEncoded(bytes, 'NON', messageId, this.client, (this.ends ??= endsOn((this.state ??= { closed: false }), gone)));
    return true;
  }

  close(): void {
    // the callbacks of what was relayed stop reporting (without a relay there are none)
    if (this.state) this.state.closed = true;
  }
}

export class CoapFront {
  /** responses not sent because they would exceed 3x what an unidentified source sent */
  amplificationDrops = 0;

  constructor(
    readonly endpoint: CoapEndpoint,
    private readonly o: CoapFrontOptions = {},
  ) {}

  leg(req: IncomingRequest, ctx: ResponseContext, client: ProxyClient, layers: RemovedLayer[]): ClientLeg {
    // The token is copied out of the request's datagram, so a pending exchange does not keep that datagram alive.
    return new CoapLeg(this, ctx, client, Buffer.from(req.message.token), layers, encodedSizeFloor(req.message));
  }

  /**
   * oscore-capable-proxies-07 §2.2: every option the proxy protects must be one it recognizes, else 5.02 goes back
   * instead, carrying `keep` (e.g. Reply-From). Then §2.5: the removed layers in reverse order, class U options
   * escalated for the client, and a Partial IV on every response but the first (§2.5.1).
   */
  /** @internal (CoapLeg) */
  protectForClient(layers: RemovedLayer[], res: MessageParts, client: ProxyClient, token: Buffer, keep: CoapOption[]): MessageParts | undefined {
    let parts = res;
    const unknown = firstUnrecognizedOption(res.options, this.o.understoodOptions);
    if (unknown !== undefined) {
      parts = { code: CODES.BAD_GATEWAY, options: sortOptions(keep.slice()), payload: Buffer.from(`unrecognized option ${unknown} in response`, 'utf8') };
    }
    try {
      return protectResponseLayers(layers, parts, { classE: (_depth, m) => escalatedOptions(m.options ?? [], PROXY_TO_CLIENT_VIEW) });
    } catch (err) {
      this.o.onDrop?.(client, token, `cannot protect the ${codeToString(parts.code)} for the client: ${(err as Error).message}`);
      return undefined;
    }
  }

  close(): void {
    // nothing held: RST routing lives in the message layer
  }
}
