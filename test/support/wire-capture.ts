// What really crosses the loopback interface: tshark captures on `lo` with a BPF filter on the test's own ports
// (other engineers' tests share the machine) and prints each UDP datagram's addresses and payload as it comes. Used
// to check that a proxy never carries plaintext. Needs root (or the capture capability) and tshark;
// `captureUnavailable()` says why not.

import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';

export interface CapturedDatagram {
  src: string;
  srcPort: number;
  dst: string;
  dstPort: number;
  payload: Buffer;
}

export function captureUnavailable(): string | undefined {
  const r = spawnSync('tshark', ['--version'], { encoding: 'utf8' });
  if (r.error) return `tshark not found (${(r.error as NodeJS.ErrnoException).code}); Debian package: tshark`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'capturing on lo needs root';
  return undefined;
}

/**
 * A live capture with tshark (`-l`: one line per packet as it is captured). Start and stop are synchronised with
 * marker datagrams that a socket of the helper sends to itself: capturing has begun when the first marker shows up,
 * and everything sent before the last marker has been seen when that marker shows up (lo keeps the order).
 */
export class WireCapture {
  private readonly lines: CapturedDatagram[] = [];
  private readonly waiters = new Map<string, () => void>();
  private buffered = '';
  private stderr = '';

  private constructor(
    private readonly proc: ChildProcess,
    private readonly marker: dgram.Socket,
    private readonly markerPort: number,
    private readonly exited: Promise<void>,
  ) {
    proc.stdout!.on('data', (d: Buffer) => this.onData(d.toString('utf8')));
    proc.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
  }

  /** Start capturing UDP on lo for the given ports; resolves once packets are really being captured. */
  static async start(ports: number[]): Promise<WireCapture> {
    if (ports.length === 0) throw new Error('no ports to capture');
    const marker = dgram.createSocket('udp4');
    marker.on('error', () => undefined);
    await new Promise<void>((resolve) => marker.bind(0, '127.0.0.1', resolve));
    const markerPort = marker.address().port;
    const filter = [...ports, markerPort].map((p) => `udp port ${p}`).join(' or ');
    const proc = spawn('tshark', ['-i', 'lo', '-f', filter, '-l', '-n', '-T', 'fields', '-e', 'ip.src', '-e', 'udp.srcport', '-e', 'ip.dst', '-e', 'udp.dstport', '-e', 'udp.payload'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.once('error', () => undefined);
    const cap = new WireCapture(proc, marker, markerPort, exited);
    try {
      await cap.sync(10_000);
    } catch (err) {
      await cap.kill();
      throw err;
    }
    cap.lines.length = 0;
    return cap;
  }

  private onData(text: string): void {
    this.buffered += text;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      const [src, sp, dst, dp, hex] = line.split('\t');
      if (!src || !dst) continue;
      const d: CapturedDatagram = { src, srcPort: Number(sp), dst, dstPort: Number(dp), payload: Buffer.from((hex ?? '').replace(/:/g, ''), 'hex') };
      if (d.srcPort === this.markerPort && d.dstPort === this.markerPort) {
        this.waiters.get(d.payload.toString('hex'))?.();
        continue;
      }
      this.lines.push(d);
    }
  }

  /** Send markers (one every 100 ms, the capture may not be running yet) until one is captured. */
  private sync(timeoutMs: number): Promise<void> {
    const id = crypto.randomBytes(8);
    return new Promise<void>((resolve, reject) => {
      const send = () => this.marker.send(id, this.markerPort, '127.0.0.1');
      const every = setInterval(send, 100);
      const guard = setTimeout(() => done(new Error(`tshark captured nothing within ${timeoutMs} ms: ${this.stderr.trim()}`)), timeoutMs);
      const onExit = () => done(new Error(`tshark exited: ${this.stderr.trim()}`));
      const done = (err?: Error) => {
        clearInterval(every);
        clearTimeout(guard);
        this.proc.off('exit', onExit);
        this.waiters.delete(id.toString('hex'));
        if (err) reject(err);
        else resolve();
      };
      this.waiters.set(id.toString('hex'), () => done());
      this.proc.once('exit', onExit);
      send();
    });
  }

  private async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGINT');
    await this.exited;
    await new Promise<void>((resolve) => this.marker.close(() => resolve()));
  }

  /** Everything captured so far (after a sync: everything sent before it). */
  async flush(): Promise<CapturedDatagram[]> {
    await this.sync(10_000);
    return [...this.lines];
  }

  /** Stop, and return every captured IPv4 UDP datagram on the ports, in capture order. */
  async stop(): Promise<CapturedDatagram[]> {
    try {
      await this.sync(10_000);
    } finally {
      await this.kill();
    }
    return [...this.lines];
  }
}
