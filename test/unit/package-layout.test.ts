// The built layout matches package.json: every node Node-RED is told about exists in dist/ with its .html,
// locale and icon beside it, and `npm pack` ships what a user needs and nothing else.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

describe('package layout', function () {
  it('declares a Node-RED package (keyword, node-red section with version)', function () {
    assert.ok(pkg.keywords.includes('node-red'));
    assert.match(pkg['node-red'].version, />=4/);
    assert.ok(Object.keys(pkg['node-red'].nodes).length >= 3);
  });

  for (const [type, file] of Object.entries<string>(pkg['node-red'].nodes)) {
    it(`${type}: ${file} exists with its .html and locale beside it, and registers "${type}"`, function () {
      const js = path.join(root, file);
      assert.ok(fs.existsSync(js), `${file} missing: run npm run build`);
      const html = js.replace(/\.js$/, '.html');
      assert.ok(fs.existsSync(html), `${html} missing`);
      const base = path.basename(js, '.js');
      assert.ok(fs.existsSync(path.join(path.dirname(js), 'locales', 'en-US', `${base}.json`)), `locale for ${base} missing`);
      const htmlText = fs.readFileSync(html, 'utf8');
      assert.match(htmlText, new RegExp(`registerType\\('${type}'`));
      assert.match(htmlText, new RegExp(`data-help-name="${type}"`));
      const icon = /icon: '([^']+)'/.exec(htmlText)?.[1];
      if (icon) assert.ok(fs.existsSync(path.join(path.dirname(js), 'icons', icon)), `icon ${icon} missing`);
      const registered: string[] = [];
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      require(js)({ nodes: { registerType: (t: string) => registered.push(t), createNode() {}, getNode() {} }, _: (k: string) => k, settings: {}, util: {} });
      assert.deepEqual(registered, [type]);
    });
  }

  it('every node in the palette has its own icon, white on transparent in a 2:3 box (Node-RED appearance guide)', function () {
    const icons = new Map<string, string>();
    for (const [type, file] of Object.entries<string>(pkg['node-red'].nodes)) {
      const html = fs.readFileSync(path.join(root, file.replace(/\.js$/, '.html')), 'utf8');
      if (/category: 'config'/.test(html)) continue;
      const icon = /icon: '([^']+)'/.exec(html)?.[1];
      assert.ok(icon, `${type} has no icon`);
      assert.ok(!icons.has(icon), `${type} shares ${icon} with ${icons.get(icon)}`);
      icons.set(icon, type);
      const svg = fs.readFileSync(path.join(path.dirname(path.join(root, file)), 'icons', icon), 'utf8');
      assert.match(svg, /viewBox="0 0 40 60"/, `${icon}: a 2:3 box`);
      const colours = [...svg.matchAll(/(?:fill|stroke)="([^"]+)"/g)].map((m) => m[1].toLowerCase());
      assert.deepEqual([...new Set(colours)].filter((c) => !['#fff', '#ffffff', 'white', 'none'].includes(c)), [], `${icon}: white on transparent only`);
    }
  });

  it('node modules keep their exported helpers reachable (module.exports is the register function with them on it)', function () {
    const endpoint = require(path.join(root, 'dist/nodes/coap-endpoint.js'));
    assert.equal(typeof endpoint, 'function');
    assert.equal(typeof endpoint.endpointOptionsFromConfig, 'function');
    assert.equal(typeof require(path.join(root, 'dist/nodes/coap-response-splitter.js')).matchMember, 'function');
    assert.equal(typeof require(path.join(root, 'dist/nodes/coap-group-server.js')).groupServerOptionsFromConfig, 'function');
  });

  it('no example polls on a timer (a repeating inject floods the debug sidebar of every tab)', function () {
    for (const f of fs.readdirSync(path.join(root, 'examples'))) {
      for (const n of JSON.parse(fs.readFileSync(path.join(root, 'examples', f), 'utf8'))) {
        if (n.type === 'inject') assert.ok(!n.repeat && !n.crontab, `${f}: "${n.name}" repeats`);
      }
    }
  });

  it('every status text is short enough to stay under its node and has no count-dependent plural ("1 responses")', function () {
    const dir = path.join(root, 'nodes', 'locales', 'en-US');
    for (const f of fs.readdirSync(dir)) {
      const catalog = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      for (const [type, texts] of Object.entries<Record<string, Record<string, string>>>(catalog)) {
        for (const [key, text] of Object.entries(texts.status ?? {})) {
          const one = text.replace(/__\w+__/g, '1');
          assert.ok(text.replace(/__\w+__/g, '1000').length <= 32, `${type}.status.${key} "${text}" is too long for a status`);
          assert.doesNotMatch(one, /\b1 [a-z]+s\b/, `${type}.status.${key} "${text}" reads "${one}"`);
        }
      }
    }
  });

  it('npm pack ships dist/src, dist/nodes and examples, and no tests, benches or TypeScript sources', function () {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const files: string[] = JSON.parse(out)[0].files.map((f: { path: string }) => f.path);
    assert.ok(files.includes('package.json'));
    assert.ok(files.includes('README.md'));
    for (const file of Object.values<string>(pkg['node-red'].nodes)) assert.ok(files.includes(file), `${file} not packed`);
    assert.ok(files.some((f) => f.startsWith('examples/') && f.endsWith('.json')));
    const stray = files.filter((f) => /^(dist\/)?(test|bench|scripts)\//.test(f) || (/\.ts$/.test(f) && !/\.d\.ts$/.test(f)));
    assert.deepEqual(stray, []);
  });

  it('an example that asks over HTTP needs nothing outside itself: its http request node reaches an HTTP front of the same flow, whose target group its own lamps join', function () {
    let checked = 0;
    for (const f of fs.readdirSync(path.join(root, 'examples'))) {
      const flow = JSON.parse(fs.readFileSync(path.join(root, 'examples', f), 'utf8'));
      for (const n of flow.filter((x: { type: string }) => x.type === 'http request')) {
        const u = new URL(n.url);
        const front = flow.find((p: Record<string, string>) => p.type === 'coap-group-proxy' && p.httpMode === 'port' && String(p.httpPort) === u.port && p.httpHost === u.hostname && u.pathname === p.httpPath);
        assert.ok(front, `${f}: "${n.name}" asks ${u.host}${u.pathname}, which no proxy of the flow serves`);
        const target = new URL(u.searchParams.get('target_uri')!);
        const lamps = flow.filter((s: Record<string, string>) => s.type === 'coap-group-server' && s.group === target.hostname && String(s.groupPort) === (target.port || '5683'));
        assert.ok(lamps.length >= 2, `${f}: the flow's own lamps join ${target.host}`);
        checked++;
      }
    }
    assert.ok(checked >= 1, 'the HTTP example was looked at');
  });

  it('every example flow is valid JSON and uses only node types that exist', function () {
    const known = new Set([...Object.keys(pkg['node-red'].nodes), 'tab', 'inject', 'debug', 'join', 'split', 'switch', 'change', 'function', 'comment', 'http request']);
    // the defaults of every dialog are filled in, so no select shows empty after import
    const defaults: Record<string, string[]> = {};
    for (const [type, file] of Object.entries<string>(pkg['node-red'].nodes)) {
      const html = fs.readFileSync(path.join(root, file.replace(/\.js$/, '.html')), 'utf8');
      const block = /defaults: \{([\s\S]*?)\n\s*\},\n/.exec(html)?.[1] ?? '';
      defaults[type] = [...block.matchAll(/^\s*(\w+): \{/gm)].map((m) => m[1]);
    }
    for (const f of fs.readdirSync(path.join(root, 'examples'))) {
      const flow = JSON.parse(fs.readFileSync(path.join(root, 'examples', f), 'utf8'));
      for (const n of flow) {
        assert.ok(known.has(n.type), `${f}: unknown node type ${n.type}`);
        for (const key of defaults[n.type] ?? []) assert.ok(key in n, `${f}: ${n.type} "${n.name}" has no ${key} (an empty field after import)`);
      }
    }
  });
});
