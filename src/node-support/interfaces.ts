// The machine's interfaces as choices for a multicast interface field: IPv4 by address (what
// setMulticastInterface / addMembership take for IPv4), IPv6 as "::%ifname" (RFC 4007 §11 zone index).

import os from 'node:os';

export interface InterfaceChoice {
  value: string;
  label: string;
  family: 'IPv4' | 'IPv6';
  internal: boolean;
}

export function interfaceChoices(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): InterfaceChoice[] {
  const out: InterfaceChoice[] = [];
  for (const [name, infos] of Object.entries(ifaces)) {
    for (const i of infos ?? []) {
      if (i.family === 'IPv4') out.push({ value: i.address, label: `${name} ${i.address}`, family: 'IPv4', internal: i.internal });
      else if (!out.some((o) => o.value === `::%${name}`)) out.push({ value: `::%${name}`, label: `${name} (IPv6)`, family: 'IPv6', internal: i.internal });
    }
  }
  // loopback first: it is the safe default and what the examples use
  return out.sort((a, b) => Number(b.internal) - Number(a.internal));
}
