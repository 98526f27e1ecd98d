// The Group OSCORE Security Context (RFC 10021 §2): a Common Context extended with the Group Encryption Algorithm,
// Signature Algorithm, Signature Encryption Key, Pairwise Key Agreement Algorithm and the Group Manager's
// credential; one Sender Context with the private key and own credential; one Recipient Context per other member
// with its credential, keys and replay window. It hands out PeerContext associations per member and mode (group
// mode §7, pairwise mode §8), and the group-mode sender for requests to the whole group. Message processing
// is protect.ts; here are the key derivations (§2.3, §2.1.9, §2.5.1), the external_aad (§3.4), the countersignature
// and its encryption (§3.1, §4.1, §4.2). Keys stay in #private fields.

import type crypto from 'node:crypto';
import { inspect } from 'node:util';
import { Aead, AeadError, aeadParams } from '../aead';
import { AeadBackendName, createAead } from '../aead-backends';
import type { ContextSource, MessageBinding, PeerContext, ProtectionMode, RequestContext } from '../capabilities';
import { CODES } from '../../coap/codes';
import { computeNonce, encodeInfo } from '../cose';
import { EchoChallenges } from '../echo';
import { DIAGNOSTICS, OscoreError } from '../errors';
import { DEFAULT_HKDF, HkdfHash, hkdf, isHkdfHash } from '../hkdf';
import { ReplayWindow, ReplayWindowState } from '../replay';
import { MemorySequenceStore, SenderSequence, SenderSequenceOptions, SequenceStore } from '../sequence';
import { COSE_ALG, COSE_CRV, COSE_KTY, PublicKeyInfo, isSignatureAlgorithm, privateKeyObject, publicKeyObject, publicKeyOf, sharedSecret, sign, signatureLength, verify } from './algorithms';
import { GroupAlgorithms, encodeCountersignStructure, encodeGroupAad, encodeGroupAadArray, signatureKeystream, xorKeystream } from './cose-group';
import { parseCcs } from './credential';
import { DeterministicClientConfig, DeterministicPeer, DeterministicRequester, DeterministicSettings, checkDeterministicConfig } from './deterministic';

export interface GroupMember {
  /** the member's Sender ID (our Recipient ID for it) */
  senderId: Uint8Array;
  /** its authentication credential, exactly the bytes the group distributes (RFC 10021 §2.4) */
  credential: Uint8Array;
}

/** The parameters of RFC 10021 §2 (provisioned by configuration here; there is no Group Manager). */
export interface GroupContextParams {
  masterSecret: Uint8Array;
  masterSalt?: Uint8Array;
  /** the Gid (ID Context, §2.1.3) */
  idContext: Uint8Array;
  senderId: Uint8Array;
  /** own private key: Ed25519 seed or P-256 scalar (32 bytes) */
  privateKey: Uint8Array;
  /** own authentication credential (CCS) */
  credential: Uint8Array;
  members: GroupMember[];
  /** the Group Manager's credential (§2.1.6); absent = empty byte string in the external_aad */
  gmCredential?: Uint8Array;
  /** §2.1.7, default 10 (AES-CCM-16-64-128); null = no group mode */
  groupEncryptionAlg?: number | null;
  /** §2.1.1 AEAD Algorithm of the pairwise mode, default 10; null = no pairwise mode */
  aeadAlg?: number | null;
  /** §2.1.8, default -8 (EdDSA); -7 = ECDSA with P-256 */
  signatureAlg?: number;
  /** §2.1.10, default -27 (ECDH-SS + HKDF-256) when the pairwise mode is used */
  pairwiseKeyAgreementAlg?: number | null;
  hkdf?: HkdfHash;
  /**
   * The group's Deterministic Client (draft-ietf-core-cacheable-oscore-02 §3.4.1, §4 'det_senderId' and
   * 'det_hash_alg'), as the Group Manager provides it; absent = the group does not use Deterministic Requests.
   */
  deterministicClient?: DeterministicClientConfig;
}

export interface GroupContextOptions {
  aead?: AeadBackendName;
  /** the Sender Sequence Number, persisted ahead of use (shared by both modes, §2.5.3) */
  sequenceStore?: SequenceStore;
  sequence?: SenderSequenceOptions;
  replayWindowSize?: number;
  /** false: the windows were lost (restart); the first request of each member is challenged with Echo (§9) */
  replayWindowInitialized?: boolean;
  /** windows saved by replayWindows() on a clean shutdown, by hex Recipient ID */
  replayWindows?: Record<string, ReplayWindowState>;
}

