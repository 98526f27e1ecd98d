// `npm start`: Node-RED on http://127.0.0.1:1880 with this package and every example flow deployed (one tab each;
// the flows file is written on first start and kept afterwards). The examples bring their own group members
// (coap-group-server nodes on loopback addresses), so nothing else is started: what runs here is what a user gets
// from Import > Examples.
// Runs until Ctrl-C. Environment: PORT (editor port, default 1880), DEMO_USER_DIR (default .node-red-demo).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const EXAMPLES = path.join(root, 'examples');

/** Every example flow, each on its own tab, as one flows file. */
function demoFlows(): unknown[] {
  return fs
    .readdirSync(EXAMPLES)
    .filter((f) => f.endsWith('.json'))
    .sort((a, b) => (a.startsWith('Lighting') ? -1 : b.startsWith('Lighting') ? 1 : a.localeCompare(b)))
    .flatMap((f) => JSON.parse(fs.readFileSync(path.join(EXAMPLES, f), 'utf8')));
}

async function main(): Promise<void> {
  const port = Number(process.env.PORT || 1880);
  const userDir = path.resolve(process.env.DEMO_USER_DIR || path.join(root, '.node-red-demo'));
  fs.mkdirSync(userDir, { recursive: true });
  const flowFile = path.join(userDir, 'flows.json');
  // Install this package into the demo's user directory the way npm would (a link), so that Node-RED loads it as
  // a module: with its locales, its examples under Import > Examples, and its name in the palette manager.
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string };
  const link = path.join(userDir, 'node_modules', pkg.name);
  fs.mkdirSync(path.dirname(link), { recursive: true });
  if (!fs.existsSync(link)) fs.symlinkSync(root, link, 'dir');
  if (!fs.existsSync(flowFile)) fs.writeFileSync(flowFile, JSON.stringify(demoFlows(), null, 2));

  // Node-RED is embedded (express comes with node-red) so that the demo needs no global install.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const RED = require('node-red');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const express = require('express');
  const app = express();
  const server = http.createServer(app);
  const settings = {
    uiHost: '127.0.0.1',
    uiPort: port,
    httpAdminRoot: '/',
    httpNodeRoot: '/api',
    userDir,
    flowFile: 'flows.json',
    credentialSecret: false,
    editorTheme: { tours: false, projects: { enabled: false } },
    telemetry: { enabled: false, updateNotification: false },
    logging: { console: { level: 'info', metrics: false, audit: false } },
    functionGlobalContext: {},
  };
  RED.init(server, settings);
  app.use(settings.httpAdminRoot, RED.httpAdmin);
  app.use(settings.httpNodeRoot, RED.httpNode);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  await RED.start();
  console.log(`Node-RED with the demo flow: http://127.0.0.1:${port}/  (Ctrl-C to stop)`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping...');
    await RED.stop();
    server.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err) => {
  console.error(`demo failed: ${err.message}`);
  process.exit(1);
});
