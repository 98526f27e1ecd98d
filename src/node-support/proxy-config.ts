// The text fields of a group proxy's dialog, parsed into GroupProxyOptions (groupcomm-proxy-07 §5.2.1 step 2 for
// the allow-list, §6 for reverse mappings, §7 for the members a cache may answer for). Bad lines are errors that
// name the line number, never silently different rules.

import net from 'node:net';
import type { AllowRule, ReverseMapping } from '../proxy/group-proxy';

export class ProxyConfigError extends Error {
  readonly code = 'ERR_PROXY_CONFIG';
}

function port(text: string, line: number): number {
  const p = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(p >= 1 && p <= 65535)) throw new ProxyConfigError(`allow-list line ${line}: invalid port`);
  return p;
}

/**
 * "127.0.0.1", "127.0.0.1:40000", "::1" or "fe80::1%eth0" (bare IPv6), "[::1]:5683", "*", or "kid:0a" /
 * "kid:0a@77" (an OSCORE identity: hex Recipient ID of the context shared with that client, @ hex ID Context);
 * one per line or comma-separated; "#" starts a comment line.
 */
export function parseAllowList(text: string | undefined): AllowRule[] {
  const out: AllowRule[] = [];
  (text ?? '').split(/[\n,]/).forEach((raw, i) => {
    const l = raw.trim();
    const line = i + 1;
    if (!l || l.startsWith('#')) return;
    if (l === '*') return out.push({ address: '*' });
    if (/^kid:/i.test(l)) {
      const kid = l.slice(4).trim().toLowerCase();
      if (!/^[0-9a-f]*(@[0-9a-f]*)?$/.test(kid)) throw new ProxyConfigError(`allow-list line ${line}: a kid is hex (kid:0a or kid:0a@77)`);
      return out.push({ address: '*', kid });
    }
    const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(l);
    if (v6) {
      if (!net.isIPv6(v6[1].split('%')[0])) throw new ProxyConfigError(`allow-list line ${line}: not an IPv6 address`);
      return out.push({ address: v6[1], port: v6[2] ? port(v6[2], line) : undefined });
    }
    // A bare IPv6 address has several colons: it is an address, not address:port.
    if (net.isIPv6(l.split('%')[0])) return out.push({ address: l });
    const [address, p, ...rest] = l.split(':');
    if (rest.length || !net.isIPv4(address)) throw new ProxyConfigError(`allow-list line ${line}: not an IP address (use 192.0.2.1, 192.0.2.1:5683, ::1, [::1]:5683, * or kid:..)`);
    out.push({ address, port: p !== undefined ? port(p, line) : undefined });
  });
  return out;
}

/** "224.0.1.187:5683 = 127.0.0.2:5683, 127.0.0.3:5683", one group per line (the port defaults to 5683). */
export function parseMembers(text: string | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const line of (text ?? '').split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const g = line.slice(0, eq).trim();
    const list = line.slice(eq + 1);
    if (!g) continue;
    // an IPv6 group is written in brackets; a bare IPv4 address gets the default port
    const key = g.startsWith('[') ? (/\]:\d+$/.test(g) ? g : `${g}:5683`) : g.includes(':') ? g : `${g}:5683`;
    out[key] = list.split(',').map((m) => m.trim()).filter(Boolean);
  }
  return out;
}

export interface ReverseRow {
  host?: string;
  path?: string;
  group: string;
  standIn?: 'servers' | 'group';
}

export function parseReverse(rows: ReverseRow[] | undefined): ReverseMapping[] {
  return (rows ?? [])
    .filter((r) => r && r.group)
    .map((r) => ({
      host: r.host?.trim() || undefined,
      pathPrefix: r.path ? r.path.split('/').filter(Boolean) : undefined,
      group: r.group.trim(),
      standIn: r.standIn === 'servers' ? 'servers' : 'group',
    }));
}