function bytes(name: string, v: unknown, optional = false): Buffer | undefined {
  if (v === undefined && optional) return undefined;
  if (!(v instanceof Uint8Array)) throw new OscoreError('ERR_OSCORE_CONFIG', `${name} must be a byte string`);
  return Buffer.from(v);
}

const EMPTY = Buffer.alloc(0);

/** The curve a key is used on for the static-static ECDH of §2.5.1 (Ed25519 keys are mapped to X25519, §2.5.2). */
function ecdhCurve(k: PublicKeyInfo): string {
  return k.kty === COSE_KTY.OKP && k.crv === COSE_CRV.Ed25519 ? `${COSE_KTY.OKP}/${COSE_CRV.X25519}` : `${k.kty}/${k.crv}`;
}

/** Whether `priv` is the private key of `pub` (Ed25519 seed, X25519 scalar or P-256 scalar). */
function privateKeyMatches(pub: PublicKeyInfo, priv: Buffer): boolean {
  try {
    const kind = pub.kty === COSE_KTY.EC2 ? 'P-256' : pub.crv === COSE_CRV.Ed25519 ? 'Ed25519' : 'X25519';
    const derived = publicKeyOf(kind, priv);
    return derived.x.equals(pub.x) && (pub.y === undefined || (derived.y !== undefined && derived.y.equals(pub.y)));
  } catch {
    return false;
  }
}

function keyFitsSignature(k: PublicKeyInfo, alg: number): boolean {
  if (alg === COSE_ALG.EdDSA) return k.kty === COSE_KTY.OKP && k.crv === COSE_CRV.Ed25519;
  return k.kty === COSE_KTY.EC2 && k.crv === COSE_CRV.P256;
}

class Recipient {
  readonly replay: ReplayWindow;
  readonly echo = new EchoChallenges();
  readonly verifyKey: crypto.KeyObject;
  readonly pub: PublicKeyInfo;
  #recipientKey: Buffer;
  #pairwise?: { sender: Buffer; recipient: Buffer };
  readonly views = new Map<ProtectionMode, GroupPeer>();

  constructor(
    readonly id: Buffer,
    readonly credential: Buffer,
    recipientKey: Buffer,
    replay: ReplayWindow,
  ) {
    this.pub = parseCcs(credential);
    this.verifyKey = publicKeyObject(this.pub);
    this.#recipientKey = recipientKey;
    this.replay = replay;
  }

  get recipientKey(): Buffer {
    return this.#recipientKey;
  }

  pairwise(derive: () => { sender: Buffer; recipient: Buffer }): { sender: Buffer; recipient: Buffer } {
    return (this.#pairwise ??= derive());
  }
}

export class GroupContext implements ContextSource {
  readonly idContext: Buffer;
  readonly senderId: Buffer;
  readonly credential: Buffer;
  readonly gmCredential?: Buffer;
  readonly hkdf: HkdfHash;
  readonly groupEncryption?: Aead;
  readonly pairwiseAead?: Aead;
  readonly signatureAlg: number;
  readonly pairwiseKeyAgreementAlg?: number;
  readonly commonIv: Buffer;
  readonly sequence: SenderSequence;
  readonly signatureLength: number;
  readonly #recipients = new Map<string, Recipient>();
  #senderKey: Buffer;
  #signatureEncryptionKey?: Buffer;
  #signingKey: crypto.KeyObject;
  #privateKey: Buffer;
  #masterSecret: Buffer;
  #masterSalt: Buffer;
  readonly #ownPub: PublicKeyInfo;
  readonly #sender: GroupSender;
  readonly #windowSize?: number;
  readonly #initialized: boolean;
  readonly #savedWindows?: Record<string, ReplayWindowState>;
  readonly #deterministic?: { config: DeterministicSettings; senderKey: Buffer; requester: DeterministicRequester; peer: DeterministicPeer };

