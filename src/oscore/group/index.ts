// Public API of Group OSCORE (RFC 10021): the group Security Context with its group-mode and pairwise-mode
// associations, authentication credentials (CCS) and key pairs, the asymmetric algorithms, and Leisure defaults.

export {
  COSE_ALG,
  COSE_CRV,
  COSE_KTY,
  type PublicKeyInfo,
  type SignatureAlgorithm,
  ed25519PrivateToX25519,
  ed25519PublicToX25519,
  privateKeyObject,
  publicKeyObject,
  publicKeyOf,
  sharedSecret,
  sign,
  signatureLength,
  verify,
} from './algorithms';
export { CRED_FORMAT_KCCS, type CredentialInfo, type GeneratedKeyPair, encodeCcs, generateGroupKeyPair, parseCcs } from './credential';
export { type GroupAlgorithms, encodeCountersignStructure, encodeGroupAad, encodeGroupAadArray, signatureKeystream } from './cose-group';
export { type CheckedRequest, SignatureChecker, type SignatureCheckerParams } from './signature-checker';
export { GroupContext, type GroupContextOptions, type GroupContextParams, type GroupMember } from './group-context';
export { DEFAULT_LEISURE_GROUP_MODE_MS, DEFAULT_LEISURE_PAIRWISE_ONLY_MS, DEFAULT_LEISURE_PLAIN_MS, groupOscoreLeisure, leisureLowerBound } from './leisure';
export { DETERMINISTIC_HASH, type DeterministicClientConfig, MAX_PADDING_BLOCK, PADDING_OPTION, REQUEST_HASH_OPTION, isDeterministicRequest, padOptions } from './deterministic';
