// Deterministic Requests (draft-ietf-core-cacheable-oscore-02, editor's copy at core-wg/cacheable-oscore a551d2a,
// §3): every member of a group protects the same safe plain request into the same bytes, under the Sender ID of the
// group's Deterministic Client, so a proxy's cache (groupcomm-proxy-07 §7.4) can serve protected group exchanges.
// The request is pairwise mode with Partial IV 0 and a key derived from a hash of the request (§3.4.2), carried in
// the Request-Hash option (§3.3); servers verify it without a replay window (§3.4.3) and answer in group mode with
// outer 2.05 and Max-Age (§3.4.4, applied by protect.ts from the binding).

import crypto from 'node:crypto';
import { CODES, codeToString, isRequestCode } from '../../coap/codes';
import { CoapFormatError, decodeCodeOptionsPayload, encodeCodeOptionsPayload } from '../../coap/codec';
import { CoapMessage, CoapOption, sortOptions } from '../../coap/message';
import { OPT } from '../../coap/options';
import { ClientBinding, ServerBinding } from '../binding';
import type { MessageBinding, PeerContext, RequestContext } from '../capabilities';
import { decodeOscoreOption, encodeInfo, encodeOscoreOption } from '../cose';
import { EchoChallenges } from '../echo';
import { DIAGNOSTICS, OscoreError } from '../errors';
import { hkdf } from '../hkdf';
import { mergeOptions, splitOptions } from '../option-split';
import type { LayerOptions, MessageParts, ProtectRequestOptions, VerifiedRequest } from '../protect';
import { ReplayWindow } from '../replay';
import type { SenderSequence } from '../sequence';
import { encodeGroupAad, encodeGroupAadArray } from './cose-group';
import type { GroupContext } from './group-context';

/** Request-Hash (§3.3), [SUGGESTED 548]: Elective, Safe-to-Forward, part of the Cache-Key, not repeatable. */
export const REQUEST_HASH_OPTION = 548;

/** COSE hash algorithms ("COSE Algorithms" registry) usable as 'det_hash_alg' (§4). */
export const DETERMINISTIC_HASH: Readonly<Record<number, { name: string; length: number }>> = {
  [-16]: { name: 'sha256', length: 32 },
  [-43]: { name: 'sha384', length: 48 },
  [-44]: { name: 'sha512', length: 64 },
};

/** What the Group Manager tells members about the Deterministic Client (§3.4.1, §4 'det_senderId', 'det_hash_alg'). */
export interface DeterministicClientConfig {
  senderId: Uint8Array;
  /** COSE algorithm of the hash H (§3.4.2 step 2); default -16 (SHA-256) */
  hashAlg?: number;
}

const EMPTY = Buffer.alloc(0);
const PIV_ZERO = Buffer.from([0]);

