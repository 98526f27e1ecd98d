// The client side of the ticket request of multicast-notifications-proxy-02 §4: a client that cannot let the proxy
// read the informative response (Group OSCORE end to end) sends the phantom request (ph_req, outer parts as they
// are) with outer Observe 0, proxy options and Listen-To-Multicast-Responses = the serialized tp_info (§4.1), and
// takes the notifications the proxy relays on its token. The proxy's side is observe/ticket-listener.ts.

import { EventEmitter } from 'node:events';
import { Decoder, Encoder } from 'cbor-x';
import { CborStructureError } from '../cbor/cri';
import { InformativeResponse, TpInfoUdp, decodeTpInfo, encodeTpInfo } from '../cbor/informative-response';
import { decodeCodeOptionsPayload, encodeCodeOptionsPayload } from '../coap/codec';
import { CODES, codeClass } from '../coap/codes';
import { CoapMessage, CoapOption, createMessage, getOption, sortOptions } from '../coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../coap/options';
import { CoapUri, formatUri, isMulticastAddress, parseUri, uriToOptions } from '../coap/uri';
import { CoapEndpoint, IncomingResponse, ResponseContext } from '../messaging/endpoint';
import { RemoteAddress } from '../transport/udp-transport';
import { isFresher } from './multicast-observer';
import type { ResponseVerifier } from './observe-security';
import { proxySchemeOptions, targetOptions } from '../proxy/target';
import { answeringEcho } from '../proxy/proxy-client';

/**
 * How long a one-way message to the proxy (a deregistration, a poll answer) waits for the proxy's 4.01 + Echo
 * (RFC 9175 §2.4) before it is given up: one answer is all it waits for, so this bounds the state it keeps.
 */
export const ECHO_ANSWER_WAIT_MS = 5000;

// The project's CBOR settings (cbor/informative-response.ts): no records, no tags on byte strings.
const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: false, variableMapSize: true } as never);
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false } as never);

/** Number of Listen-To-Multicast-Responses ([SUGGESTED 47], overridable like every draft option). */
export const ltmrNumber = (): number => optionNumber('Listen-To-Multicast-Responses');

export class TicketError extends Error {
  constructor(
    message: string,
    readonly code: string,
    /** the CoAP response code this error becomes */
    readonly responseCode: number = CODES.BAD_REQUEST,
    /**
     * The fixed text a proxy sends in its error response (RFC 7252 §5.5.2 diagnostic payload). `message` may quote
     * the client's bytes (host names, decoder messages) and stays local; error responses never echo them.
     */
    readonly diagnostic: string = 'invalid ticket request',
  ) {
    super(message);
  }
}

/** MNP-02 §4.1: the option value, the serialized tp_info. */
export function encodeLtmr(tp: TpInfoUdp): Buffer {
  return Buffer.from(encoder.encode(encodeTpInfo(tp)));
}

/** Decode an LTMR value as tp_info for CoAP over UDP; throws TicketError (4.00). */
export function decodeLtmr(value: Buffer): TpInfoUdp {
  // MNP-02 §4.1: length 3-1024.
  if (value.length < 3 || value.length > 1024) throw new TicketError(`Listen-To-Multicast-Responses must be 3-1024 bytes, not ${value.length}`, 'ERR_LTMR', CODES.BAD_REQUEST, 'Listen-To-Multicast-Responses must be 3-1024 bytes');
  let v: unknown;
  try {
    v = decoder.decode(value);
  } catch (err) {
    throw new TicketError(`Listen-To-Multicast-Responses is not CBOR: ${(err as Error).message}`, 'ERR_LTMR', CODES.BAD_REQUEST, 'Listen-To-Multicast-Responses is not CBOR');
  }
  try {
    return decodeTpInfo(v);
  } catch (err) {
    throw new TicketError(`Listen-To-Multicast-Responses is not a tp_info for CoAP over UDP: ${(err as Error).message}`, 'ERR_LTMR', CODES.BAD_REQUEST, 'Listen-To-Multicast-Responses is not a tp_info for CoAP over UDP');
  }
}

/** Does the request carry Listen-To-Multicast-Responses (so the proxy must not forward it)? */
export function isTicketRequest(msg: { options: CoapOption[] }): boolean {
  const n = ltmrNumber();
  return msg.options.some((o) => o.number === n);
}

const URI_OPTIONS: readonly number[] = [OPT.URI_HOST, OPT.URI_PORT, OPT.URI_PATH, OPT.URI_QUERY];
/** The options a proxy strips from a ticket before it rebuilds the phantom request (MNP-02 §4). */
export const PROXY_OPTIONS: readonly number[] = [OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT, OPT.HOP_LIMIT];

export interface TicketParts {
  code: number;
  options: CoapOption[];
  payload: Buffer;
}

