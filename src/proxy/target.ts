// The target of a proxied request, both directions: the one encoder every client-side builder uses (Proxy-Uri,
// Proxy-Scheme + Uri-*, or Uri-Host/Uri-Port/Uri-Path for a reverse proxy; RFC 7252 §5.10.2, §6.4,
// groupcomm-proxy-07 §5.1.1, §6) and the one decoder the proxy uses (groupcomm-proxy-07 §5.2.1, §6: forward
// options, reverse names, the hosts table), plus the one default for T' (groupcomm-proxy-07 §5.1.1: T' < T).

import net from 'node:net';
import { CODES } from '../coap/codes';
import { CoapMessage, CoapOption, getOption } from '../coap/message';
import { OPT, decodeUint, encodeUint } from '../coap/options';
import { CoapUri, UriError, formatUri, parseUri, uriHostValue, uriToOptions } from '../coap/uri';
import { BadProxyRequestError, TargetError } from './errors';

/** How a client names the target towards the proxy. */
export type TargetStyle = 'proxy-uri' | 'proxy-scheme' | 'reverse';

/** Proxy-Scheme, Uri-Host and (if not the default) Uri-Port for `uri` (RFC 7252 §5.10.2). */
export function proxySchemeOptions(uri: CoapUri): CoapOption[] {
  const out: CoapOption[] = [{ number: OPT.PROXY_SCHEME, value: Buffer.from(uri.scheme, 'utf8') }, { number: OPT.URI_HOST, value: uriHostValue(uri.host, uri.zone) }];
  if (uri.port !== 5683) out.push({ number: OPT.URI_PORT, value: encodeUint(uri.port) });
  return out;
}

/**
 * The options that name `uri` in a request to a proxy: Proxy-Uri, Proxy-Scheme + Uri-*, or for a reverse proxy
 * Uri-Host (always, it names the server or group) + Uri-Port (unless it is the proxy's port) + Uri-Path/Query.
 */
export function targetOptions(uri: CoapUri, style: TargetStyle = 'proxy-uri', proxyPort?: number): CoapOption[] {
  if (style === 'proxy-uri') return [{ number: OPT.PROXY_URI, value: Buffer.from(formatUri(uri), 'utf8') }];
  const rest = uriToOptions(uri).filter((o) => o.number === OPT.URI_PATH || o.number === OPT.URI_QUERY);
  if (style === 'proxy-scheme') return [...proxySchemeOptions(uri), ...rest];
  const out: CoapOption[] = [{ number: OPT.URI_HOST, value: uriHostValue(uri.host, uri.zone) }];
  if (proxyPort === undefined || uri.port !== proxyPort) out.push({ number: OPT.URI_PORT, value: encodeUint(uri.port) });
  return [...out, ...rest];
}

/** Host and zone from a Uri-Host value: "[fe80::1%25eth0]", "[::1]", "127.0.0.1", "name". */
export function parseUriHost(value: string): { host: string; zone?: string } {
  const bare = value.replace(/^\[|\]$/g, '');
  const m = /^([^%]*)%(?:25)?(.+)$/.exec(bare);
  if (m && net.isIPv6(m[1])) return { host: m[1], zone: decodeURIComponent(m[2]) };
  return { host: bare };
}

/** groupcomm-proxy-07 §5.1.1: T' < T; by default one second less than the client's timeout (0 below 1 s). */
export function defaultMulticastTimeout(timeoutMs: number): number {
  return Math.max(0, Math.ceil(timeoutMs / 1000) - 1);
}

export interface ReverseMapping {
  /** Uri-Host the client uses for the group (e.g. "group1.com") */
  host?: string;
  /** leading Uri-Path segments that name the group (e.g. ["proxy", "lights"]); removed before forwarding */
  pathPrefix?: string[];
  /** the group URI to reach, e.g. coap://224.0.1.187:5683 (its path is prepended to the remaining path) */
  group: string;
  /** case 1: stand in for the group and for each server; case 2: for the group only */
  standIn: 'servers' | 'group';
}

/** Read only: a target resolved from a Proxy-Uri may be shared by many requests (frozen, see recentProxyUris). */
export interface ResolvedTarget {
  readonly uri: Readonly<CoapUri> & { readonly path: readonly string[]; readonly query: readonly string[] };
  readonly text: string;
  readonly reverse?: ReverseMapping;
}

export interface TargetConfig {
  forward: boolean;
  reverse?: ReverseMapping[];
  hosts: Record<string, string>;
  /** the proxy's own port: a reverse request without Uri-Port names a server on it (RFC 7252 §6.4) */
  listenPort?: number;
  /** reverse case 1: does the proxy stand in for this server (one that answered through it)? */
  knownServer(host: string, port: number): boolean;
}

/** Did the request name a target at all (forward options, or a reverse name)? Errors stay for resolveTarget. */
export function namesTarget(msg: CoapMessage, cfg: TargetConfig): boolean {
  try {
    return resolveTarget(msg, cfg) !== undefined;
  } catch {
    return true;
  }
}

/**
 * The decoder: the target of a request (Proxy-Uri, Proxy-Scheme + Uri-*, or a reverse mapping), undefined when the
 * request names none. Throws TargetError / BadProxyRequestError with fixed diagnostics (never the client's bytes).
 */
