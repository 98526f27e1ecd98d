// Timer arithmetic of groupcomm-proxy-07 §5.1.1 and §8.1 (SPEC-DIGEST §1.1, §1.2.8): the client's T' < T,
// and a non-last proxy's T'' with T'' < T_proxy < T', each gap at least the round trip of that hop.

export interface ChainTimers {
  /** the proxy's own token retention T_proxy (s) */
  tProxy: number;
  /** the value to send to the next hop (s) */
  tNext: number;
}

/**
 * Pick T_proxy and T'' for a non-last proxy, or return undefined when no T'' >= 1 s fits; `minimumAcceptable`
 * then gives the smallest T' that would have worked (the value a 5.05 carries).
 */
export function chainTimers(tPrime: number, rttPrevious: number, rttNext: number): ChainTimers | undefined {
  const tProxy = tPrime - Math.ceil(rttPrevious);
  const tNext = tProxy - Math.ceil(rttNext);
  if (tNext < 1) return undefined;
  return { tProxy, tNext };
}

export function minimumAcceptable(rttPrevious: number, rttNext: number): number {
  return Math.ceil(rttPrevious) + Math.ceil(rttNext) + 1;
}

/** Client side: the T' to announce for a token retention of `tMs` and a round trip to the proxy of `rttMs`. */
export function clientMulticastTimeout(tMs: number, rttMs: number): number {
  return Math.max(0, Math.floor((tMs - rttMs) / 1000));
}