/**
 * MNP-02 §4 client: the ticket request for `target` (the original request URI). The code, options and payload of
 * ph_req are taken as they are (with Group OSCORE they are the outer ones), Observe is set to 0, and LTMR carries
 * tp_info. With Proxy-Uri (default), ph_req's Uri-Path/Uri-Query are left out (RFC 7252 §5.10.2: they MUST NOT
 * appear next to Proxy-Uri) after checking they say what the target says; with `proxyScheme` the ticket keeps every
 * ph_req option and adds Proxy-Scheme + Uri-Host (+ Uri-Port) instead.
 */
export function buildTicketRequest(ir: InformativeResponse, target: string | CoapUri, token: Buffer, opts: { proxyScheme?: boolean } = {}): CoapMessage {
  if (!ir.tpInfo) throw new TicketError('the informative response has no tp_info', 'ERR_NO_TP_INFO');
  if (!ir.phReq) throw new TicketError('the informative response has no ph_req (rebuild it from the registration and pass it as phReq)', 'ERR_NO_PH_REQ');
  if (token.length > 8) throw new TicketError('a token has at most 8 bytes', 'ERR_TOKEN');
  const uri = typeof target === 'string' ? parseUri(target) : target;
  const ph = decodeCodeOptionsPayload(ir.phReq);
  if (ph.code !== CODES.GET && ph.code !== CODES.FETCH) throw new TicketError('ph_req is not a GET/FETCH', 'ERR_PH_REQ');
  const kept = ph.options.filter((o) => o.number !== OPT.OBSERVE);
  const options: CoapOption[] = [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: ltmrNumber(), value: encodeLtmr(ir.tpInfo) }];
  if (opts.proxyScheme) {
    options.push(...kept.filter((o) => o.number !== OPT.URI_HOST && o.number !== OPT.URI_PORT));
    // RFC 7252 §6.4 with RFC 6874: an IPv6 literal in brackets, its zone kept.
    options.push(...proxySchemeOptions(uri));
  } else {
    const path = kept.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
    const query = kept.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString('utf8'));
    if ((path.length || query.length) && (path.join('/') !== uri.path.join('/') || query.join('&') !== uri.query.join('&'))) {
      throw new TicketError(`ph_req is for /${path.join('/')}, not for the target ${formatUri(uri)}`, 'ERR_PH_REQ');
    }
    options.push(...kept.filter((o) => !URI_OPTIONS.includes(o.number)));
    options.push(...targetOptions(uri, 'proxy-uri'));
  }
  return createMessage({ type: 'CON', code: ph.code, token, options, payload: ph.payload });
}

// ====================================================================================================== client

export interface RelayedNotification {
  message: CoapMessage;
  /** Observe value (-1 without Observe) */
  sequence: number;
}

export interface TicketClientOptions {
  /** the proxy next to the server */
  proxy: RemoteAddress;
  /** the original request URI, e.g. coap://127.0.0.40:5683/alarm */
  target: string;
  /** the informative response (decoded; with Group OSCORE: decrypted) */
  informative: InformativeResponse;
  proxyScheme?: boolean;
  /**
   * End-to-end verification of what the proxy relays (Group OSCORE: the verifier of ph_req, observe/group-oscore.ts),
   * applied before anything else looks at a relayed message: ordering (RFC 7641 §3.4) then follows the verified
   * Observe value (RFC 8613 §7.4.1), so a forged notification with a high Observe cannot make real ones look stale.
   */
  verifier?: ResponseVerifier;
}

/**
 * Client side: send the ticket to the proxy, deliver the relayed notifications in Observe order (RFC 7641 §3.4).
 * Events: 'notification' (RelayedNotification, verified when a verifier is given), 'cancelled' (the relayed 5.03),
 * 'rejected' (Error: a relayed message that did not verify, dropped), 'error' (Error).
 */
export class TicketClient extends EventEmitter {
  readonly token: Buffer;
  /** relayed messages the verifier refused (dropped) */
  readonly counters = { rejected: 0 };
  private stop?: () => void;
  private last?: { seq: number; at: number };
  private resetNext = false;
  private ended = false;

  constructor(
    readonly endpoint: CoapEndpoint,
    private readonly o: TicketClientOptions,
  ) {
    super();
    // relayed by the proxy to us alone: after the end, a RST stops the relay (RFC 7641 §3.6), so a unicast-kind token
    this.token = endpoint.newToken(undefined, true);
  }

