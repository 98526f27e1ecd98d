// Deterministic Requests (draft-ietf-core-cacheable-oscore-02, editor's copy at core-wg/cacheable-oscore a551d2a,
// §3): every member of a group protects the same safe plain request into the same bytes, under the Sender ID of the
// group's Deterministic Client, so a proxy's cache (groupcomm-proxy-07 §7.4) can serve protected group exchanges.
// The request is pairwise mode with Partial IV 0 and a key derived from a hash of the request (§3.4.2), carried in
// the Request-Hash option (§3.3); servers verify it without a replay window (§3.4.3) and answer in group mode with
// outer 2.05 and Max-Age (§3.4.4, applied by protect.ts from the binding). Also: the Inner Observe of §3.1 / §3.4.2
// step 5 (observing and non-observing members send the same bytes), the Padding option of App. A, and the protected
// 4.01 to an unsafe method (§3.4.3).

import crypto from 'node:crypto';
import { CODES, codeToString, isRequestCode } from '../../coap/codes';
import { CoapFormatError, decodeCodeOptionsPayload, encodeCodeOptionsPayload } from '../../coap/codec';
import { CoapMessage, CoapOption, sortOptions } from '../../coap/message';
import { OPT, decodeUint } from '../../coap/options';
import { ClientBinding, ServerBinding } from '../binding';
import type { MessageBinding, PeerContext, RequestContext } from '../capabilities';
import { decodeOscoreOption, encodeInfo, encodeOscoreOption } from '../cose';
import { EchoChallenges } from '../echo';
import { DIAGNOSTICS, OscoreError, UnsafeDeterministicRequestError } from '../errors';
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

/** Padding (App. A.1) [SUGGESTED 64988]: Elective, Safe-to-Forward, NoCacheKey, repeatable, Class E. */
export const PADDING_OPTION = 64988;

/** Largest padding block size accepted (bytes). */
export const MAX_PADDING_BLOCK = 1024;

/**
 * What the Group Manager tells members about the Deterministic Client (§3.4.1, §4 'det_senderId', 'det_hash_alg'),
 * and what the members of the group agree on so that their requests stay identical (§3.1: `innerObserve`,
 * `padding`). A member whose setting differs produces other bytes: its requests miss the cache, nothing worse.
 */
export interface DeterministicClientConfig {
  senderId: Uint8Array;
  /** COSE algorithm of the hash H (§3.4.2 step 2); default -16 (SHA-256) */
  hashAlg?: number;
  /**
   * §3.1, §3.4.2 step 5: every Deterministic Request carries an Inner Observe 0 (register), also when no observation
   * is intended (then without an Outer Observe, step 7), so that observing and non-observing members send the same
   * request and a proxy can serve both from one upstream observation. Default false (the draft's test vectors
   * have no Inner Observe).
   */
  innerObserve?: boolean;
  /**
   * App. A.2 and §3.1: pad the plaintext of every Deterministic Request with the Padding option to a multiple of this
   * many bytes, so requests of different lengths give ciphertexts of the same length. 0 (default) = no padding.
   */
  padding?: number;
}

/** @internal the validated configuration */
export interface DeterministicSettings {
  senderId: Buffer;
  hashAlg: number;
  innerObserve: boolean;
  padding: number;
}

const EMPTY = Buffer.alloc(0);
const PIV_ZERO = Buffer.from([0]);

