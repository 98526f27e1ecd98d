// The OSCORE security context (RFC 8613 §3): Common Context (AEAD, HKDF, ID Context, Common IV), Sender Context
// (Sender ID, Sender Key, Sender Sequence Number) and Recipient Context (Recipient ID, Recipient Key, replay
// window), derived per §3.2.1 with `info` encoded as deterministic CBOR (cbor.ts), and checked per §3.3. Keys live
// in #private fields, so neither util.inspect, JSON.stringify nor an error message can leak them; the Master
// Secret is not kept at all after derivation.

import { inspect } from 'node:util';
import { Aead, AEAD_ALGORITHMS, AeadError, DEFAULT_AEAD_ALG } from './aead';
import { AeadBackendName, createAead } from './aead-backends';
import type { MessageBinding, PeerContext, ProtectionMode } from './capabilities';
import { computeNonce, encodeAad, encodeInfo } from './cose';
import { EchoChallenges } from './echo';
import { DIAGNOSTICS, OscoreError } from './errors';
import { DEFAULT_HKDF, HkdfHash, hkdf, isHkdfHash } from './hkdf';
import { ReplayWindow } from './replay';
import { MemorySequenceStore, SenderSequence, SenderSequenceOptions, SequenceStore } from './sequence';

/** The input parameters of §3.2 (the first three SHALL be pre-established, the rest have defaults). */
export interface SecurityContextParams {
  masterSecret: Uint8Array;
  senderId: Uint8Array;
  recipientId: Uint8Array;
  /** default: empty (§3.2) */
  masterSalt?: Uint8Array;
  /** §3.2: optional ID Context, `id_context` in info and the `kid context` of requests */
  idContext?: Uint8Array;
  /** COSE AEAD algorithm, default 10 = AES-CCM-16-64-128 */
  alg?: number;
  /** default HKDF SHA-256 */
  hkdf?: HkdfHash;
}

export interface SecurityContextOptions {
  /** an Aead instance, or a backend name (default 'node') */
  aead?: Aead | AeadBackendName;
  /** where the Sender Sequence Number is reserved ahead of use; default in memory starting at 0 */
  sequenceStore?: SequenceStore;
  sequence?: SenderSequenceOptions;
  /** replay window size, default 32 (§3.2) */
  replayWindowSize?: number;
  /** false: the window was lost (restart, App. B.1.2); the first request is challenged with Echo */
  replayWindowInitialized?: boolean;
  /** whether protected requests carry `kid context` when the context has an ID Context (default true) */
  sendKidContext?: boolean;
}

export interface DerivedKeys {
  senderKey: Buffer;
  recipientKey: Buffer;
  commonIv: Buffer;
}

function bytes(name: string, v: unknown, optional = false): Buffer | undefined {
  if (v === undefined && optional) return undefined;
  if (!(v instanceof Uint8Array)) throw new OscoreError('ERR_OSCORE_CONFIG', `${name} must be a byte string`);
  return Buffer.from(v); // copy: later changes by the caller must not alter the context
}

function resolveParams(params: SecurityContextParams, aeadOpt?: Aead | AeadBackendName) {
  const masterSecret = bytes('masterSecret', params.masterSecret)!;
  if (masterSecret.length === 0) throw new OscoreError('ERR_OSCORE_CONFIG', 'masterSecret must not be empty');
  const senderId = bytes('senderId', params.senderId)!;
  const recipientId = bytes('recipientId', params.recipientId)!;
  const masterSalt = bytes('masterSalt', params.masterSalt, true) ?? Buffer.alloc(0);
  const idContext = bytes('idContext', params.idContext, true);
  const hkdfHash = params.hkdf ?? DEFAULT_HKDF;
  if (!isHkdfHash(hkdfHash)) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported HKDF ${JSON.stringify(hkdfHash)}`);
  let aead: Aead;
  const alg = params.alg ?? (typeof aeadOpt === 'object' ? aeadOpt.alg : DEFAULT_AEAD_ALG);
  if (typeof aeadOpt === 'object') {
    if (aeadOpt.alg !== alg) throw new OscoreError('ERR_OSCORE_CONFIG', `AEAD instance is for algorithm ${aeadOpt.alg}, context says ${alg}`);
    aead = aeadOpt;
  } else {
    if (!AEAD_ALGORITHMS[alg]) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported AEAD algorithm ${alg}`);
    aead = createAead(alg, aeadOpt);
  }
  // §3.3: the maximum Sender ID length is the nonce length minus 6 bytes (7 for AES-CCM-16-64-128).
  const maxId = aead.nonceLength - 6;
  if (senderId.length > maxId) throw new OscoreError('ERR_OSCORE_CONFIG', `senderId longer than ${maxId} bytes (nonce length - 6)`);
  if (recipientId.length > maxId) throw new OscoreError('ERR_OSCORE_CONFIG', `recipientId longer than ${maxId} bytes (nonce length - 6)`);
  // §3.3: Sender IDs are unique per (Master Secret, Master Salt, ID Context); equal IDs would give both directions
  // the same key and the same nonces.
  if (senderId.equals(recipientId)) throw new OscoreError('ERR_OSCORE_CONFIG', 'senderId and recipientId must differ');
  // §6.1: the kid context length travels in one byte.
  if (idContext && idContext.length > 255) throw new OscoreError('ERR_OSCORE_CONFIG', 'idContext longer than 255 bytes');
  return { masterSecret, masterSalt, senderId, recipientId, idContext, hkdfHash, aead };
}

