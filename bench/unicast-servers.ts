// The three servers of the unicast throughput benchmark, run in a forked child so that client and server each
// have a core: a bare node:dgram echo, our message layer (CoapEndpoint, RFC 7252 §4-5) and the `coap` package's
// server, each on its own 127.0.0.1 port, each answering GET with 2.05 and the same 32-byte payload.
// The parent sends {cmd:'stats'} (CPU time and requests handled) and {cmd:'close'}; the child also exits on its
// own if the parent goes away or after maxMs.

import dgram from 'node:dgram';
import * as coap from 'coap';
import { CODES } from '../src/coap/codes';
import { CoapEndpoint } from '../src/messaging/endpoint';
import { UdpTransport, literalLookup } from '../src/transport/udp-transport';
import { bindLoopback } from './common';

/** 32 bytes, the same for every server */
export const PAYLOAD = Buffer.from(JSON.stringify({ n: 'lamp-1', on: true, b: 42 }).padEnd(32));
export const SERVER_ADDRESS = '127.0.0.1';

export interface ServerPorts {
  echo: number;
  ours: number;
  coap: number;
}

export interface ServerStats {
  /** process CPU time (user + system), µs */
  cpuMicros: number;
  handled: ServerPorts;
}

export type ServerChildMessage =
  | { type: 'ready'; ports: ServerPorts }
  | { type: 'stats'; stats: ServerStats }
  | { type: 'error'; message: string };

async function child(): Promise<void> {
  const { maxMs } = JSON.parse(process.argv[2] ?? '{}') as { maxMs?: number };
  const send = (m: ServerChildMessage) => process.send?.(m);
  const handled: ServerPorts = { echo: 0, ours: 0, coap: 0 };

  // sends without waiting a tick for the lookup of an address literal, as our transport does (udp-transport.ts)
  const echo = dgram.createSocket({ type: 'udp4', lookup: literalLookup });
  echo.on('error', () => undefined);
  echo.on('message', (m, rinfo) => {
    handled.echo++;
    echo.send(m, rinfo.port, rinfo.address);
  });

  const ours = new CoapEndpoint(await UdpTransport.open({ bindAddress: SERVER_ADDRESS }));
  ours.transport.on('error', () => undefined);
  ours.setRequestHandler((_req, ctx) => {
    handled.ours++;
    ctx.respond({ code: CODES.CONTENT, payload: PAYLOAD });
  });

  const coapSock = dgram.createSocket('udp4');
  coapSock.on('error', () => undefined);
  const coapServer = coap.createServer({ type: 'udp4' }, (_req, res) => {
    handled.coap++;
    res.end(PAYLOAD);
  });
  coapServer.on('error', () => undefined);

  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    coapServer.close();
    await new Promise<void>((r) => coapSock.close(() => r()));
    await new Promise<void>((r) => echo.close(() => r()));
    await ours.close();
    process.disconnect?.();
    process.exit(0);
  };
  setTimeout(() => void shutdown(), maxMs ?? 10 * 60_000).unref();
  process.on('disconnect', () => void shutdown());
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'stats') {
      const u = process.cpuUsage();
      send({ type: 'stats', stats: { cpuMicros: u.user + u.system, handled: { ...handled } } });
    } else if (m.cmd === 'close') void shutdown();
  });

  try {
    const ports: ServerPorts = {
      echo: await bindLoopback(echo, SERVER_ADDRESS),
      ours: ours.transport.address().port,
      coap: await bindLoopback(coapSock, SERVER_ADDRESS),
    };
    coapServer.listen(coapSock);
    send({ type: 'ready', ports });
  } catch (err) {
    send({ type: 'error', message: (err as Error).message });
    process.exit(1);
  }
}

if (require.main === module) void child();
