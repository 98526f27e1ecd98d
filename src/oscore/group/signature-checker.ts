// An external signature checker (RFC 10021 §7.5, "External Signature Checkers"): an entity outside the
// group, e.g. a proxy, that verifies the countersignature of messages protected in group mode before letting them
// through, and drops forged ones. It needs the Signature Encryption Key, the algorithms, the members'
// credentials and the Group Manager's credential; it cannot decrypt anything (no Sender / Recipient Keys).

import { CoapOption } from '../../coap/message';
import { OPT } from '../../coap/options';
import type { MessageBinding } from '../capabilities';
import { decodeOscoreOption } from '../cose';
import { DIAGNOSTICS, OscoreError } from '../errors';
import { DEFAULT_HKDF, HkdfHash } from '../hkdf';
import { CODES } from '../../coap/codes';
import type crypto from 'node:crypto';
import { publicKeyObject, signatureLength, verify } from './algorithms';
import { GroupAlgorithms, encodeCountersignStructure, encodeGroupAadArray, signatureKeystream, xorKeystream } from './cose-group';
import { parseCcs } from './credential';
import type { GroupContext, GroupMember } from './group-context';

export interface SignatureCheckerParams {
  /** the Gid */
  idContext: Uint8Array;
  signatureEncryptionKey: Uint8Array;
  algorithms: GroupAlgorithms;
  members: GroupMember[];
  gmCredential?: Uint8Array;
  hkdf?: HkdfHash;
}

/** What a checker needs of the request a response answers (its kid, Partial IV and kid context, §3.4). */
export interface CheckedRequest {
  kid: Buffer;
  piv: Buffer;
  kidContext?: Buffer;
}

export class SignatureChecker {
  readonly idContext: Buffer;
  readonly #sekey: Buffer;
  readonly #members = new Map<string, { credential: Buffer; key: crypto.KeyObject }>();
  readonly #algorithms: GroupAlgorithms;
  readonly #gmCredential?: Buffer;
  readonly #hkdf: HkdfHash;
  readonly #sigLength: number;

  constructor(p: SignatureCheckerParams) {
    if (p.algorithms.signature === null) throw new OscoreError('ERR_OSCORE_CONFIG', 'a signature checker needs a group that uses the group mode');
    this.idContext = Buffer.from(p.idContext);
    this.#sekey = Buffer.from(p.signatureEncryptionKey);
    this.#algorithms = { ...p.algorithms };
    if (p.gmCredential) this.#gmCredential = Buffer.from(p.gmCredential);
    this.#hkdf = p.hkdf ?? DEFAULT_HKDF;
    this.#sigLength = signatureLength(p.algorithms.signature);
    for (const m of p.members) {
      const credential = Buffer.from(m.credential);
      this.#members.set(Buffer.from(m.senderId).toString('hex'), { credential, key: publicKeyObject(parseCcs(credential)) });
    }
  }

  /** A checker for the group of `g`, with every member `g` knows plus `g` itself. */
  static forGroup(g: GroupContext): SignatureChecker {
    const sekey = g.signatureEncryptionKey();
    if (!sekey) throw new OscoreError('ERR_OSCORE_CONFIG', 'the group mode is not used in this group');
    const members = g.memberIds.map((id) => ({ senderId: id, credential: g.memberCredential(id)! }));
    members.push({ senderId: g.senderId, credential: g.credential });
    return new SignatureChecker({ idContext: g.idContext, signatureEncryptionKey: sekey, algorithms: g.algorithms, members, gmCredential: g.gmCredential, hkdf: g.hkdf });
  }

  /**
   * Verify the countersignature of a group-mode request. Returns the sender's kid. Throws OscoreError:
   * ERR_OSCORE_NOT_PROTECTED / ERR_OSCORE_DECODE (not a group-mode request of this group), ERR_OSCORE_CONTEXT_NOT_FOUND
   * (another Gid), ERR_OSCORE_CREDENTIAL_UNKNOWN, ERR_OSCORE_SIGNATURE.
   */
  checkRequest(msg: { options: CoapOption[]; payload: Buffer }): Buffer {
    const { value, f } = this.option(msg);
    if (!f.piv || f.kid === undefined) throw new OscoreError('ERR_OSCORE_DECODE', 'request without kid or Partial IV', DIAGNOSTICS.DECODE);
    if (!f.kidContext || !f.kidContext.equals(this.idContext)) throw new OscoreError('ERR_OSCORE_CONTEXT_NOT_FOUND', 'not this group', DIAGNOSTICS.CONTEXT_NOT_FOUND);
    this.verify(msg.payload, f.kid, { nonce: Buffer.alloc(0), piv: f.piv, pivId: f.kid, isRequest: true, requestKid: f.kid, requestPiv: f.piv, requestKidContext: f.kidContext, oscoreOption: value });
    return f.kid;
  }

  /** Verify the countersignature of a group-mode response to `request`. Returns the responder's kid. */
  checkResponse(msg: { options: CoapOption[]; payload: Buffer }, request: CheckedRequest): Buffer {
    const { value, f } = this.option(msg);
    if (f.kid === undefined) throw new OscoreError('ERR_OSCORE_DECODE', 'group-mode response without kid');
    const m: MessageBinding = {
      nonce: Buffer.alloc(0),
      piv: f.piv ?? request.piv,
      pivId: f.piv ? f.kid : request.kid,
      isRequest: false,
      requestKid: request.kid,
      requestPiv: request.piv,
      ...(request.kidContext ? { requestKidContext: request.kidContext } : {}),
      oscoreOption: value,
    };
    this.verify(msg.payload, f.kid, m);
    return f.kid;
  }

  private option(msg: { options: CoapOption[] }): { value: Buffer; f: ReturnType<typeof decodeOscoreOption> } {
    const o = msg.options.find((x) => x.number === OPT.OSCORE);
    if (!o) throw new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'no OSCORE option');
    const f = decodeOscoreOption(o.value);
    if (!f.group) throw new OscoreError('ERR_OSCORE_DECODE', 'not protected in group mode', DIAGNOSTICS.DECODE);
    return { value: Buffer.from(o.value), f };
  }

  private verify(payload: Buffer, kid: Buffer, m: MessageBinding): void {
    const member = this.#members.get(kid.toString('hex'));
    if (!member) throw new OscoreError('ERR_OSCORE_CREDENTIAL_UNKNOWN', 'no authentication credential for this kid', { responseCode: CODES.SERVICE_UNAVAILABLE });
    const l = this.#sigLength;
    if (payload.length <= l) throw new OscoreError('ERR_OSCORE_SIGNATURE', 'payload too short for a countersignature', DIAGNOSTICS.DECRYPT);
    const ciphertext = payload.subarray(0, payload.length - l);
    const signature = xorKeystream(payload.subarray(payload.length - l), signatureKeystream(this.#hkdf, this.#sekey, m, this.idContext, l));
    const aadArray = encodeGroupAadArray(this.#algorithms, m, member.credential, this.#gmCredential);
    if (!verify(this.#algorithms.signature!, member.key, encodeCountersignStructure(aadArray, ciphertext), signature)) {
      throw new OscoreError('ERR_OSCORE_SIGNATURE', 'countersignature verification failed', DIAGNOSTICS.DECRYPT);
    }
  }
}