export function resolveTarget(msg: CoapMessage, cfg: TargetConfig): ResolvedTarget | undefined {
  try {
    return resolve(msg, cfg);
  } catch (err) {
    if (err instanceof UriError) throw new BadProxyRequestError('bad target URI', [], 'ERR_PROXY_BAD_URI');
    throw err;
  }
}

/** Uri-Port (RFC 7252 §5.10.1: 0-2 bytes); a longer value is a bad request, not an exception. */
function uriPort(msg: CoapMessage): number | undefined {
  const v = getOption(msg, OPT.URI_PORT);
  if (v === undefined) return undefined;
  if (v.length > 2) throw new BadProxyRequestError('bad Uri-Port');
  return decodeUint(v);
}

/**
 * Proxy-Uri values resolved lately, by the option's bytes (latin1): a client that repeats a request names the same
 * group every time, and parsing and formatting its URI was several µs of every proxied request (docs/BENCHMARKS.md
 * §6.6.4). Only URIs with an address literal, which resolve the same whatever the configuration; frozen, since the
 * requests share them. At most PROXY_URI_MEMORY entries of at most 255 bytes each, the first stored dropped first
 * (a hit does not refresh an entry). Targets are resolved before the allow-list is checked (so that the check can
 * name the target), and the memory is shared by every proxy of the process: any client can push others' entries
 * out, which costs them one parse again, nothing more.
 */
const recentProxyUris = new Map<string, ResolvedTarget>();
const PROXY_URI_MEMORY = 64;

/** @internal (tests) How many Proxy-Uri values are remembered. */
export function rememberedProxyUris(): number {
  return recentProxyUris.size;
}

function remember(key: string, target: ResolvedTarget): void {
  if (recentProxyUris.size >= PROXY_URI_MEMORY) recentProxyUris.delete(recentProxyUris.keys().next().value!);
  Object.freeze(target.uri.path);
  Object.freeze(target.uri.query);
  Object.freeze(target.uri);
  recentProxyUris.set(key, Object.freeze(target));
}

function resolve(msg: CoapMessage, cfg: TargetConfig): ResolvedTarget | undefined {
  const proxyUri = getOption(msg, OPT.PROXY_URI);
  const proxyScheme = getOption(msg, OPT.PROXY_SCHEME);
  const uriHost = getOption(msg, OPT.URI_HOST)?.toString('utf8');
  const path = () => msg.options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString('utf8'));
  const query = () => msg.options.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString('utf8'));
  if (proxyUri || proxyScheme) {
    if (!cfg.forward) throw new TargetError(CODES.PROXYING_NOT_SUPPORTED, 'forward proxying off');
    const key = proxyUri && proxyUri.length <= 255 ? proxyUri.toString('latin1') : undefined;
    const known = key === undefined ? undefined : recentProxyUris.get(key);
    if (known) return known;
    let uri: CoapUri;
    if (proxyUri) uri = parseUri(proxyUri.toString('utf8'));
    else {
      if (!uriHost) throw new BadProxyRequestError('Proxy-Scheme needs Uri-Host');
      const port = uriPort(msg);
      const h = parseUriHost(uriHost);
      uri = parseUri(formatUri({ scheme: proxyScheme!.toString('utf8'), host: h.host, zone: h.zone, port: port ?? 5683, path: path(), query: query() }));
    }
    // RFC 7252 §5.7.2: a scheme we do not proxy.
    if (uri.scheme !== 'coap') throw new TargetError(CODES.PROXYING_NOT_SUPPORTED, 'scheme not proxied');
    if (uri.family === 0) {
      const ip = cfg.hosts[uri.host];
      if (!ip) throw new TargetError(CODES.BAD_GATEWAY, 'unknown host name');
      const [host, zone] = ip.split('%');
      uri = { ...uri, host, zone, family: net.isIPv4(host) ? 4 : 6 };
      return { uri, text: formatUri(uri) };
    }
    const target = { uri, text: formatUri(uri) };
    if (key !== undefined) remember(key, target);
    return target;
  }
  // Reverse proxy (groupcomm-proxy-07 §6): a configured name (Uri-Host) or path prefix.
  const segments = path();
  for (const m of cfg.reverse ?? []) {
    if (m.host && m.host.toLowerCase() !== (uriHost ?? '').toLowerCase()) continue;
    const prefix = m.pathPrefix ?? [];
    if (!prefix.every((seg, i) => segments[i] === seg)) continue;
    if (!m.host && !prefix.length) continue;
    const g = parseUri(m.group);
    const uri: CoapUri = { ...g, path: [...g.path, ...segments.slice(prefix.length)], query: query() };
    return { uri, text: formatUri(uri), reverse: m };
  }
  // Reverse case 1 follow-up: Uri-Host (and Uri-Port) name a server that answered through us.
  if (uriHost && (cfg.reverse ?? []).some((m) => m.standIn === 'servers')) {
    const h = parseUriHost(uriHost);
    if (!net.isIP(h.host)) return undefined;
    const port = uriPort(msg) ?? cfg.listenPort ?? 5683;
    const address = h.zone ? `${h.host}%${h.zone}` : h.host;
    if (!cfg.knownServer(address, port)) throw new TargetError(CODES.NOT_FOUND, 'unknown server');
    const uri = parseUri(formatUri({ scheme: 'coap', host: h.host, zone: h.zone, port, path: segments, query: query() }));
    return { uri, text: formatUri(uri) };
  }
  return undefined;
}
