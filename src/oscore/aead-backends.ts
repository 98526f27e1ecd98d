// Picks an AEAD backend for a COSE algorithm (RFC 8613 §3.2 "AEAD Algorithm"). node:crypto is the default (about
// 3x faster for AES-CCM here, see STYLE.md); @noble/ciphers is the pure-JS alternative with the same interface.

import { Aead } from './aead';
import { nobleAead } from './aead-noble';
import { nodeAead } from './aead-node';

export type AeadBackendName = 'node' | 'noble';

export const AEAD_BACKENDS: Readonly<Record<AeadBackendName, (alg: number) => Aead>> = {
  node: nodeAead,
  noble: nobleAead,
};

export const DEFAULT_AEAD_BACKEND: AeadBackendName = 'node';

export function createAead(alg: number, backend: AeadBackendName = DEFAULT_AEAD_BACKEND): Aead {
  const make = AEAD_BACKENDS[backend];
  if (!make) throw new RangeError(`unknown AEAD backend ${JSON.stringify(backend)}`);
  return make(alg);
}