  /** Resolves once the proxy accepted the ticket (its ACK); rejects with the proxy's error. */
  start(echo?: Buffer): Promise<void> {
    const msg = buildTicketRequest(this.o.informative, this.o.target, this.token, { proxyScheme: this.o.proxyScheme });
    msg.messageId = this.endpoint.newMessageId(this.o.proxy);
    if (echo) msg.options = sortOptions([...msg.options, { number: OPT.ECHO, value: echo }]);
    return new Promise((resolve, reject) => {
      this.stop ??= this.endpoint.listen(this.token, (res) => this.onResponse(res), this.o.proxy);
      this.endpoint.sendMessage(msg, this.o.proxy, {
        onAck: (ack) => {
          const challenge = getOption(ack, OPT.ECHO);
          if (ack.code === CODES.UNAUTHORIZED && challenge !== undefined && !echo) {
            // RFC 9175 §2.4: the proxy verifies this address before it listens for it; repeat with its Echo.
            this.start(challenge).then(resolve, reject);
            return;
          }
          if (ack.code !== 0 && codeClass(ack.code) !== 2) {
            this.end();
            reject(new TicketError(`the proxy rejected the ticket: ${ack.payload.toString()}`, 'ERR_REJECTED', ack.code));
          } else resolve();
        },
        onReset: () => {
          this.end();
          reject(new TicketError('the proxy answered the ticket with RST', 'ERR_RESET'));
        },
        onFail: (err) => {
          this.end();
          reject(err);
        },
      });
    });
  }

  private onResponse(res: IncomingResponse): void {
    let m = res.message;
    if (this.resetNext) {
      // RFC 7641 §3.6: reject the notification with RST; the proxy then forgets this client.
      if (m.type !== 'ACK') this.endpoint.sendMessage(createMessage({ type: 'RST', code: 0, messageId: m.messageId }), res.remote);
      this.end();
      return;
    }
    if (m.type === 'ACK' && m.code === CODES.UNAUTHORIZED && getOption(m, OPT.ECHO) !== undefined) return; // start() repeats it
    // The proxy's own errors (unprotected, no Observe) are for this hop; everything else must verify end to end.
    const endToEnd = this.o.verifier !== undefined && (getOption(m, OPT.OSCORE) !== undefined || codeClass(m.code) === 2 || getOption(m, OPT.OBSERVE) !== undefined);
    if (this.o.verifier && endToEnd) {
      try {
        m = this.o.verifier.verify(m);
      } catch (err) {
        // RFC 8613 §8.4: dropped without effect on the observation (forged, replayed, from another sender)
        this.counters.rejected++;
        if (this.listenerCount('rejected')) this.emit('rejected', err);
        return;
      }
    }
    const obs = getOption(m, OPT.OBSERVE);
    if (obs === undefined && codeClass(m.code) !== 2) {
      // A protected end (OMN-15 §9.2.4) looked like any notification to the proxy, which keeps listening for this
      // client: tell it (RFC 7641 §3.6 on the ticket's token). The proxy's own errors ended it there already.
      if (endToEnd) this.cancel('deregister');
      else this.end();
      if (m.code === CODES.SERVICE_UNAVAILABLE) this.emit('cancelled');
      else if (m.type !== 'ACK') this.emit('error', new TicketError(`the observation ended: ${m.payload.toString()}`, 'ERR_ENDED', m.code));
      return;
    }
    const seq = obs === undefined ? -1 : decodeUint(obs);
    const now = Date.now();
    if (obs !== undefined && this.last && !isFresher(this.last.seq, this.last.at, seq, now)) return; // reordered
    if (obs !== undefined) this.last = { seq, at: now };
    this.emit('notification', { message: m, sequence: seq } satisfies RelayedNotification);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.stop?.();
    this.stop = undefined;
  }

  /**
   * Leave: 'deregister' (default) sends GET + Observe 1 on the same token to the proxy (NON; only a 4.01 + Echo
   * is acted on, for at most ECHO_ANSWER_WAIT_MS); 'reset' answers the next relayed notification with RST; 'forget'
   * only stops listening.
   */
  cancel(mode: 'deregister' | 'reset' | 'forget' = 'deregister'): void {
    if (this.ended) return;
    if (mode === 'reset') {
      this.resetNext = true;
      return;
    }
    this.end();
    if (mode === 'deregister') {
      const uri = parseUri(this.o.target);
      const options = [{ number: OPT.OBSERVE, value: encodeUint(1) }, ...targetOptions(uri, 'proxy-uri')];
      // RFC 9175 §2.4: once its Echo interval has passed, the proxy verifies this address again before it takes the
      // deregistration: answer its 4.01 + Echo once (waiting at most ECHO_ANSWER_WAIT_MS); any other answer (the
      // latest notification, RFC 7641 §3.6) or none ends it.
      answeringEcho((echo) =>
        this.endpoint.request({ type: 'NON', code: CODES.GET, options: sortOptions([...options, ...echo]) }, this.o.proxy, { confirmable: false, token: this.token, timeout: ECHO_ANSWER_WAIT_MS }),
      ).catch(() => undefined);
    }
  }
}
