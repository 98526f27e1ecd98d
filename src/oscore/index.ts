// Public API of the framework-free OSCORE core (RFC 8613, and Group OSCORE RFC 10021 in ./group): security contexts
// behind the capability interfaces, AEAD backends, protect / unprotect of requests and responses, replay windows,
// persisted sender sequence numbers and Echo-based window recovery.

export { type Aead, AeadError, type AeadErrorCode, type AeadParams, AEAD_ALGORITHMS, DEFAULT_AEAD_ALG, aeadParams } from './aead';
export { type AeadBackendName, AEAD_BACKENDS, DEFAULT_AEAD_BACKEND, createAead } from './aead-backends';
export { nodeAead } from './aead-node';
export { nobleAead } from './aead-noble';
export type { CanProtect, CanUnprotect, ContextSource, MessageBinding, PeerContext, ProtectionMode, RequestContext, ResponseContext } from './capabilities';
export { ClientBinding, ServerBinding, type RequestBindingInit } from './binding';
export { type DerivedKeys, SecurityContext, type SecurityContextOptions, type SecurityContextParams, deriveKeys } from './context';
export {
  MAX_PIV_LENGTH,
  MAX_SEQUENCE_NUMBER,
  OSCORE_VERSION,
  type OscoreOptionFields,
  computeNonce,
  decodeOscoreOption,
  decodePartialIv,
  encodeAad,
  encodeAadArray,
  encodeInfo,
  encodeOscoreOption,
  encodePartialIv,
} from './cose';
export { EchoChallenges } from './echo';
export { DIAGNOSTICS, EchoRequiredError, OscoreError, type OscoreErrorCode, UnsafeDeterministicRequestError, isOscoreError } from './errors';
export { DEFAULT_HKDF, type HkdfHash, hkdf } from './hkdf';
export { type OscoreClass, layerClass, oscoreClass } from './option-classes';
export {
  type ContextResolver,
  type LayerOptions,
  type MessageParts,
  type ProtectOptions,
  type ProtectRequestOptions,
  type ProtectResponseOptions,
  type VerifiedRequest,
  type VerifiedResponse,
  answerOscoreError,
  bindOwnRequest,
  echoChallenge,
  isProtected,
  oscoreErrorResponse,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
  unsafeMethodAnswer,
} from './protect';
export { joinProxyUri, splitProxyUri } from './proxy-uri';
export { ContextRegistry } from './registry';
export { DEFAULT_REPLAY_WINDOW, NotificationTracker, ReplayWindow, type ReplayWindowOptions, type ReplayWindowState } from './replay';
export { DEFAULT_SEQUENCE_BLOCK, FileSequenceStore, MemorySequenceStore, SenderSequence, type SenderSequenceOptions, type SequenceStore } from './sequence';
export * from './group';
