// Test fixture: a private layer-2 lab made of Linux network namespaces, for interop tests that need real
// multicast between processes with distinct addresses (libcoap's tools cannot be pinned to loopback).
// A "hub" namespace holds a bridge without multicast snooping; every node namespace has one veth ("veth0") on it
// with 198.51.100.H/24 (TEST-NET-2) and fe80::H/64, and routes 224.0.0.0/4 and ff00::/8 to that veth. Nothing
// is created in the root namespace and no namespace has a default route, so no datagram can leave the lab.

import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';

export const LAB_SUBNET_V4 = '198.51.100';
export const LAB_IFNAME = 'veth0';

export interface LabNodeSpec {
  /** short name, e.g. "s1"; the namespace is `${prefix}-${name}` */
  name: string;
  /** host number H (1..254): the node gets 198.51.100.H and fe80::H, H written in decimal digits (host 11 -> fe80::11) */
  host: number;
}

export interface LabNode {
  name: string;
  ns: string;
  ifname: string;
  ipv4: string;
  /** link-local address without zone */
  ipv6: string;
  /** link-local address with zone, as node:dgram and URIs (unescaped) write it */
  ipv6Scoped: string;
}

const IP_TIMEOUT = 5000;
/** Debian package that provides a binary named in `labUnavailable` (default libcoap3-bin). */
const INSTALL_HINTS: Record<string, string> = { tshark: 'tshark' };
const TERMINATING_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP'];

/** Why the lab cannot be built here (undefined if it can): root, `ip netns`, and the given binaries are needed. */
export function labUnavailable(binaries: string[] = []): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (CI runs as root)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe', timeout: IP_TIMEOUT });
  } catch (err) {
    return `"ip netns" is not usable (install iproute2): ${(err as Error).message.split('\n')[0]}`;
  }
  for (const bin of binaries) {
    try {
      execFileSync('sh', ['-c', 'command -v "$1"', 'sh', bin], { stdio: 'pipe', timeout: IP_TIMEOUT });
    } catch {
      return `${bin} is not installed (apt-get install -y ${INSTALL_HINTS[bin] ?? 'libcoap3-bin'})`;
    }
  }
  return undefined;
}

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: IP_TIMEOUT }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A process started inside a lab namespace. Keeps its output (for failure reports), splits stdout into lines,
 * and offers bounded waits.
 */