/** @internal validated configuration (group-context.ts) */
export function checkDeterministicConfig(c: DeterministicClientConfig, g: GroupContext): DeterministicSettings {
  if (!(c.senderId instanceof Uint8Array)) throw new OscoreError('ERR_OSCORE_CONFIG', 'deterministic client senderId must be a byte string');
  const senderId = Buffer.from(c.senderId);
  const hashAlg = c.hashAlg ?? -16;
  if (!DETERMINISTIC_HASH[hashAlg]) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported hash algorithm ${hashAlg} for Deterministic Requests`);
  // §3.4.2: the request is protected in pairwise mode; §3.4.4 step 4: the response in group mode.
  if (!g.hasPairwiseMode || !g.hasGroupMode) throw new OscoreError('ERR_OSCORE_CONFIG', 'Deterministic Requests need both the pairwise mode and the group mode');
  if (senderId.equals(g.senderId)) throw new OscoreError('ERR_OSCORE_CONFIG', 'the Deterministic Client\'s Sender ID is our own');
  const padding = c.padding ?? 0;
  if (!Number.isInteger(padding) || padding < 0 || padding > MAX_PADDING_BLOCK) throw new OscoreError('ERR_OSCORE_CONFIG', `padding block size must be an integer from 0 to ${MAX_PADDING_BLOCK}`);
  return { senderId, hashAlg, innerObserve: c.innerObserve === true, padding };
}

/**
 * App. A.2: Padding options with all-zero values that bring the plaintext `code | options | payload` to the next
 * multiple of `block` bytes (at least one option is added, so every padded request carries one). One option adds at
 * least 3 bytes (App. A.1 / IANA note: a one-byte header and a two-byte extended delta), and some lengths are only
 * reachable with two (the option is repeatable for that reason, App. A.1).
 */
export function padOptions(code: number, options: CoapOption[], payload: Buffer, block: number): CoapOption[] {
  const bare = options.filter((o) => o.number !== PADDING_OPTION);
  if (block <= 0) return bare;
  const length = (pads: number[]) => encodeCodeOptionsPayload(code, sortOptions([...bare, ...pads.map((n) => ({ number: PADDING_OPTION, value: Buffer.alloc(n) }))]), payload).length;
  const base = length([]);
  for (let target = Math.ceil((base + 1) / block) * block; target <= base + block + 16; target += block) {
    const room = target - base;
    // one option: header (1) + extended delta (0-2) + extended length (0-2) + value
    for (let v = Math.max(0, room - 5); v < room; v++) if (length([v]) === target) return sortOptions([...bare, { number: PADDING_OPTION, value: Buffer.alloc(v) }]);
    // two: the second has delta 0, so a one-byte header
    for (let v = Math.max(0, room - 9); v < room; v++) if (length([0, v]) === target) return sortOptions([...bare, { number: PADDING_OPTION, value: EMPTY }, { number: PADDING_OPTION, value: Buffer.alloc(v) }]);
  }
  throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'cannot pad the request to the block size');
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
    protected readonly config: DeterministicSettings,
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
    return this.compose(msg, opts);
  }

  /**
   * @internal §3.4.2 without the safety check of buildRequest: what a member that ignores §3.4.3 would send (tests of
   * the server's protected 4.01 use it). Applications use protectRequest.
   */
  compose(msg: MessageParts, opts: ProtectRequestOptions = {}): { message: { code: number; options: CoapOption[]; payload: Buffer }; binding: ClientBinding } {
    let options = (msg.options ?? []).filter((o) => o.number !== REQUEST_HASH_OPTION && o.number !== PADDING_OPTION);
    // §3.1: Inner Echo cannot prove freshness here.
    if (options.some((o) => o.number === OPT.ECHO)) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'no Echo in a Deterministic Request (draft-ietf-core-cacheable-oscore §3.1)');
    const observe = options.find((o) => o.number === OPT.OBSERVE);
    const observeValue = observe && observe.value.length <= 3 ? decodeUint(observe.value) : undefined;
    if (observe && observeValue !== 0 && observeValue !== 1) throw new OscoreError('ERR_OSCORE_INVALID_INPUT', 'Observe in a Deterministic Request is 0 (register) or 1 (deregister)');
    // §3.1: the Inner Observe is 0 (register) whatever is intended, so that the ciphertext is the same; the intent
    // travels in the Outer Observe alone (§3.4.2 step 7: none when no observation is intended). A deregistration
    // (Outer Observe 1 on the registration's bytes) is this implementation's reading: the draft does not say.
    options = options.filter((o) => o.number !== OPT.OBSERVE);
    if (observe || this.config.innerObserve) options.push({ number: OPT.OBSERVE, value: EMPTY });
    const split = splitOptions(options, true, opts.classE ? new Set(opts.classE) : undefined);
    const outer = sortOptions([...split.outer.filter((o) => o.number !== OPT.OBSERVE), ...(observe ? [{ number: OPT.OBSERVE, value: observe.value }] : [])]);
    // App. A.2: padded to the group's block size (inside the plaintext, so H covers it).
    const inner = this.config.padding ? padOptions(msg.code, split.inner, msg.payload ?? EMPTY, this.config.padding) : split.inner;
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
      // an observation is intended only with the Outer Observe 0 (§3.4.2 step 7); an Inner-only Observe in the
      // responses is ignored (§3.4.4 client step 4, unprotectResponse)
      observe: observeValue === 0,
      multipleResponses: opts.multipleResponses ?? this.manyResponders,
      onlyNewerNotifications: opts.onlyNewerNotifications,
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
    // App. A.2: any party receiving a Padding option MUST ignore it.
    const innerOptions = inner.options.filter((o) => o.number !== PADDING_OPTION);
    const innerObserve = innerOptions.find((o) => o.number === OPT.OBSERVE);
    const outerObserve = msg.options.some((o) => o.number === OPT.OBSERVE);
    const merged = mergeOptions(msg.options.filter((o) => o.number !== REQUEST_HASH_OPTION), innerOptions, opts.classE ? new Set(opts.classE) : undefined);
    // §3.1 / §3.4.4: with an Inner Observe but no Outer one no observation is intended: the request reaches the
    // application without Observe, and a successful response from an observable resource gets an Inner Observe
    // (step 3) and no Outer one (step 8). Without an Inner Observe an Outer one is ignored (RFC 8613 §4.1.3.5.1).
    // With both, the Inner one is always 0 (§3.1) and the Outer one says what is meant: 0 registers, 1 deregisters
    // (this implementation's reading, see DeterministicRequester.compose).
    const outerObserveOption = msg.options.find((o) => o.number === OPT.OBSERVE);
    const observing = innerObserve !== undefined && outerObserve;
    const others = merged.options.filter((o) => o.number !== OPT.OBSERVE);
    const options = observing ? sortOptions([...others, { number: OPT.OBSERVE, value: outerObserveOption!.value }]) : others;
    const observeValue = observing && outerObserveOption!.value.length <= 3 ? decodeUint(outerObserveOption!.value) : undefined;
    const binding = new ServerBinding({
      context: this.g.groupSender(),
      kid: f.kid!,
      piv: f.piv!,
      nonce: m.nonce,
      ...(f.kidContext ? { kidContext: f.kidContext } : {}),
      observe: observeValue === 0,
      ...(innerObserve !== undefined && !outerObserve ? { innerObserveOnly: true } : {}),
      // §3.4.4 step 5: the request nonce is never reused, every response has the server's own Partial IV.
      requestFresh: false,
      classI: encodeClassI(h),
      requestHash: h,
    });
    // Only safe requests, since nothing stops a replay: discarded, and the SHOULD of §3.4.3 is a *protected* 4.01
    // (answerOscoreError builds it from the binding).
    if (inner.code !== CODES.GET && inner.code !== CODES.FETCH) throw new UnsafeDeterministicRequestError(binding, codeToString(inner.code));
    return {
      message: { type: msg.type, code: inner.code, messageId: msg.messageId, token: msg.token, options, payload: inner.payload },
      context: this,
      binding,
      discarded: merged.discarded,
    };
  }
}
