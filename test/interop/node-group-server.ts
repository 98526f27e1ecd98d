// Child process of the libcoap interop tests: runs one of our GroupServers inside a lab network namespace
// (`ip netns exec NS node node-group-server.js '<ServerJob JSON>'`). It serves /light with a body naming the
// server and reports on stdout, one JSON object per line: ready, every request it handles, and its counters
// when it closes (on SIGTERM or when stdin is closed).

import { GroupServer } from '../../src/group/group-server';
import { GroupMembership } from '../../src/transport/udp-transport';

export interface ServerJob {
  name: string;
  /** unicast address, e.g. 198.51.100.11 or fe80::11%veth0 */
  address: string;
  port: number;
  groups: GroupMembership[];
  /** the node's IPv4 address, or '::%veth0' */
  multicastInterface: string;
  leisure: number;
}

export type ServerEvent =
  | { event: 'ready'; address: string; port: number }
  | { event: 'request'; path: string; multicast: boolean; group?: string; remote: { address: string; port: number }; type: string }
  | { event: 'closed'; counters: { requests: number; groupRequests: number; suppressed: number; responses: number } }
  | { event: 'error'; message: string };

function report(e: ServerEvent): void {
  process.stdout.write(JSON.stringify(e) + '\n');
}

/** What /light answers: the server's name and unicast address, so a client's output shows who answered. */
export function lightBody(job: Pick<ServerJob, 'name' | 'address'>): string {
  return `${job.name} at ${job.address}`;
}

async function run(job: ServerJob): Promise<void> {
  const server = await GroupServer.open({
    address: job.address, port: job.port, groups: job.groups, leisure: job.leisure,
    transport: { multicastInterface: job.multicastInterface },
  });
  server.addResource('/light', (req) => {
    report({ event: 'request', path: req.path, multicast: req.multicast, group: req.group, remote: req.remote, type: req.message.type });
    return { contentFormat: 0, payload: lightBody(job) };
  });
  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    server.close().then(() => {
      report({ event: 'closed', counters: server.counters });
      process.stdin.destroy();
    });
  };
  process.stdin.on('end', shutdown);
  process.stdin.resume();
  process.on('SIGTERM', shutdown);
  report({ event: 'ready', ...server.address() });
}

if (require.main === module) {
  let job: ServerJob;
  try {
    job = JSON.parse(process.argv[2] ?? '') as ServerJob;
  } catch {
    report({ event: 'error', message: 'usage: node-group-server.js <ServerJob as JSON>' });
    process.exit(2);
  }
  run(job).catch((err: Error) => {
    report({ event: 'error', message: err.stack ?? err.message });
    process.exit(1);
  });
}
