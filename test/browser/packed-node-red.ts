// Node-RED as a user gets it: this package packed with `npm pack`, installed from the tarball into a fresh user
// directory, and a Node-RED runtime started on it on a free loopback port. Used by the browser tests.
// As root, Node-RED and the browser run inside a network namespace of their own with only a loopback interface:
// no CoAP device of this machine (another checkout's demo, say) can answer the examples, and nothing they send
// can leave. Without root they share this machine's loopback.

import { ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const ROOT = path.resolve(__dirname, '..', '..', '..');

/** A network namespace with only its loopback up; `wrap` prefixes a command line so that it runs inside. */
export interface Sandbox {
  name?: string;
  wrap(cmd: string, args: string[]): [string, string[]];
  close(): Promise<void>;
}

export async function openSandbox(): Promise<Sandbox> {
  const none: Sandbox = { wrap: (cmd, args) => [cmd, args], close: async () => undefined };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return none;
  const name = `coap-browser-${process.pid}`;
  try {
    await run('ip', ['netns', 'add', name]);
  } catch {
    return none; // no iproute2 or no namespaces here
  }
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    wrap: (cmd, args) => ['ip', ['netns', 'exec', name, cmd, ...args]],
    close: async () => {
      await run('ip', ['netns', 'del', name]).catch(() => undefined);
    },
  };
}

/** A shell script that starts `binary` inside the sandbox (for launchers that take only an executable path). */
export function wrapperScript(sandbox: Sandbox, binary: string, dir: string): string {
  if (!sandbox.name) return binary;
  const file = path.join(dir, 'chromium-in-sandbox.sh');
  fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${sandbox.name} ${binary} "$@"\n`, { mode: 0o755 });
  return file;
}

export interface PackedNodeRed {
  url: string;
  userDir: string;
  /** lines Node-RED wrote to stdout and stderr */
  log: string[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** `npm pack` the checkout (already built) into a temporary folder, install it into a fresh user dir. */
export async function installPacked(): Promise<{ userDir: string; tarball: string }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coap-browser-'));
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, maxBuffer: 1 << 24 });
  const tarball = path.join(work, JSON.parse(stdout)[0].filename);
  const userDir = path.join(work, 'user');
  fs.mkdirSync(userDir);
  fs.writeFileSync(path.join(userDir, 'package.json'), JSON.stringify({ name: 'node-red-project', private: true }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--omit=dev', tarball], { cwd: userDir, maxBuffer: 1 << 24 });
  // no first-run tour or telemetry prompt (they would cover what the test clicks), no palette catalogue from the
  // internet: nothing leaves this machine
  fs.writeFileSync(
    path.join(userDir, 'settings.js'),
    `module.exports = { uiHost: '127.0.0.1', flowFile: 'flows.json', credentialSecret: 'browser-test-only', editorTheme: { tours: false, palette: { catalogues: [] } }, telemetry: { enabled: false, updateNotification: false }, logging: { console: { level: 'info' } } };\n`,
  );
  return { userDir, tarball };
}

/** Start Node-RED (the runtime under `nodeRedDir`, default the devDependency) on a user dir; resolves once it listens. */
export async function startNodeRed(userDir: string, sandbox: Sandbox, nodeRedDir = ROOT, nodeBinary = process.execPath): Promise<PackedNodeRed> {
  // in a sandbox every port is free; outside, ask the kernel for one
  const port = sandbox.name ? 1880 : await freePort();
  const red = require.resolve('node-red/red.js', { paths: [nodeRedDir] });
  const [cmd, args] = sandbox.wrap(nodeBinary, [red, '--userDir', userDir, '--port', String(port), '--settings', path.join(userDir, 'settings.js')]);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_RED_ENABLE_PROJECTS: 'false' } });
  const log: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        log.push(line);
        if (/Server now running at/.test(line)) resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`Node-RED exited (${code}) before it listened:\n${log.join('\n')}`)));
  });
  return {
    url: `http://127.0.0.1:${port}/`,
    userDir,
    log,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGINT');
      await exited;
    },
  };
}
