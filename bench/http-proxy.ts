// HTTP front against CoAP front (groupcomm-proxy-07 §9 vs §5): time from sending one request until the last of
// N servers' responses reached the client, for N = 10 and 100 members, in one run. The HTTP client asks for the
// streamed batch (`Prefer: stream`) and reads parts as they arrive (the unstreamed batch only comes at T' by
// design); the CoAP client counts relayed responses. Loopback only, multicast pinned to 127.0.0.1, TTL 1; bounded
// rounds. Run: npm run build && node dist/bench/http-proxy.js [--rounds=30]

import http from 'node:http';
import { CODES } from '../src/coap/codes';
import { GroupServer } from '../src/group/group-server';
import { GroupProxy } from '../src/proxy/group-proxy';
import { BatchReader } from '../src/proxy/http-batch-client';
import { startHttpFront } from '../src/proxy/http-front';
import { requestViaProxy } from '../src/proxy/proxy-client';
import { fmt, loopbackEndpoint, machineLine, median, numArg, parseArgs, percentile, table } from './common';
import { freeGroupPort } from '../test/support/lamps';

const GROUP = '224.0.1.187';

function timeHttp(agent: http.Agent, url: string, n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const req = http.get(url, { agent, headers: { 'Multicast-Timeout': '5', Prefer: 'stream' } }, (res) => {
      const reader = new BatchReader(res.headers['content-type']);
      res.on('data', (c: Buffer) => {
        got += reader.push(c).length;
        if (got >= n) {
          resolve(performance.now() - t0);
          req.destroy(); // the front ends the exchange when the client goes
        }
      });
      res.on('error', () => undefined);
    });
    req.on('error', (err) => (got >= n ? undefined : reject(err)));
  });
}

function timeCoap(client: Awaited<ReturnType<typeof loopbackEndpoint>>, proxy: { address: string; port: number }, uri: string, n: number): Promise<number> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let got = 0;
    const ex = requestViaProxy(client, { proxy, uri, multicastTimeout: 5, timeout: 6000 });
    ex.on('response', () => {
      if (++got === n) {
        resolve(performance.now() - t0);
        setImmediate(() => ex.cancel());
      }
    });
  });
}

async function main(): Promise<void> {
  const args = parseArgs();
  const rounds = numArg(args, 'rounds', 30);
  const rows: (string | number)[][] = [];
  for (const n of [10, 100]) {
    const port = await freeGroupPort(GROUP);
    const servers: GroupServer[] = [];
    for (let i = 0; i < n; i++) {
      const s = await GroupServer.open({ address: `127.0.${1 + Math.floor((2 + i) / 250)}.${2 + ((2 + i) % 250)}`, port: 0, groups: [{ address: GROUP, port }], leisure: 0, transport: { recvBufferSize: 4 << 20 } });
      s.addResource('/r', () => ({ code: CODES.CONTENT, payload: 'x'.repeat(16) }));
      servers.push(s);
    }
    const listen = await loopbackEndpoint();
    const upstream = await loopbackEndpoint();
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], maxPendingPerClient: 1000, maxResponsesPerSecond: 1e9 });
    const front = await startHttpFront(proxy);
    const client = await loopbackEndpoint();
    const agent = new http.Agent({ keepAlive: false });
    const uri = `coap://${GROUP}:${port}/r`;
    const url = `http://127.0.0.1:${front.address.port}/hc?target_uri=${encodeURIComponent(uri)}`;
    const viaHttp: number[] = [];
    const viaCoap: number[] = [];
    for (let r = 0; r < rounds; r++) {
      viaCoap.push(await timeCoap(client, listen.transport.address(), uri, n));
      viaHttp.push(await timeHttp(agent, url, n));
    }
    viaHttp.sort((a, b) => a - b);
    viaCoap.sort((a, b) => a - b);
    rows.push([n, 'CoAP front', fmt(median(viaCoap), 2), fmt(percentile(viaCoap, 95), 2)]);
    rows.push([n, 'HTTP front (streamed)', fmt(median(viaHttp), 2), fmt(percentile(viaHttp, 95), 2)]);
    rows.push([n, 'ratio HTTP / CoAP', `${fmt(median(viaHttp) / median(viaCoap), 2)}x`, `${fmt(percentile(viaHttp, 95) / percentile(viaCoap, 95), 2)}x`]);
    agent.destroy();
    await front.close();
    await proxy.close();
    await Promise.all([listen.close(), upstream.close(), client.close(), ...servers.map((s) => s.close())]);
  }
  console.log(`\nTime until the last member's response reached the client (${rounds} rounds each; ${machineLine()}):\n`);
  console.log(table(['members', 'path', 'median ms', 'p95 ms'], rows));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