  constructor(params: GroupContextParams, opts: GroupContextOptions = {}) {
    this.#masterSecret = bytes('masterSecret', params.masterSecret)!;
    if (this.#masterSecret.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'masterSecret must not be empty');
    this.#masterSalt = bytes('masterSalt', params.masterSalt, true) ?? EMPTY;
    this.idContext = bytes('idContext', params.idContext)!;
    if (this.idContext.length > 255) throw new OscoreError('ERR_OSCORE_CONFIG', 'idContext longer than 255 bytes');
    this.senderId = bytes('senderId', params.senderId)!;
    this.credential = bytes('credential', params.credential)!;
    this.#privateKey = bytes('privateKey', params.privateKey)!;
    const gm = bytes('gmCredential', params.gmCredential, true);
    if (gm) this.gmCredential = gm;
    this.hkdf = params.hkdf ?? DEFAULT_HKDF;
    if (!isHkdfHash(this.hkdf)) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', 'unsupported HKDF');
    const genc = params.groupEncryptionAlg === undefined ? 10 : params.groupEncryptionAlg;
    const aeadAlg = params.aeadAlg === undefined ? 10 : params.aeadAlg;
    if (genc === null && aeadAlg === null) throw new OscoreError('ERR_OSCORE_CONFIG', 'neither group mode nor pairwise mode is set');
    const make = (alg: number): Aead => {
      try {
        // §2.1.7: only authenticated algorithms are implemented here (A128CTR is not).
        return createAead(aeadParams(alg).alg, opts.aead);
      } catch (err) {
        if (err instanceof AeadError) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', err.message);
        throw err;
      }
    };
    if (genc !== null) this.groupEncryption = make(genc);
    if (aeadAlg !== null) this.pairwiseAead = make(aeadAlg);
    this.signatureAlg = params.signatureAlg ?? COSE_ALG.EdDSA;
    if (!isSignatureAlgorithm(this.signatureAlg)) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported Signature Algorithm ${this.signatureAlg}`);
    this.signatureLength = signatureLength(this.signatureAlg);
    const pka = params.pairwiseKeyAgreementAlg === undefined ? (aeadAlg !== null ? (this.hkdf === 'SHA-512' ? COSE_ALG.ECDH_SS_HKDF_512 : COSE_ALG.ECDH_SS_HKDF_256) : null) : params.pairwiseKeyAgreementAlg;
    if (pka !== null) {
      // §2.1.10: ECDH-SS with the group's HKDF.
      const expected = this.hkdf === 'SHA-512' ? COSE_ALG.ECDH_SS_HKDF_512 : COSE_ALG.ECDH_SS_HKDF_256;
      if (pka !== expected) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `Pairwise Key Agreement Algorithm ${pka} does not match the HKDF`);
      this.pairwiseKeyAgreementAlg = pka;
    }
    this.#ownPub = parseCcs(this.credential);
    // §2.4: with the group mode, the credential's key is for the Signature Algorithm.
    if (this.groupEncryption && !keyFitsSignature(this.#ownPub, this.signatureAlg)) {
      throw new OscoreError('ERR_OSCORE_CONFIG', `own credential's key does not fit Signature Algorithm ${this.signatureAlg}`);
    }
    this.#signingKey = privateKeyObject(this.#ownPub, this.#privateKey);
    // §2 Sender Context: the private key and the own credential are one key pair. A mismatch would sign with a key
    // no member can verify against, and derive pairwise keys (§2.5.1) no member can match.
    if (!privateKeyMatches(this.#ownPub, this.#privateKey)) throw new OscoreError('ERR_OSCORE_CONFIG', 'privateKey is not the private key of the own credential');
    // §2.3: keys and IV use the Group Encryption Algorithm if set, else the AEAD Algorithm; the IV is as long as the
    // longest nonce of the two (§2.1.4).
    const keyAead = this.groupEncryption ?? this.pairwiseAead!;
    const maxNonce = Math.max(this.groupEncryption?.nonceLength ?? 0, this.pairwiseAead?.nonceLength ?? 0);
    // §2.2: Sender IDs are at most L - 6 bytes, L the shortest nonce in use.
    const minNonce = Math.min(this.groupEncryption?.nonceLength ?? 99, this.pairwiseAead?.nonceLength ?? 99);
    const checkId = (id: Buffer, what: string) => {
      if (id.length > minNonce - 6) throw new OscoreError('ERR_OSCORE_CONFIG', `${what} longer than ${minNonce - 6} bytes`);
    };
    checkId(this.senderId, 'senderId');
    this.#senderKey = this.deriveKey(this.senderId);
    this.commonIv = hkdf(this.hkdf, this.#masterSecret, this.#masterSalt, encodeInfo(EMPTY, this.idContext, keyAead.alg, 'IV', maxNonce), maxNonce);
    // §2.1.9: the Signature Encryption Key.
    if (this.groupEncryption) {
      const l = this.groupEncryption.keyLength;
      this.#signatureEncryptionKey = hkdf(this.hkdf, this.#masterSecret, this.#masterSalt, encodeInfo(EMPTY, this.idContext, this.groupEncryption.alg, 'SEKey', l), l);
    }
    this.sequence = new SenderSequence(opts.sequenceStore ?? new MemorySequenceStore(), opts.sequence);
    this.#windowSize = opts.replayWindowSize;
    this.#initialized = opts.replayWindowInitialized ?? true;
    this.#savedWindows = opts.replayWindows;
    if (params.deterministicClient) {
      const config = checkDeterministicConfig(params.deterministicClient, this);
      checkId(config.senderId, 'deterministic client Sender ID');
      // §3.4.1: the Deterministic Client's Sender Key is derived like any member's (RFC 10021 §2.3).
      const senderKey = this.deriveKey(config.senderId);
      this.#deterministic = { config, senderKey, requester: new DeterministicRequester(this, config, senderKey), peer: new DeterministicPeer(this, config, senderKey) };
    }
    for (const m of params.members ?? []) this.addMember(m);
    this.#sender = new GroupSender(this);
  }

  private deriveKey(id: Buffer): Buffer {
    const keyAead = this.groupEncryption ?? this.pairwiseAead!;
    return hkdf(this.hkdf, this.#masterSecret, this.#masterSalt, encodeInfo(id, this.idContext, keyAead.alg, 'Key', keyAead.keyLength), keyAead.keyLength);
  }

  /** Add a Recipient Context (§2.2); throws for a duplicate or own Sender ID. */
  addMember(m: GroupMember): void {
    const id = bytes('member senderId', m.senderId)!;
    const minNonce = Math.min(this.groupEncryption?.nonceLength ?? 99, this.pairwiseAead?.nonceLength ?? 99);
    if (id.length > minNonce - 6) throw new OscoreError('ERR_OSCORE_CONFIG', `member Sender ID longer than ${minNonce - 6} bytes`);
    if (id.equals(this.senderId)) throw new OscoreError('ERR_OSCORE_CONFIG', 'a member has our own Sender ID');
    if (this.#deterministic?.config.senderId.equals(id)) throw new OscoreError('ERR_OSCORE_CONFIG', 'a member has the Deterministic Client\'s Sender ID');
    const k = id.toString('hex');
    if (this.#recipients.has(k)) throw new OscoreError('ERR_OSCORE_CONFIG', `member ${k} listed twice`);
    const replay = new ReplayWindow({ size: this.#windowSize, initialized: this.#initialized });
    const saved = this.#savedWindows?.[k];
    if (saved) replay.restore(saved);
    const r = new Recipient(id, bytes('member credential', m.credential)!, this.deriveKey(id), replay);
    // §2.4: every credential in a group has the same format and key type; a mismatch could never verify.
    if (this.groupEncryption && !keyFitsSignature(r.pub, this.signatureAlg)) throw new OscoreError('ERR_OSCORE_CONFIG', `member ${k}: credential does not fit Signature Algorithm ${this.signatureAlg}`);
    // §2.4 / §2.5.1: the pairwise mode needs an ECDH between the two keys, so they must be on the same curve
    // (after the Ed25519-to-X25519 map); found here rather than as a failure on the member's first message.
    if (this.hasPairwiseMode && ecdhCurve(r.pub) !== ecdhCurve(this.#ownPub)) throw new OscoreError('ERR_OSCORE_CONFIG', `member ${k}: credential is on another curve than ours, no pairwise keys possible`);
    this.#recipients.set(k, r);
  }

  removeMember(senderId: Uint8Array): boolean {
    return this.#recipients.delete(Buffer.from(senderId).toString('hex'));
  }

  /** A member's authentication credential (undefined: not a member). */
  memberCredential(senderId: Uint8Array): Buffer | undefined {
    return this.#recipients.get(Buffer.from(senderId).toString('hex'))?.credential;
  }

  get memberIds(): Buffer[] {
    return [...this.#recipients.values()].map((r) => r.id);
  }

  get hasGroupMode(): boolean {
    return this.groupEncryption !== undefined;
  }

  get hasPairwiseMode(): boolean {
    return this.pairwiseAead !== undefined && this.pairwiseKeyAgreementAlg !== undefined;
  }

  /** The group-mode association for requests to the whole group (§7.1). */
  groupRequests(): RequestContext {
    if (!this.hasGroupMode) throw new OscoreError('ERR_OSCORE_CONFIG', 'the group mode is not used in this group');
    return this.#sender;
  }

  /** The group's Deterministic Client (draft-ietf-core-cacheable-oscore-02 §3.4.1), if it uses one. */
  get deterministicClient(): Readonly<DeterministicSettings> | undefined {
    return this.#deterministic?.config;
  }

  /**
   * The context that protects Deterministic Requests (draft-ietf-core-cacheable-oscore-02 §3.4.2): the same safe
   * plain request gives the same protected bytes on every member, so a proxy can cache the responses.
   */
  deterministicRequests(): RequestContext {
    if (!this.#deterministic) throw new OscoreError('ERR_OSCORE_CONFIG', 'this group has no Deterministic Client');
    return this.#deterministic.requester;
  }

  /** The association with one member in one mode (undefined: not a member, or the mode is not used). */
  peer(recipientId: Uint8Array, mode: 'group' | 'pairwise'): PeerContext | undefined {
    const r = this.#recipients.get(Buffer.from(recipientId).toString('hex'));
    if (!r) return undefined;
    if (mode === 'group' ? !this.hasGroupMode : !this.hasPairwiseMode) return undefined;
    let v = r.views.get(mode);
    if (!v) r.views.set(mode, (v = new GroupPeer(this, r, mode)));
    return v;
  }

  /**
   * §7.2 step 2: the Recipient Context for a request. Another Gid: undefined (4.01 "Security context not found",
   * §7.2); the group but an unknown kid: 5.03, since the credential is missing and there is no dynamic
   * derivation here; our own Sender ID: undefined (§7.2 "SHOULD NOT process").
   */
  resolve(kid: Buffer, kidContext: Buffer | undefined, group: boolean): PeerContext | undefined {
    if (kidContext === undefined || !kidContext.equals(this.idContext)) return undefined;
    if (kid.equals(this.senderId)) return undefined;
    // draft-ietf-core-cacheable-oscore-02 §3.4.3 step 2: the Deterministic Client's kid.
    if (this.#deterministic?.config.senderId.equals(kid)) return this.#deterministic.peer;
    if (!this.#recipients.has(kid.toString('hex'))) {
      throw new OscoreError('ERR_OSCORE_CREDENTIAL_UNKNOWN', 'no authentication credential for this kid', { responseCode: CODES.SERVICE_UNAVAILABLE, diagnostic: 'Credential unknown' });
    }
    return this.peer(kid, group ? 'group' : 'pairwise') ?? this.peer(kid, group ? 'pairwise' : 'group');
  }

  /** The replay windows as plain data, for a clean shutdown (undefined entries = not initialized). */
  replayWindows(): Record<string, ReplayWindowState> {
    const out: Record<string, ReplayWindowState> = {};
    for (const [k, r] of this.#recipients) {
      const s = r.replay.snapshot();
      if (s) out[k] = s;
    }
    return out;
  }

  /** §9 / RFC 8613 App. B.1.2: mark every window lost; requests are challenged with Echo until recovered. */
  requireEchoRecovery(): void {
    for (const r of this.#recipients.values()) {
      r.replay.reset(false);
      r.echo.clear();
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Crypto used by the associations

  /** @internal §3.3: the nonce XORs the first X bytes of the Common IV, X = the algorithm's nonce length. */
  nonce(aead: Aead, id: Uint8Array, piv: Uint8Array): Buffer {
    return computeNonce(id, piv, this.commonIv.subarray(0, aead.nonceLength));
  }

  /** The algorithms of the aad_array (§3.4). */
  get algorithms(): GroupAlgorithms {
    return { aead: this.pairwiseAead?.alg ?? null, groupEncryption: this.groupEncryption?.alg ?? null, signature: this.hasGroupMode ? this.signatureAlg : null, pairwiseKeyAgreement: this.pairwiseKeyAgreementAlg ?? null };
  }

  /** @internal §3.4 aad_array; `senderCred` is the credential of the message's sender. */
  aadArray(m: MessageBinding, senderCred: Buffer): Buffer {
    return encodeGroupAadArray(this.algorithms, m, senderCred, this.gmCredential);
  }

  /** @internal §4.2 */
  keystream(m: MessageBinding): Buffer {
    return signatureKeystream(this.hkdf, this.#signatureEncryptionKey!, m, this.idContext, this.signatureLength);
  }

  /** @internal §2.1.9 (for an external signature checker provisioned from this context, §7.5) */
  signatureEncryptionKey(): Buffer | undefined {
    return this.#signatureEncryptionKey;
  }

  /** @internal the group-mode Sender Context, which protects the responses to Deterministic Requests */
  groupSender(): GroupSender {
    return this.#sender;
  }

  /** @internal */
  senderKey(): Buffer {
    return this.#senderKey;
  }

  /** @internal §3.1 */
  signStructure(aadArray: Buffer, ciphertext: Buffer): Buffer {
    return encodeCountersignStructure(aadArray, ciphertext);
  }

  /** @internal */
  countersign(data: Buffer): Buffer {
    return sign(this.signatureAlg, this.#signingKey, data);
  }

  /** @internal §2.5.1 pairwise keys with one member. */
  pairwiseKeys(r: Recipient): { sender: Buffer; recipient: Buffer } {
    return r.pairwise(() => {
      const aead = this.pairwiseAead!;
      const secret = sharedSecret(this.#ownPub, this.#privateKey, r.pub);
      const info = (id: Buffer) => encodeInfo(id, this.idContext, aead.alg, 'Key', aead.keyLength);
      return {
        sender: hkdf(this.hkdf, Buffer.concat([this.credential, r.credential, secret]), this.#senderKey, info(this.senderId), aead.keyLength),
        recipient: hkdf(this.hkdf, Buffer.concat([r.credential, this.credential, secret]), r.recipientKey, info(r.id), aead.keyLength),
      };
    });
  }

  /** Context identity without key material. */
  describe(): { idContext: string; senderId: string; members: string[]; groupEncryptionAlg: number | null; aeadAlg: number | null; signatureAlg: number; pairwiseKeyAgreementAlg: number | null; nextSequenceNumber: number } {
    return {
      idContext: this.idContext.toString('hex'),
      senderId: this.senderId.toString('hex'),
      members: [...this.#recipients.keys()],
      groupEncryptionAlg: this.groupEncryption?.alg ?? null,
      aeadAlg: this.pairwiseAead?.alg ?? null,
      signatureAlg: this.signatureAlg,
      pairwiseKeyAgreementAlg: this.pairwiseKeyAgreementAlg ?? null,
      nextSequenceNumber: this.sequence.peek(),
    };
  }

  toJSON(): ReturnType<GroupContext['describe']> {
    return this.describe();
  }

  [inspect.custom](): string {
    return `GroupContext ${inspect(this.describe())}`;
  }
}

// RFC 10021 §7.2: a failed countersignature answers as if decryption had failed (RFC 8613 §8.2 step 6: 4.00
// "Decryption failed"); a client verifying a response sends nothing (protect.ts drops the response, §8.4).
function signatureError(): OscoreError {
  return new OscoreError('ERR_OSCORE_SIGNATURE', 'countersignature verification failed', DIAGNOSTICS.DECRYPT);
}

function decryptError(): OscoreError {
  return new OscoreError('ERR_OSCORE_DECRYPT', 'decryption failed', DIAGNOSTICS.DECRYPT);
}

/** §7.1 / §7.3: ciphertext ‖ (countersignature XOR keystream). */
function sealGroupMode(g: GroupContext, plaintext: Buffer, m: MessageBinding): Buffer {
  const aadArray = g.aadArray(m, g.credential);
  const ciphertext = g.groupEncryption!.encrypt(g.senderKey(), m.nonce, encodeGroupAad(aadArray), plaintext);
  const signature = g.countersign(g.signStructure(aadArray, ciphertext));
  return Buffer.concat([ciphertext, xorKeystream(signature, g.keystream(m))]);
}

/** The sender of group-mode requests to the whole group: many responders, each verified by its own credential. */
export class GroupSender implements RequestContext {
  readonly mode = 'group' as const;
  readonly manyResponders = true;
  readonly sendKidContext = true;
  readonly kidInResponses = true;

  constructor(private readonly g: GroupContext) {}

  get senderId(): Buffer {
    return this.g.senderId;
  }

  get idContext(): Buffer {
    return this.g.idContext;
  }

  get sequence(): SenderSequence {
    return this.g.sequence;
  }

  senderNonce(piv: Uint8Array): Buffer {
    return this.g.nonce(this.g.groupEncryption!, this.g.senderId, piv);
  }

  seal(plaintext: Buffer, m: MessageBinding): Buffer {
    return sealGroupMode(this.g, plaintext, m);
  }

  /** §7.4: kid is always present in a response to a group-mode request; its Group Flag gives the mode. */
  responder(kid: Buffer | undefined, group: boolean): PeerContext | undefined {
    return kid === undefined ? undefined : this.g.peer(kid, group ? 'group' : 'pairwise');
  }
}

/** One member in one mode. */
class GroupPeer implements PeerContext {
  readonly manyResponders = false;
  readonly sendKidContext = true;
  readonly kidInResponses = true;

  constructor(
    private readonly g: GroupContext,
    private readonly r: Recipient,
    readonly mode: 'group' | 'pairwise',
  ) {}

  get senderId(): Buffer {
    return this.g.senderId;
  }

  get recipientId(): Buffer {
    return this.r.id;
  }

  get idContext(): Buffer {
    return this.g.idContext;
  }

  get sequence(): SenderSequence {
    return this.g.sequence;
  }

  get replay(): ReplayWindow {
    return this.r.replay;
  }

  get echo(): EchoChallenges {
    return this.r.echo;
  }

  /** the member's authentication credential */
  get credential(): Buffer {
    return this.r.credential;
  }

  private get aead(): Aead {
    return this.mode === 'group' ? this.g.groupEncryption! : this.g.pairwiseAead!;
  }

  senderNonce(piv: Uint8Array): Buffer {
    return this.g.nonce(this.aead, this.g.senderId, piv);
  }

  recipientNonce(piv: Uint8Array): Buffer {
    return this.g.nonce(this.aead, this.r.id, piv);
  }

  seal(plaintext: Buffer, m: MessageBinding): Buffer {
    if (this.mode === 'group') return sealGroupMode(this.g, plaintext, m);
    // §8: pairwise mode = RFC 8613 with the Pairwise Sender Key and the external_aad of §3.4.
    const aad = encodeGroupAad(this.g.aadArray(m, this.g.credential));
    return this.aead.encrypt(this.g.pairwiseKeys(this.r).sender, m.nonce, aad, plaintext);
  }

  open(payload: Buffer, m: MessageBinding): Buffer {
    const aadArray = this.g.aadArray(m, this.r.credential);
    const aad = encodeGroupAad(aadArray);
    if (this.mode === 'pairwise') {
      try {
        return this.aead.decrypt(this.g.pairwiseKeys(this.r).recipient, m.nonce, aad, payload);
      } catch {
        throw decryptError();
      }
    }
    // §7.2 / §7.4: the countersignature is verified before decryption.
    const l = this.g.signatureLength;
    if (payload.length < l + this.aead.tagLength) throw signatureError();
    const ciphertext = payload.subarray(0, payload.length - l);
    const signature = xorKeystream(payload.subarray(payload.length - l), this.g.keystream(m));
    if (!verify(this.g.signatureAlg, this.r.verifyKey, this.g.signStructure(aadArray, ciphertext), signature)) throw signatureError();
    try {
      return this.aead.decrypt(this.r.recipientKey, m.nonce, aad, ciphertext);
    } catch {
      throw decryptError();
    }
  }

  /** §7.4 / §8.6: a response from this member (kid absent = the member the request was for). */
  responder(kid: Buffer | undefined, group: boolean): PeerContext | undefined {
    if (kid !== undefined && !kid.equals(this.r.id)) return undefined;
    return this.withMode(group ? 'group' : 'pairwise');
  }

  withMode(mode: ProtectionMode): PeerContext | undefined {
    if (mode === this.mode) return this;
    return mode === 'oscore' ? undefined : this.g.peer(this.r.id, mode);
  }
}
