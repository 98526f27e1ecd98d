// The COSE structures Group OSCORE adds (RFC 10021 §3, §4): the external_aad of §3.4 (one structure for the
// AEAD of both modes and for the countersignature), the Countersign_structure of §3.1 (RFC 9338 §3.3), and the
// keystream that encrypts the countersignature (§4.2). Pure functions, shared by the group context and the
// external signature checker.

import { CborValue, encodeCbor } from '../cbor';
import type { MessageBinding } from '../capabilities';
import { OSCORE_VERSION } from '../cose';
import { HkdfHash, hkdf } from '../hkdf';

const EMPTY = Buffer.alloc(0);

/** The four algorithms of the aad_array; an algorithm that is not set is null (§3.4). */
export interface GroupAlgorithms {
  aead: number | null;
  groupEncryption: number | null;
  signature: number | null;
  pairwiseKeyAgreement: number | null;
}

/** §3.4 aad_array = [1, [algs], request_kid, request_piv, options, request_kid_context, OSCORE_option, sender_cred, gm_cred]. */
export function encodeGroupAadArray(algs: GroupAlgorithms, m: MessageBinding, senderCred: Uint8Array, gmCred: Uint8Array | undefined): Buffer {
  const a: CborValue = [algs.aead, algs.groupEncryption, algs.signature, algs.pairwiseKeyAgreement];
  return encodeCbor([OSCORE_VERSION, a, m.requestKid, m.requestPiv, m.classI ?? EMPTY, m.requestKidContext ?? EMPTY, m.oscoreOption, senderCred, gmCred ?? EMPTY]);
}

/** RFC 9052 §5.3 Enc_structure with the Group OSCORE external_aad. */
export function encodeGroupAad(aadArray: Buffer): Buffer {
  return encodeCbor(['Encrypt0', EMPTY, aadArray]);
}

/**
 * §3.1: the Countersign_structure of RFC 9338 §3.3 with the context "CounterSignature0", empty body_protected and
 * sign_protected, the external_aad and the ciphertext as payload. RFC 9338 §3.3 omits sign_protected for the
 * abbreviated form (4 elements); both implementations of RFC 10021's implementation status (aiocoap, Californium via
 * COSE-JAVA) sign these 5 elements and interoperate, so this follows them for interoperability.
 */
export function encodeCountersignStructure(aadArray: Buffer, ciphertext: Buffer): Buffer {
  return encodeCbor(['CounterSignature0', EMPTY, EMPTY, aadArray, ciphertext]);
}

/** §4.2 KEYSTREAM = HKDF(salt = PIV, IKM = Signature Encryption Key, info = [id, id_context, is request, L], L). */
export function signatureKeystream(hash: HkdfHash, signatureEncryptionKey: Buffer, m: MessageBinding, idContext: Buffer, length: number): Buffer {
  return hkdf(hash, signatureEncryptionKey, m.piv, encodeCbor([m.pivId, idContext, m.isRequest, length]), length);
}

/** XOR `data` with `keystream` into a new buffer (ENC_SIGNATURE = SIGNATURE XOR KEYSTREAM, §4.1). */
export function xorKeystream(data: Uint8Array, keystream: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] ^ keystream[i];
  return out;
}