/** @internal validated configuration (group-context.ts) */
export function checkDeterministicConfig(c: DeterministicClientConfig, g: GroupContext): { senderId: Buffer; hashAlg: number } {
  if (!(c.senderId instanceof Uint8Array)) throw new OscoreError('ERR_OSCORE_CONFIG', 'deterministic client senderId must be a byte string');
  const senderId = Buffer.from(c.senderId);
  const hashAlg = c.hashAlg ?? -16;
  if (!DETERMINISTIC_HASH[hashAlg]) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported hash algorithm ${hashAlg} for Deterministic Requests`);
  // §3.4.2: the request is protected in pairwise mode; §3.4.4 step 4: the response in group mode.
  if (!g.hasPairwiseMode || !g.hasGroupMode) throw new OscoreError('ERR_OSCORE_CONFIG', 'Deterministic Requests need both the pairwise mode and the group mode');
  if (senderId.equals(g.senderId)) throw new OscoreError('ERR_OSCORE_CONFIG', 'the Deterministic Client\'s Sender ID is our own');
  return { senderId, hashAlg };
}

/** Whether a message (as a proxy sees it) is a Deterministic Request: outer FETCH with OSCORE and Request-Hash (§3.4.2 steps 4, 8). */
export function isDeterministicRequest(msg: { code: number; options: CoapOption[] }): boolean {
  return msg.code === CODES.FETCH && msg.options.some((o) => o.number === OPT.OSCORE) && msg.options.some((o) => o.number === REQUEST_HASH_OPTION);
}

/** The Class I options of a response to a Deterministic Request: just Request-Hash (§3.4.4), encoded as CoAP options. */
function encodeClassI(requestHash: Buffer): Buffer {
  return encodeCodeOptionsPayload(0, [{ number: REQUEST_HASH_OPTION, value: requestHash }], EMPTY).subarray(1);
}

/**
 * The parts both sides share: the Deterministic Client's Sender Key, the external_aad with an empty 'sender_cred'
 * (§3.4.2 step 1), the hash H over Sender Key | aad_array | plaintext (step 2) and the key K derived from it as a
 * pairwise key (step 3: HKDF with the Sender Key as salt, H as IKM, the Deterministic Client's Sender ID in 'info').
 */
class DeterministicKeys {
  readonly senderId: Buffer;
  readonly hashAlg: number;
  readonly #senderKey: Buffer;

  constructor(
    protected readonly g: GroupContext,
    config: { senderId: Buffer; hashAlg: number },
    senderKey: Buffer,
  ) {
    this.senderId = config.senderId;
    this.hashAlg = config.hashAlg;
    this.#senderKey = senderKey;
  }

  get idContext(): Buffer {
    return this.g.idContext;
  }

  get sequence(): SenderSequence {
    return this.g.sequence;
  }

  /** §3.4.2 step 1: the nonce from the Deterministic Client's Sender ID and Partial IV 0 (RFC 10021 §3.3). */
  deterministicNonce(piv: Uint8Array): Buffer {
    return this.g.nonce(this.g.pairwiseAead!, this.senderId, piv);
  }

  binding(piv: Buffer, oscoreOption: Buffer): MessageBinding {
    return { nonce: this.deterministicNonce(piv), piv, pivId: this.senderId, isRequest: true, requestKid: this.senderId, requestPiv: piv, requestKidContext: this.g.idContext, oscoreOption };
  }

  aadArray(m: MessageBinding): Buffer {
    return encodeGroupAadArray(this.g.algorithms, m, EMPTY, this.g.gmCredential);
  }

  hash(aadArray: Buffer, plaintext: Buffer): Buffer {
    return crypto.createHash(DETERMINISTIC_HASH[this.hashAlg].name).update(this.#senderKey).update(aadArray).update(plaintext).digest();
  }

  key(h: Buffer): Buffer {
    const aead = this.g.pairwiseAead!;
    return hkdf(this.g.hkdf, h, this.#senderKey, encodeInfo(this.senderId, this.g.idContext, aead.alg, 'Key', aead.keyLength), aead.keyLength);
  }
}

/** The client side: protects a safe plain request as the Deterministic Client (§3.4.2) and finds who answered (§3.4.5). */
export class DeterministicRequester extends DeterministicKeys implements RequestContext {
  readonly mode = 'pairwise' as const;
  readonly manyResponders = true;
  readonly sendKidContext = true;
  readonly kidInResponses = true;

  senderNonce(piv: Uint8Array): Buffer {
    return this.deterministicNonce(piv);
  }

  seal(): Buffer {
    throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'a Deterministic Request is protected as a whole (buildRequest)');
  }

  /**
   * §3.4.4 (client) steps 1 and 3, §3.4.5: the response is in group mode and names its server by kid; its Recipient
   * Context verifies it with that server's credential. A response without kid, or in pairwise mode, is rejected.
   */
  responder(kid: Buffer | undefined, group: boolean): PeerContext | undefined {
    if (kid === undefined || !group) return undefined;
    return this.g.peer(kid, 'group');
  }

  buildRequest(msg: MessageParts, opts: ProtectRequestOptions): { message: { code: number; options: CoapOption[]; payload: Buffer }; binding: ClientBinding } {
    // §3.4.3: servers accept only safe requests, since there is no replay protection.
    if (msg.code !== CODES.GET && msg.code !== CODES.FETCH) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `a Deterministic Request must be safe (GET or FETCH), not ${codeToString(msg.code)}`);
    const options = (msg.options ?? []).filter((o) => o.number !== REQUEST_HASH_OPTION);
    // §3.1: Inner Echo cannot prove freshness here; an Observe registration would need §3.1's aggregation, not built.
    if (options.some((o) => o.number === OPT.ECHO)) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'no Echo in a Deterministic Request (draft-ietf-core-cacheable-oscore §3.1)');
    if (options.some((o) => o.number === OPT.OBSERVE)) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'Observe with Deterministic Requests is not implemented');
    const { inner, outer } = splitOptions(options, true, opts.classE ? new Set(opts.classE) : undefined);
    let plaintext: Buffer;
    try {
      plaintext = encodeCodeOptionsPayload(msg.code, inner, msg.payload ?? EMPTY);
    } catch (err) {
      throw new OscoreError('ERR_OSCORE_INVALID_INPUT', `cannot encode plaintext: ${(err as Error).message}`);
    }
    // Step 1: kid = the Deterministic Client's Sender ID, Partial IV 0, kid context = the Gid; no Group Flag.
    const oscore = encodeOscoreOption({ piv: PIV_ZERO, kid: this.senderId, kidContext: this.g.idContext });
    const m = this.binding(PIV_ZERO, oscore);
    const aadArray = this.aadArray(m);
    // Steps 2, 3, 6.
    const h = this.hash(aadArray, plaintext);
    const ciphertext = this.g.pairwiseAead!.encrypt(this.key(h), m.nonce, encodeGroupAad(aadArray), plaintext);
    for (const o of opts.outerOptions ?? []) {
      if (o.number === OPT.OSCORE || o.number === REQUEST_HASH_OPTION) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'outerOptions must not contain OSCORE or Request-Hash');
    }
    // Steps 4 and 8: Request-Hash = H, outer code FETCH.
    const outerOptions = sortOptions([...outer, { number: OPT.OSCORE, value: oscore }, { number: REQUEST_HASH_OPTION, value: h }, ...(opts.outerOptions ?? [])]);
    const binding = new ClientBinding({
      context: this,
      kid: this.senderId,
      piv: PIV_ZERO,
      nonce: m.nonce,
      kidContext: this.g.idContext,
      observe: false,
      multipleResponses: opts.multipleResponses ?? this.manyResponders,
      classI: encodeClassI(h),
      requestHash: h,
    });
    return { message: { code: CODES.FETCH, options: outerOptions, payload: ciphertext }, binding };
  }
}

function decryptFailed(why: string): OscoreError {
  return new OscoreError('ERR_OSCORE_DECRYPT', why, DIAGNOSTICS.DECRYPT);
}

/**
 * The server side: the Recipient Context of the Deterministic Client (§3.4.3 step 4). It has no credential and no
 * replay window; it verifies a whole request (verifyRequest), and its responses are protected by the server's own
 * group-mode Sender Context (§3.4.4 step 4).
 */
export class DeterministicPeer extends DeterministicKeys implements PeerContext {
  readonly mode = 'pairwise' as const;
  readonly manyResponders = false;
  readonly sendKidContext = true;
  readonly kidInResponses = true;
  /** never consulted: §3.4.3 step 5 (the safe-method and hash checks replace it) */
  readonly replay = new ReplayWindow();
  readonly echo = new EchoChallenges();

  get recipientId(): Buffer {
    return this.senderId;
  }

  recipientNonce(piv: Uint8Array): Buffer {
    return this.deterministicNonce(piv);
  }

  senderNonce(piv: Uint8Array): Buffer {
    return this.g.groupSender().senderNonce(piv);
  }

  seal(plaintext: Buffer, m: MessageBinding): Buffer {
    return this.g.groupSender().seal(plaintext, m);
  }

  open(): Buffer {
    throw decryptFailed('a Deterministic Request is verified as a whole (verifyRequest)');
  }

  responder(): PeerContext | undefined {
    return undefined;
  }

  withMode(mode: string): PeerContext | undefined {
    return mode === 'pairwise' ? this : undefined;
  }

  /** §3.4.3 steps 2-5 and the checks after them. Errors carry the response RFC 8613 §8.2 / the draft allow. */
  verifyRequest(msg: CoapMessage, opts: LayerOptions): VerifiedRequest {
    const value = msg.options.find((o) => o.number === OPT.OSCORE)!.value;
    const f = decodeOscoreOption(value);
    // §3.4.2 step 1: a Deterministic Request always carries Partial IV 0 (encoded as the one byte 0x00, RFC 8613 §6.1).
    if (!f.piv || f.piv.length !== 1 || f.piv[0] !== 0) throw decryptFailed('Deterministic Request with a Partial IV other than 0');
    // Step 2: the kid alone is not enough, the Request-Hash must be there too.
    const rh = msg.options.find((o) => o.number === REQUEST_HASH_OPTION);
    if (!rh) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'the Deterministic Client\'s kid without Request-Hash', DIAGNOSTICS.CONTEXT_NOT_FOUND);
    // Step 3; a value of another length than the hash cannot be one (and bounds the work).
    const h = rh.value;
    if (h.length !== DETERMINISTIC_HASH[this.hashAlg].length) throw decryptFailed('Request-Hash of the wrong length');
    // Steps 4-5: the key from H, the external_aad with an empty sender_cred, no replay check.
    const m = this.binding(f.piv!, Buffer.from(value));
    if (f.kidContext) m.requestKidContext = f.kidContext;
    const aadArray = this.aadArray(m);
    let plaintext: Buffer;
    try {
      plaintext = this.g.pairwiseAead!.decrypt(this.key(h), m.nonce, encodeGroupAad(aadArray), msg.payload);
    } catch {
      throw decryptFailed('decryption failed');
    }
    // Then: H recomputed from the plain request must match, so a guessed tag cannot poison a cache (MAY 4.00 with
    // Max-Age 0, "Decryption failed": what oscoreErrorResponse makes of this error).
    if (!this.hash(aadArray, plaintext).equals(h)) throw decryptFailed('Request-Hash does not match the request');
    let inner;
    try {
      inner = decodeCodeOptionsPayload(plaintext);
    } catch (err) {
      if (!(err instanceof CoapFormatError)) throw err;
      throw new OscoreError('ERR_OSCORE_INNER_FORMAT', `malformed plaintext: ${err.reason}`, { responseCode: CODES.BAD_REQUEST });
    }
    if (!isRequestCode(inner.code)) throw new OscoreError('ERR_OSCORE_INNER_FORMAT', `inner code ${codeToString(inner.code)} in a request`, { responseCode: CODES.BAD_REQUEST });
    // And: only safe requests, since nothing stops a replay (the draft's SHOULD is a protected 4.01; this one is not).
    if (inner.code !== CODES.GET && inner.code !== CODES.FETCH) throw new OscoreError('ERR_OSCORE_NOT_SAFE', `Deterministic Request with the unsafe method ${codeToString(inner.code)}`, { responseCode: CODES.UNAUTHORIZED });
    // An Inner Observe (§3.1 aggregation) is not served here: the request is answered as a plain GET / FETCH.
    const innerOptions = inner.options.filter((o) => o.number !== OPT.OBSERVE);
    const merged = mergeOptions(msg.options.filter((o) => o.number !== REQUEST_HASH_OPTION), innerOptions, opts.classE ? new Set(opts.classE) : undefined);
    const options = merged.options.filter((o) => o.number !== OPT.OBSERVE);
    const binding = new ServerBinding({
      context: this.g.groupSender(),
      kid: f.kid!,
      piv: f.piv!,
      nonce: m.nonce,
      ...(f.kidContext ? { kidContext: f.kidContext } : {}),
      observe: false,
      // §3.4.4 step 5: the request nonce is never reused, every response has the server's own Partial IV.
      requestFresh: false,
      classI: encodeClassI(h),
      requestHash: h,
    });
    return {
      message: { type: msg.type, code: inner.code, messageId: msg.messageId, token: msg.token, options, payload: inner.payload },
      context: this,
      binding,
      discarded: merged.discarded,
    };
  }
}