export class LabProcess {
  stdout = '';
  stderr = '';
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  private readonly lineWaiters = new Set<() => void>();
  private readonly exitWaiters = new Set<() => void>();
  private partial = '';
  readonly lines: string[] = [];

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.stdout += chunk;
      this.partial += chunk;
      const parts = this.partial.split('\n');
      this.partial = parts.pop()!;
      if (parts.length) {
        this.lines.push(...parts);
        for (const w of [...this.lineWaiters]) w();
      }
    });
    child.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk;
      for (const w of [...this.lineWaiters]) w();
    });
    child.on('error', (err) => {
      this.stderr += `\n[spawn error] ${err.message}`;
      this.markExit(null, null);
    });
    child.on('close', (code, signal) => this.markExit(code, signal));
  }

  private markExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exit) return;
    if (this.partial) {
      this.lines.push(this.partial);
      this.partial = '';
    }
    this.exit = { code, signal };
    for (const w of [...this.lineWaiters]) w();
    for (const w of [...this.exitWaiters]) w();
  }

  /** stdout lines that are JSON objects, parsed. */
  events<T = Record<string, unknown>>(): T[] {
    return this.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as T);
  }

  /** Wait until `test` holds for the output so far; rejects after `ms` or if the process exits first. */
  waitFor(test: (p: LabProcess) => boolean, ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (test(this)) return done();
        if (this.exit) return done(new Error(`${this.label} exited (${this.exit.code ?? this.exit.signal}) before ${what}\n${this.transcript()}`));
      };
      const timer = setTimeout(() => done(new Error(`${this.label}: no ${what} within ${ms} ms\n${this.transcript()}`)), ms);
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.lineWaiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.lineWaiters.add(check);
      check();
    });
  }

  /** Wait for the process to exit; rejects after `ms` (the process is left to `stop`). */
  exited(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return new Promise((resolve, reject) => {
      if (this.exit) return resolve(this.exit);
      const onExit = () => {
        clearTimeout(timer);
        this.exitWaiters.delete(onExit);
        resolve(this.exit!);
      };
      const timer = setTimeout(() => {
        this.exitWaiters.delete(onExit);
        reject(new Error(`${this.label} still running after ${ms} ms\n${this.transcript()}`));
      }, ms);
      this.exitWaiters.add(onExit);
    });
  }

  /** SIGTERM, then SIGKILL if the process has not exited after `graceMs`. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.exit) return;
    this.child.kill('SIGTERM');
    try {
      await this.exited(graceMs);
    } catch {
      if (!this.exit) this.child.kill('SIGKILL');
      await this.exited(2000).catch(() => undefined);
    }
  }

  transcript(): string {
    const cut = (s: string) => (s.length > 4000 ? '...' + s.slice(-4000) : s);
    return `--- ${this.label} stdout ---\n${cut(this.stdout)}\n--- ${this.label} stderr ---\n${cut(this.stderr)}`;
  }
}

export class NetnsLab {
  readonly hub: string;
  private readonly nodes = new Map<string, LabNode>();
  private readonly namespaces: string[] = [];
  private readonly processes: LabProcess[] = [];
  private destroyed = false;
  private readonly onExit = () => this.destroySync();
  /** Killed from outside (e.g. a CI time limit): clean up, then die of the same signal. */
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.destroySync();
    process.kill(process.pid, sig);
  };

  private constructor(readonly prefix: string) {
    this.hub = `${prefix}-hub`;
  }

  /** Build the lab; on failure everything created so far is removed again. */
  static async create(nodes: LabNodeSpec[], prefix = `cgp-${process.pid}`): Promise<NetnsLab> {
    const lab = new NetnsLab(prefix);
    process.once('exit', lab.onExit);
    for (const sig of TERMINATING_SIGNALS) process.once(sig, lab.onSignal);
    try {
      await lab.build(nodes);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  private async addNamespace(ns: string): Promise<void> {
    await ip(['netns', 'add', ns]);
    this.namespaces.push(ns);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  private async build(specs: LabNodeSpec[]): Promise<void> {
    await this.addNamespace(this.hub);
    // No snooping: without an IGMP/MLD querier a snooping bridge may withhold group traffic from members.
    await ip(['-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0']);
    await ip(['-n', this.hub, 'link', 'set', 'br0', 'addrgenmode', 'none']);
    await ip(['-n', this.hub, 'link', 'set', 'br0', 'up']);
    for (const spec of specs) {
      if (!/^[a-z0-9]{1,8}$/.test(spec.name)) throw new Error(`lab node name ${JSON.stringify(spec.name)}: use 1-8 of [a-z0-9]`);
      if (!(spec.host >= 1 && spec.host <= 254)) throw new Error(`lab node ${spec.name}: host must be 1..254`);
      const ns = `${this.prefix}-${spec.name}`;
      const port = `p-${spec.name}`;
      const node: LabNode = {
        name: spec.name, ns, ifname: LAB_IFNAME,
        ipv4: `${LAB_SUBNET_V4}.${spec.host}`, ipv6: `fe80::${spec.host}`, ipv6Scoped: `fe80::${spec.host}%${LAB_IFNAME}`,
      };
      await this.addNamespace(ns);
      // Both ends are created directly in their namespaces, so the root namespace never sees them.
      await ip(['link', 'add', LAB_IFNAME, 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.hub]);
      await ip(['-n', this.hub, 'link', 'set', port, 'addrgenmode', 'none']);
      await ip(['-n', this.hub, 'link', 'set', port, 'master', 'br0', 'up']);
      // Only the addresses we give: no EUI-64 link-local, no duplicate address detection delay.
      await ip(['-n', ns, 'link', 'set', LAB_IFNAME, 'addrgenmode', 'none']);
      await ip(['-n', ns, 'addr', 'add', `${node.ipv4}/24`, 'dev', LAB_IFNAME]);
      await ip(['-n', ns, '-6', 'addr', 'add', `${node.ipv6}/64`, 'dev', LAB_IFNAME, 'nodad']);
      await ip(['-n', ns, 'link', 'set', LAB_IFNAME, 'up']);
      await ip(['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', LAB_IFNAME]);
      await ip(['-n', ns, '-6', 'route', 'add', 'ff00::/8', 'dev', LAB_IFNAME]);
      this.nodes.set(spec.name, node);
    }
    await this.waitUntilUp(3000);
  }

  private async waitUntilUp(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    for (const node of this.nodes.values()) {
      for (;;) {
        const link = await ip(['-n', node.ns, '-o', 'link', 'show', LAB_IFNAME]);
        const addrs = await ip(['-n', node.ns, '-6', '-o', 'addr', 'show', 'dev', LAB_IFNAME]);
        if (/state UP/.test(link) && addrs.includes(node.ipv6) && !/tentative/.test(addrs)) break;
        if (Date.now() > deadline) throw new Error(`lab: ${node.ns}/${LAB_IFNAME} not up after ${ms} ms: ${link.trim()} ${addrs.trim()}`);
        await sleep(20);
      }
    }
  }

  node(name: string): LabNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no lab node ${name}`);
    return n;
  }

  /**
   * Wait until a node's interface has joined `group` (kernel view, `ip maddr`), whoever joined it; this tells
   * when a server is ready to receive group requests without relying on its log output.
   */
  async waitForGroup(nodeName: string, group: string, ms: number): Promise<void> {
    const node = this.node(nodeName);
    const deadline = Date.now() + ms;
    for (;;) {
      const out = await ip(['-n', node.ns, 'maddr', 'show', 'dev', LAB_IFNAME]);
      if (out.split('\n').some((l) => l.trim().split(/\s+/)[1] === group)) return;
      if (Date.now() > deadline) throw new Error(`lab: ${node.ns}/${LAB_IFNAME} has not joined ${group} after ${ms} ms:\n${out}`);
      await sleep(20);
    }
  }

  /**
   * Start `command args...` inside a node's namespace. `timeout` bounds its life even if this test process dies
   * without cleaning up (it forwards our SIGTERM to the command).
   */
  spawn(nodeName: string, label: string, command: string, args: string[], lifetimeS = 120): LabProcess {
    if (this.destroyed) throw new Error('lab destroyed');
    const node = this.node(nodeName);
    const child = spawn('ip', ['netns', 'exec', node.ns, 'timeout', '-k', '2', String(lifetimeS), command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const p = new LabProcess(label, child);
    this.processes.push(p);
    return p;
  }

  /** Processes started so far, for failure reports. */
  get started(): readonly LabProcess[] {
    return this.processes;
  }

  /** Stop every process we started, then delete the namespaces (the veths and the bridge go with them). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all(this.processes.map((p) => p.stop(1000)));
    const errors: string[] = [];
    for (const ns of [...this.namespaces].reverse()) {
      await this.killLeftovers(ns);
      await ip(['netns', 'del', ns]).catch((err: Error) => errors.push(err.message));
    }
    this.namespaces.length = 0;
    this.removeProcessListeners();
    if (errors.length) throw new Error(`lab cleanup: ${errors.join('; ')}`);
  }

  /** Anything still running in a namespace of ours was started by this lab (e.g. a grandchild); end it by pid. */
  private async killLeftovers(ns: string): Promise<void> {
    const pids = (await ip(['netns', 'pids', ns]).catch(() => '')).split(/\s+/).filter(Boolean);
    for (const pid of pids) killQuietly(Number(pid));
  }

  private removeProcessListeners(): void {
    process.removeListener('exit', this.onExit);
    for (const sig of TERMINATING_SIGNALS) process.removeListener(sig, this.onSignal);
  }

  /** Last resort when the test process exits without running `after` hooks. */
  private destroySync(): void {
    this.removeProcessListeners();
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.processes) if (!p.exit) p.child.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: 'pipe', timeout: IP_TIMEOUT });
        for (const pid of pids.split(/\s+/).filter(Boolean)) killQuietly(Number(pid));
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: IP_TIMEOUT });
      } catch {
        /* best effort */
      }
    }
  }
}
