// Child process of the libcoap proxy interop test: runs our GroupProxy (groupcomm-proxy-07 §5.2, §5.4) inside a
// lab network namespace (`ip netns exec NS node node-group-proxy.js '<ProxyJob JSON>'`). Two endpoints, as in
// test/integration/proxy.test.ts: `listen` faces the clients, `upstream` sends the group requests (its multicast
// interface pinned to the namespace's own address, TTL 1). Reports on stdout, one JSON object per line: ready,
// every proxy event stamped with the wall clock (`at`, ms since the epoch: same clock as the test process), and the
// counters when it closes (on SIGTERM or when stdin is closed).

import { CoapEndpoint } from '../../src/messaging/endpoint';
import { AllowRule, GroupProxy, ProxyCounters, ProxyEvent } from '../../src/proxy/group-proxy';
import { UdpTransport } from '../../src/transport/udp-transport';

export interface ProxyJob {
  /** address and port the clients send to, e.g. 198.51.100.3:5683 */
  listen: { address: string; port: number };
  /** local address of the upstream endpoint (ephemeral port) */
  upstreamAddress: string;
  /** the node's IPv4 address, or '::%veth0' */
  multicastInterface: string;
  allow: AllowRule[];
  maxMulticastTimeout?: number;
}

export type ProxyReport =
  | { event: 'ready'; listen: { address: string; port: number }; upstream: { address: string; port: number } }
  | ({ event: 'proxy'; at: number } & ProxyEvent)
  | { event: 'closed'; counters: ProxyCounters; activeExchanges: number }
  | { event: 'error'; message: string };

function report(e: ProxyReport): void {
  process.stdout.write(JSON.stringify(e) + '\n');
}

async function run(job: ProxyJob): Promise<void> {
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: job.listen.address, port: job.listen.port, multicastInterface: job.multicastInterface }));
  const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: job.upstreamAddress, multicastInterface: job.multicastInterface, multicastLoopback: false }));
  const proxy = new GroupProxy({ listen, upstream, allow: job.allow, ...(job.maxMulticastTimeout === undefined ? {} : { maxMulticastTimeout: job.maxMulticastTimeout }) });
  proxy.on('event', (e: ProxyEvent) => report({ event: 'proxy', at: Date.now(), ...e }));
  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    (async () => {
      const activeExchanges = proxy.activeExchanges;
      await proxy.close();
      await listen.close();
      await upstream.close();
      report({ event: 'closed', counters: proxy.counters, activeExchanges });
      process.stdin.destroy();
    })().catch((err: Error) => {
      report({ event: 'error', message: err.stack ?? err.message });
      process.exit(1);
    });
  };
  process.stdin.on('end', shutdown);
  process.stdin.resume();
  process.on('SIGTERM', shutdown);
  report({ event: 'ready', listen: listen.transport.address(), upstream: upstream.transport.address() });
}

if (require.main === module) {
  let job: ProxyJob;
  try {
    job = JSON.parse(process.argv[2] ?? '') as ProxyJob;
  } catch {
    report({ event: 'error', message: 'usage: node-group-proxy.js <ProxyJob as JSON>' });
    process.exit(2);
  }
  run(job).catch((err: Error) => {
    report({ event: 'error', message: err.stack ?? err.message });
    process.exit(1);
  });
}
