// Child process of the libcoap interop tests: runs our GroupClient inside a lab network namespace
// (`ip netns exec NS node node-group-client.js '<ClientJob JSON>'`) and reports on stdout, one JSON object per
// line: the optional unicast set-up requests, every group response with its origin, then the group summary.

import { codeToString, parseCode } from '../../src/coap/codes';
import { GroupClient } from '../../src/group/group-client';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { UdpTransport } from '../../src/transport/udp-transport';

export interface ClientJob {
  /** local address of the client endpoint, e.g. 198.51.100.2 or '::' */
  bindAddress: string;
  /** multicast interface: the node's IPv4 address, or '::%veth0' */
  multicastInterface: string;
  /** unicast CON requests sent one after the other before the group request */
  setup?: { method: string; uri: string; payload?: string }[];
  group: { uri: string; timeout: number };
}

export type ClientEvent =
  | { event: 'unicast'; uri: string; code: string; type: string; payload: string }
  | { event: 'sent'; uri: string; token: string }
  | { event: 'response'; index: number; origin: { address: string; port: number; uri: string }; code: string; type: string; payload: string; atMs: number }
  | { event: 'end'; responses: number; responders: { address: string; port: number; uri: string }[]; errors: unknown[]; cancelled: boolean; atMs: number }
  | { event: 'error'; message: string };

function report(e: ClientEvent): void {
  process.stdout.write(JSON.stringify(e) + '\n');
}

async function run(job: ClientJob): Promise<void> {
  const transport = await UdpTransport.open({ bindAddress: job.bindAddress, multicastInterface: job.multicastInterface });
  const endpoint = new CoapEndpoint(transport);
  try {
    const client = new GroupClient(endpoint);
    for (const step of job.setup ?? []) {
      const res = await client.unicast({ method: parseCode(step.method), uri: step.uri, payload: step.payload === undefined ? undefined : Buffer.from(step.payload), confirmable: true, timeout: 5000 });
      report({ event: 'unicast', uri: step.uri, code: codeToString(res.message.code), type: res.message.type, payload: res.message.payload.toString('utf8') });
    }
    const started = Date.now();
    const ex = client.request({ uri: job.group.uri, timeout: job.group.timeout });
    report({ event: 'sent', uri: job.group.uri, token: ex.token.toString('hex') });
    for await (const r of ex) {
      report({
        event: 'response', index: r.index, origin: r.origin, code: codeToString(r.message.code), type: r.message.type,
        payload: r.message.payload.toString('utf8'), atMs: Date.now() - started,
      });
    }
    const s = await ex.summary;
    report({ event: 'end', responses: s.responses, responders: s.responders, errors: s.errors, cancelled: s.cancelled, atMs: Date.now() - started });
  } finally {
    await endpoint.close();
  }
}

if (require.main === module) {
  let job: ClientJob;
  try {
    job = JSON.parse(process.argv[2] ?? '') as ClientJob;
  } catch {
    report({ event: 'error', message: 'usage: node-group-client.js <ClientJob as JSON>' });
    process.exit(2);
  }
  run(job).then(
    () => undefined,
    (err: Error) => {
      report({ event: 'error', message: err.stack ?? err.message });
      process.exitCode = 1;
    },
  );
}
