// Leisure for servers answering group requests protected with Group OSCORE (RFC 10020 §3.6.1): the larger
// messages (countersignature) raise the estimated response size S, so DEFAULT_LEISURE grows from RFC 7252's 5 s to
// 20 s when the group uses the group mode (S = 200) and 13 s when it uses only the pairwise mode (S = 130). The
// lower bound is RFC 7252 §8.2's lb_Leisure = S * G / R.

/** RFC 7252 §8.2 without Group OSCORE. */
export const DEFAULT_LEISURE_PLAIN_MS = 5000;
/** RFC 10020 §3.6.1: the group uses the group mode (also). */
export const DEFAULT_LEISURE_GROUP_MODE_MS = 20000;
/** RFC 10020 §3.6.1: the group uses only the pairwise mode. */
export const DEFAULT_LEISURE_PAIRWISE_ONLY_MS = 13000;

/** The default Leisure (ms) for a server of a group protected as described. */
export function groupOscoreLeisure(group: { hasGroupMode: boolean; hasPairwiseMode: boolean } | undefined): number {
  if (!group) return DEFAULT_LEISURE_PLAIN_MS;
  return group.hasGroupMode ? DEFAULT_LEISURE_GROUP_MODE_MS : DEFAULT_LEISURE_PAIRWISE_ONLY_MS;
}

/** RFC 7252 §8.2 lb_Leisure = S * G / R in ms: S bytes per response, G servers, R bytes/s the link can carry. */
export function leisureLowerBound(responseSize: number, groupSize: number, dataRate: number): number {
  if (!(responseSize > 0 && groupSize > 0 && dataRate > 0)) throw new RangeError('S, G and R must be positive');
  return (responseSize * groupSize * 1000) / dataRate;
}