function derive(r: ReturnType<typeof resolveParams>): DerivedKeys {
  const { aead, masterSecret, masterSalt, idContext, hkdfHash } = r;
  const key = (id: Buffer) => hkdf(hkdfHash, masterSecret, masterSalt, encodeInfo(id, idContext, aead.alg, 'Key', aead.keyLength), aead.keyLength);
  return {
    senderKey: key(r.senderId),
    recipientKey: key(r.recipientId),
    commonIv: hkdf(hkdfHash, masterSecret, masterSalt, encodeInfo(Buffer.alloc(0), idContext, aead.alg, 'IV', aead.nonceLength), aead.nonceLength),
  };
}

/** §3.2.1 derivation only (for tests against RFC 8613 C.1-C.3 and for tools); validates like SecurityContext. */
export function deriveKeys(params: SecurityContextParams): DerivedKeys {
  const r = resolveParams(params);
  const keys = derive(r);
  r.masterSecret.fill(0);
  return keys;
}

/** The RFC 8613 context: one peer, one mode ('oscore'); a PeerContext like a Group OSCORE association. */
export class SecurityContext implements PeerContext {
  readonly mode = 'oscore' as const;
  readonly manyResponders = false;
  readonly kidInResponses = false;
  readonly aead: Aead;
  readonly hkdf: HkdfHash;
  readonly idContext?: Buffer;
  readonly senderId: Buffer;
  readonly recipientId: Buffer;
  readonly commonIv: Buffer;
  readonly sequence: SenderSequence;
  readonly replay: ReplayWindow;
  readonly echo = new EchoChallenges();
  readonly sendKidContext: boolean;
  #senderKey: Buffer;
  #recipientKey: Buffer;

  private constructor(r: ReturnType<typeof resolveParams>, keys: DerivedKeys, opts: SecurityContextOptions) {
    this.aead = r.aead;
    this.hkdf = r.hkdfHash;
    if (r.idContext) this.idContext = r.idContext;
    this.senderId = r.senderId;
    this.recipientId = r.recipientId;
    this.commonIv = keys.commonIv;
    this.#senderKey = keys.senderKey;
    this.#recipientKey = keys.recipientKey;
    this.sequence = new SenderSequence(opts.sequenceStore ?? new MemorySequenceStore(), opts.sequence);
    this.replay = new ReplayWindow({ size: opts.replayWindowSize, initialized: opts.replayWindowInitialized ?? true });
    this.sendKidContext = opts.sendKidContext ?? true;
  }

  /** §3.2: derive Sender Key, Recipient Key and Common IV from the input parameters. */
  static derive(params: SecurityContextParams, opts: SecurityContextOptions = {}): SecurityContext {
    const r = resolveParams(params, opts.aead);
    const keys = derive(r);
    r.masterSecret.fill(0); // our copy; the caller's buffer is untouched
    return new SecurityContext(r, keys, opts);
  }

  get alg(): number {
    return this.aead.alg;
  }

  /** §5.2 nonce for a Partial IV generated by this endpoint. */
  senderNonce(piv: Uint8Array): Buffer {
    return computeNonce(this.senderId, piv, this.commonIv);
  }

  /** §5.2 nonce for a Partial IV generated by the peer. */
  recipientNonce(piv: Uint8Array): Buffer {
    return computeNonce(this.recipientId, piv, this.commonIv);
  }

  /** §5.3-§5.4: encrypt with the Sender Key; the AAD binds the request's kid and Partial IV. */
  seal(plaintext: Buffer, m: MessageBinding): Buffer {
    return this.aead.encrypt(this.#senderKey, m.nonce, encodeAad(this.alg, m.requestKid, m.requestPiv), plaintext);
  }

  /** Decrypt with the Recipient Key; throws OscoreError('ERR_OSCORE_DECRYPT') with its §8.2 step 6 response. */
  open(payload: Buffer, m: MessageBinding): Buffer {
    try {
      return this.aead.decrypt(this.#recipientKey, m.nonce, encodeAad(this.alg, m.requestKid, m.requestPiv), payload);
    } catch (err) {
      if (err instanceof AeadError || err instanceof RangeError) throw new OscoreError('ERR_OSCORE_DECRYPT', 'decryption failed', DIAGNOSTICS.DECRYPT);
      throw err;
    }
  }

  /** A response from the peer: no Group Flag, and a kid (if any) equal to the Recipient ID (§8.4 step 2). */
  responder(kid: Buffer | undefined, group: boolean): PeerContext | undefined {
    return !group && (kid === undefined || kid.equals(this.recipientId)) ? this : undefined;
  }

  withMode(mode: ProtectionMode): PeerContext | undefined {
    return mode === 'oscore' ? this : undefined;
  }

  /**
   * App. B.1.2: mark the replay window as lost (e.g. the context was restored after a restart without its window).
   * Until a request returns an Echo value issued by this context, requests are answered with 4.01 + Echo.
   */
  requireEchoRecovery(): void {
    this.replay.reset(false);
    this.echo.clear();
  }

  /** Whether the recipient side is waiting for App. B.1.2 recovery. */
  get awaitingEchoRecovery(): boolean {
    return !this.replay.initialized;
  }

  /** Context identity without key material, for logs and status displays. */
  describe(): { alg: number; aeadName: string; hkdf: HkdfHash; senderId: string; recipientId: string; idContext?: string; nextSequenceNumber: number } {
    return {
      alg: this.alg,
      aeadName: this.aead.name,
      hkdf: this.hkdf,
      senderId: this.senderId.toString('hex'),
      recipientId: this.recipientId.toString('hex'),
      ...(this.idContext ? { idContext: this.idContext.toString('hex') } : {}),
      nextSequenceNumber: this.sequence.peek(),
    };
  }

  toJSON(): ReturnType<SecurityContext['describe']> {
    return this.describe();
  }

  [inspect.custom](): string {
    return `SecurityContext ${inspect(this.describe())}`;
  }
}
