// The package as a user meets it, in a real browser: packed with `npm pack`, installed into a fresh Node-RED user
// directory, the editor driven in headless Chromium (Debian's chromium through playwright-core). The palette,
// every edit dialog and help panel, Import > Examples, every example imported alone and deployed (its debug
// sidebar shows one message per group member, with nothing started outside the flow), and the group view tab.
// COAP_BROWSER=skip skips this file only where Chromium is absent; COAP_CHROMIUM names another Chromium binary;
// COAP_SCREENSHOTS=<dir> saves the README's screenshots there; COAP_BROWSER_NODE_RED_DIR and COAP_BROWSER_NODE run
// another Node-RED on another Node (npm test uses them for Node-RED 5 on Node 22).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, ConsoleMessage, Page } from 'playwright-core';
import { PackedNodeRed, ROOT, Sandbox, installPacked, openSandbox, startNodeRed, wrapperScript } from './packed-node-red';

// what page.evaluate callbacks see in the browser (the project compiles without the DOM library)
declare const window: any;
declare const document: any;

const CHROMIUM = process.env.COAP_CHROMIUM || '/usr/bin/chromium';
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const nodeTypes: string[] = Object.keys(pkg['node-red'].nodes);
const exampleFiles = fs.readdirSync(path.join(ROOT, 'examples')).filter((f) => f.endsWith('.json')).sort();
const MODULE = pkg.name as string;
/** untranslated i18n keys look like `coap-group-request.label.url` */
const exactly = (text: string) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
const UNTRANSLATED = /\bcoap-[a-z-]+\.[a-zA-Z-]+\.[a-zA-Z-]+\b/;

describe(`browser: the packed package in Node-RED${process.env.COAP_BROWSER_NODE_RED_DIR ? ` (${process.env.COAP_BROWSER_NODE_RED_DIR})` : ''} and Chromium`, function () {
  this.timeout(60000);
  let nr: PackedNodeRed | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let work: string | undefined;
  let sandbox: Sandbox | undefined;
  const problems: string[] = [];

  before(async function () {
    if (!fs.existsSync(CHROMIUM)) {
      if (process.env.COAP_BROWSER === 'skip') {
        console.log(`    browser tests skipped: no Chromium at ${CHROMIUM} and COAP_BROWSER=skip`);
        this.skip();
      }
      throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (.ci/run does), set COAP_CHROMIUM, or set COAP_BROWSER=skip to skip the browser tests`);
    }
    this.timeout(180000);
    const installed = await installPacked();
    work = path.dirname(installed.userDir);
    sandbox = await openSandbox();
    if (!sandbox.name) console.log('    (not root: Node-RED and Chromium share this machine\'s loopback; CoAP devices running elsewhere here could answer)');
    // COAP_BROWSER_NODE_RED_DIR / COAP_BROWSER_NODE: another Node-RED (a folder with node_modules/node-red) and Node binary
    nr = await startNodeRed(installed.userDir, sandbox, process.env.COAP_BROWSER_NODE_RED_DIR || ROOT, process.env.COAP_BROWSER_NODE || process.execPath);
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { chromium } = require('playwright-core') as typeof import('playwright-core');
    browser = await chromium.launch({ executablePath: wrapperScript(sandbox, CHROMIUM, work), headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
    page.on('console', (m: ConsoleMessage) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('pageerror', (e: Error) => problems.push(`page error: ${e.message}`));
    await openEditor();
  });

  after(async function () {
    this.timeout(30000);
    await browser?.close();
    await nr?.stop();
    await sandbox?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed' || !page) return;
    const file = path.join(process.env.COAP_SCREENSHOTS || work || '.', `failed-${this.currentTest.title.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
    await page.screenshot({ path: file }).catch(() => undefined);
    console.log(`    screenshot of the failure: ${file}\n    Node-RED log:\n${nr?.log.slice(logMark).map((l) => `      ${l}`).join('\n')}`);
  });

  let logMark = 0;
  beforeEach(function () {
    problems.splice(0);
    logMark = nr?.log.length ?? 0;
  });

  /** No console error in the browser and no error in the runtime's log since the test began. */
  function assertClean(what: string): void {
    assert.deepEqual(problems, [], `${what}: console errors`);
    const errors = nr!.log.slice(logMark).filter((l) => /\[error\]/.test(l));
    assert.deepEqual(errors, [], `${what}: errors in the Node-RED log`);
  }

  async function openEditor(): Promise<void> {
    await page.goto(nr!.url);
    await page.waitForSelector('.red-ui-palette-node[data-palette-type="coap-group-request"]', { timeout: 30000 });
    await page.waitForFunction(() => !document.querySelector('#red-ui-loading-progress') || document.querySelector('#red-ui-loading-progress').offsetParent === null);
  }

  /** Replace the deployed flows by nothing and reload the editor: each example starts from an empty Node-RED. */
  async function emptyNodeRed(): Promise<void> {
    // from the page: the runtime may live in a network namespace only the browser shares
    const status = await page.evaluate(async () => (await fetch('flows', { method: 'POST', headers: { 'content-type': 'application/json', 'Node-RED-Deployment-Type': 'full' }, body: '[]' })).status);
    assert.equal(status, 204, 'POST /flows with no flows');
    await openEditor();
  }

  async function openImportExamples(): Promise<void> {
    await page.click('#red-ui-header-button-sidemenu');
    await page.click('#menu-item-import');
    await page.click('#red-ui-tab-red-ui-clipboard-dialog-import-tab-examples a');
    const moduleLabel = page.locator('#red-ui-clipboard-dialog-import-tab-examples .red-ui-treeList-label-text', { hasText: exactly(MODULE) });
    const firstExample = page.locator('#red-ui-clipboard-dialog-import-tab-examples .red-ui-treeList-label-text', { hasText: exactly(exampleFiles[0].replace(/\.json$/, '')) });
    // Under load a click on the folder could land while the tree was still being built, and the folder stayed
    // closed (seen twice in full runs beside other test suites): click again while the examples are not shown.
    for (let attempt = 1; ; attempt++) {
      await moduleLabel.click();
      try {
        await firstExample.waitFor({ timeout: 10000 });
        return;
      } catch (err) {
        if (attempt === 3) throw err;
        if (await firstExample.isVisible()) return;
      }
    }
  }

  async function listedExamples(): Promise<string[]> {
    return page.$$eval('#red-ui-clipboard-dialog-import-tab-examples .red-ui-treeList-label-text', (els) => els.map((e) => (e.textContent ?? '').trim()));
  }

  /** Press Import, then open the example's tab as a reader would (the editor stays on the current tab). */
  async function importAndShow(): Promise<void> {
    const before: string[] = await page.evaluate(() => { const ids: string[] = []; window.RED.nodes.eachWorkspace((w: { id: string }) => { ids.push(w.id); }); return ids; });
    await page.click('#red-ui-clipboard-dialog-ok');
    await page.locator('#red-ui-clipboard-dialog').waitFor({ state: 'hidden' });
    // the editor imports once the dialog has closed: wait for the example's tab
    const handle = await page.waitForFunction((old: string[]) => { const ids: string[] = []; window.RED.nodes.eachWorkspace((w: { id: string }) => { if (!old.includes(w.id)) ids.push(w.id); }); return ids.length ? ids : null; }, before, { timeout: 10000 });
    const added = (await handle.jsonValue()) as string[];
    // Show the example's tab the way a click on it does. A click on the tab strip could land while the editor was
    // still laying the new tab out under load, and then nothing happened (seen in CI with Node-RED 4.1).
    await page.evaluate((id: string) => window.RED.workspaces.show(id), added[0]);
    await page.waitForFunction((id: string) => window.RED.workspaces.active() === id, added[0], { timeout: 10000 });
  }

  async function deploy(): Promise<void> {
    await page.click('#red-ui-header-button-deploy');
    // an example with a node that is not properly configured would get the "Confirm deploy" dialog instead
    await page.locator('.red-ui-notification', { hasText: 'Successfully deployed' }).first().waitFor({ timeout: 15000 });
  }

  async function openSidebarTab(id: string): Promise<void> {
    // the tab strip folds tabs that do not fit into a menu (and Node-RED 5 lays the sidebars out anew): show the
    // tab the way that menu does; what the test waits for next is the tab's content
    await page.evaluate((tab) => window.RED.sidebar.show(tab), id);
  }

  /**
   * Topics of the debug sidebar's messages that name one server: `coap://<unicast address>:<port>`, as a response's
   * msg.topic does (a completion's topic is the request URI, with a path, often a group address).
   */
  async function debugOrigins(): Promise<string[]> {
    const topics: string[] = await page.$$eval('.red-ui-debug-msg .red-ui-debug-msg-topic', (els) => els.map((e) => (e.textContent ?? '').split(' : ')[0].trim()));
    return topics.filter((t) => /^coap:\/\/(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:.%]+\])(:\d+)?$/i.test(t) && !/^coap:\/\/(22[4-9]|23\d)\.|^coap:\/\/\[ff/i.test(t));
  }

  it('the palette shows every node of the package (config nodes in the config sidebar)', async function () {
    const palette = await page.$$eval('.red-ui-palette-node', (els) => els.map((e) => e.getAttribute('data-palette-type')));
    const categories = await page.evaluate((types) => types.map((t) => window.RED.nodes.getType(t)?.category ?? null), nodeTypes);
    nodeTypes.forEach((type, i) => {
      assert.notEqual(categories[i], null, `${type} not registered in the editor`);
      if (categories[i] !== 'config') assert.ok(palette.includes(type), `${type} missing from the palette`);
    });
    const plugin = await page.evaluate(() => window.RED.sidebar.containsTab('coap-group-view'));
    assert.ok(plugin, 'the group view tab is in the sidebar');
    assertClean('palette');
  });

  it('every edit dialog opens without console errors or untranslated text, and cancels', async function () {
    for (const type of nodeTypes) {
      const isConfig = await page.evaluate((t) => window.RED.nodes.getType(t).category === 'config', type);
      if (isConfig) {
        await page.evaluate((t) => window.RED.editor.editConfig('', t, '_ADD_'), type);
        await page.locator('#node-config-dialog-edit-form').waitFor();
        const text = await page.locator('.red-ui-tray').last().innerText();
        assert.doesNotMatch(text, UNTRANSLATED, `${type}: untranslated text in the dialog`);
        await page.click('#node-config-dialog-cancel');
      } else {
        const id = await page.evaluate((t) => {
          const RED = window.RED;
          const n = RED.view.importNodes([{ id: RED.nodes.id(), type: t, x: 200, y: 100, z: RED.workspaces.active() }], { generateIds: false, touchImport: true });
          return (n.nodes ?? n)[0]?.id ?? RED.nodes.filterNodes({ type: t })[0].id;
        }, type);
        await page.dblclick(`g.red-ui-flow-node-group[id="${id}"] rect.red-ui-flow-node`);
        await page.locator('#dialog-form').waitFor();
        const text = await page.locator('.red-ui-tray').last().innerText();
        assert.doesNotMatch(text, UNTRANSLATED, `${type}: untranslated text in the dialog`);
        await page.click('#node-dialog-cancel');
        await page.evaluate((nid) => {
          const RED = window.RED;
          RED.nodes.remove(nid);
          RED.view.redraw(true);
        }, id);
      }
      await page.locator('.red-ui-tray').first().waitFor({ state: 'detached' });
      assertClean(`${type} edit dialog`);
    }
  });

  it('the editor flags a bad port (70000, "abc"), a non-CoAP URI, Deterministic Requests without a Group OSCORE context, a Group OSCORE context that does not exist and Max responses 0, and lists this machine\'s interfaces for the multicast interface', async function () {
    const flagged = async (field: string, value: string): Promise<boolean> => {
      await page.fill(field, value);
      await page.locator(field).dispatchEvent('change');
      return page.$eval(field, (el: any) => el.classList.contains('input-error'));
    };
    await page.evaluate(() => window.RED.editor.editConfig('', 'coap-endpoint', '_ADD_'));
    await page.locator('#node-config-dialog-edit-form').waitFor();
    assert.equal(await flagged('#node-config-input-port', '70000'), true, 'port 70000 is flagged');
    assert.equal(await flagged('#node-config-input-port', 'abc'), true, 'port "abc" is flagged');
    assert.equal(await flagged('#node-config-input-port', '5683'), false, 'port 5683 is accepted');
    // the interface list comes from the admin endpoint: loopback at least
    await page.waitForFunction(() => document.querySelectorAll('#coap-ep-ifaces option').length > 0);
    const ifaces: string[] = await page.$$eval('#coap-ep-ifaces option', (os: any[]) => os.map((o) => o.value));
    assert.ok(ifaces.includes('127.0.0.1'), `interfaces listed: ${ifaces.join(', ')}`);
    await page.click('#node-config-dialog-cancel');
    await page.locator('.red-ui-tray').first().waitFor({ state: 'detached' });
    const id = await page.evaluate(() => {
      const RED = window.RED;
      const n = RED.view.importNodes([{ id: RED.nodes.id(), type: 'coap-group-request', x: 200, y: 100, z: RED.workspaces.active() }], { generateIds: false, touchImport: true });
      return (n.nodes ?? n)[0]?.id ?? RED.nodes.filterNodes({ type: 'coap-group-request' })[0].id;
    });
    await page.evaluate((nid: string) => window.RED.editor.edit(window.RED.nodes.node(nid)), id);
    await page.locator('#dialog-form').waitFor();
    assert.equal(await flagged('#node-input-url', 'http://127.0.0.1/light'), true, 'an http URI is flagged');
    assert.equal(await flagged('#node-input-url', 'coap://224.0.1.187/light'), false, 'a coap URI is accepted');
    // Deterministic Requests without a Group OSCORE context would do nothing: the checkbox is flagged while checked
    const deterministicFlagged = async (checked: boolean): Promise<boolean> => {
      await page.setChecked('#node-input-deterministic', checked);
      await page.locator('#node-input-deterministic').dispatchEvent('change');
      return page.$eval('#node-input-deterministic', (el: any) => el.classList.contains('input-error'));
    };
    assert.equal(await deterministicFlagged(true), true, 'Deterministic Requests without a Group OSCORE context is flagged');
    assert.equal(await deterministicFlagged(false), false, 'unchecked, it is not');
    assert.equal(await flagged('#node-input-maxResponses', '0'), true, 'Max responses 0 is flagged');
    assert.equal(await flagged('#node-input-maxResponses', '50'), false, 'Max responses 50 is accepted');
    await page.click('#node-dialog-cancel');
    await page.locator('.red-ui-tray').first().waitFor({ state: 'detached' });
    await page.evaluate((nid: string) => {
      window.RED.nodes.remove(nid);
      window.RED.view.redraw(true);
    }, id);
    // a node that names a Group OSCORE context which does not exist (a flow imported without it) is marked invalid:
    // the runtime would refuse to send from it
    const dangling = await page.evaluate(() => {
      const RED = window.RED;
      const nid = RED.nodes.id();
      RED.view.importNodes([{ id: nid, type: 'coap-group-request', groupOscore: 'deleted-context', x: 200, y: 200, z: RED.workspaces.active() }], { generateIds: false, touchImport: true });
      const node = RED.nodes.node(nid);
      const out = { kept: node.groupOscore, valid: RED.editor.validateNode(node) };
      RED.nodes.remove(nid);
      RED.view.redraw(true);
      return out;
    });
    assert.deepEqual(dangling, { kept: 'deleted-context', valid: false }, 'a missing Group OSCORE context is flagged');
    assertClean('validation');
  });

  it('every node has a help panel with text', async function () {
    await openSidebarTab('help');
    for (const type of nodeTypes) {
      await page.evaluate((t) => window.RED.sidebar.help.show(t), type);
      const help = page.locator('.red-ui-help:visible');
      await help.first().waitFor();
      const text = await help.first().innerText();
      assert.ok(text.length > 80, `${type}: help too short: ${text}`);
      assert.doesNotMatch(text, UNTRANSLATED, `${type}: untranslated text in the help`);
      assertClean(`${type} help`);
    }
  });

  it('Import > Examples lists every example of the package', async function () {
    await openImportExamples();
    const listed = await listedExamples();
    for (const f of exampleFiles) assert.ok(listed.includes(f.replace(/\.json$/, '')), `${f} not listed: ${listed.join(', ')}`);
    await page.keyboard.press('Escape');
    await page.locator('#red-ui-clipboard-dialog').waitFor({ state: 'hidden' });
    assertClean('import dialog');
  });

  for (const file of exampleFiles) {
    const name = file.replace(/\.json$/, '');
    it(`example "${name}": imported alone and deployed, the debug sidebar shows per-member messages; statuses and dialogs as shipped are clean`, async function () {
      this.timeout(90000);
      const flow = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8')) as { type: string; name?: string; once?: boolean }[];
      await emptyNodeRed();
      await openImportExamples();
      // the editor enables Import once it has fetched the selected example; a click that lands while the tree is
      // still unfolding (seen under load with seven examples in Node-RED 5) selects nothing: click the label again
      const label = page.locator('#red-ui-clipboard-dialog-import-tab-examples .red-ui-treeList-label-text', { hasText: exactly(name) });
      for (let attempt = 0; ; attempt++) {
        await label.click();
        const enabled = await page.locator('#red-ui-clipboard-dialog-ok:not([disabled])').waitFor({ timeout: 10000 }).then(() => true, () => false);
        if (enabled) break;
        assert.ok(attempt < 2, `Import stays disabled after selecting "${name}" three times`);
      }
      await importAndShow();
      await deploy();
      await openSidebarTab('debug');
      const needs = flow.some((n) => n.type === 'coap-group-request') ? 2 : 1;
      // the debug sidebar, watched in the page: at least two messages naming a server, from `needs` servers
      const waitFor = (ms: number) =>
        page
          .waitForFunction(
            (k: number) => {
              const topics = [...document.querySelectorAll('.red-ui-debug-msg .red-ui-debug-msg-topic')].map((e: { textContent: string | null }) => (e.textContent ?? '').split(' : ')[0].trim());
              const origins = topics.filter((t: string) => /^coap:\/\/(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:.%]+\])(:\d+)?$/i.test(t) && !/^coap:\/\/(22[4-9]|23\d)\.|^coap:\/\/\[ff/i.test(t));
              return origins.length >= 2 && new Set(origins).size >= k;
            },
            needs,
            { timeout: ms, polling: 200 },
          )
          .then(
            () => true,
            () => false,
          );
      // what runs by itself (inject once); else press the example's buttons one by one, as a reader would
      let ok = await waitFor(flow.some((n) => n.type === 'inject' && n.once) ? 8000 : 1000);
      if (!ok) {
        const buttons = await page.evaluate(() => window.RED.nodes.filterNodes({ type: 'inject' }).map((n: { id: string; name?: string }) => ({ id: n.id, name: n.name ?? '' })));
        for (const b of buttons.filter((x: { name: string }) => !/stop|off|cancel/i.test(x.name))) {
          await page.click(`g.red-ui-flow-node-group[id="${b.id}"] .red-ui-flow-node-button`);
          if ((ok = await waitFor(6000))) break;
        }
      }
      const origins = await debugOrigins();
      assert.ok(ok, `no per-member messages in the debug sidebar (origins seen: ${[...new Set(origins)].join(', ') || 'none'})`);
      assertClean(name);

      // statuses as a user reads them: no "1 responses", no undefined / NaN / [object Object]
      const statuses: string[] = await page.$$eval('.red-ui-flow-node-status-label', (els) => els.map((e) => e.textContent ?? '').filter(Boolean));
      for (const st of statuses) assert.doesNotMatch(st, /\b1 [a-z]{3,}s\b|undefined|NaN|\[object/, `status "${st}"`);

      // no status runs under another node (or another status): the SVG boxes as drawn on the visible tab
      const overlaps: string[] = await page.evaluate(() => {
        type Box = { left: number; right: number; top: number; bottom: number; width: number; height: number };
        const label = (g: any) => window.RED.nodes.node(g.id)?.name || window.RED.nodes.node(g.id)?.type || g.id;
        const nodes: { id: string; name: string; box: Box; status?: Box }[] = [];
        for (const g of document.querySelectorAll('#red-ui-workspace-chart g.red-ui-flow-node-group') as any) {
          const rect = g.querySelector('rect.red-ui-flow-node');
          if (!rect) continue;
          const box: Box = rect.getBoundingClientRect();
          if (box.width === 0 || box.height === 0) continue; // not on the visible tab
          const text = g.querySelector('.red-ui-flow-node-status-label');
          const group = g.querySelector('.red-ui-flow-node-status-group');
          let status: Box | undefined;
          if (text && (text.textContent ?? '') !== '' && group) {
            const sb: Box = group.getBoundingClientRect();
            if (sb.width > 0 && sb.height > 0) status = sb;
          }
          nodes.push({ id: g.id, name: label(g), box, status });
        }
        const hit = (a: Box, b: Box) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        const out: string[] = [];
        for (const n of nodes) {
          if (!n.status) continue;
          for (const o of nodes) {
            if (o === n) continue;
            if (hit(n.status, o.box)) out.push(`the status of "${n.name}" runs under the node "${o.name}"`);
            if (o.status && o.id < n.id && hit(n.status, o.status)) out.push(`the statuses of "${n.name}" and "${o.name}" overlap`);
          }
        }
        return out.length ? out : nodes.some((n) => n.status) ? [] : ['no status was drawn'];
      });
      assert.deepEqual(overlaps, [], `${name}: statuses overlapping nodes`);

      // every dialog of the example as shipped: no empty select, no field the editor flags as invalid
      const ours: { id: string; type: string; config: boolean }[] = await page.evaluate((types: string[]) => {
        const out: { id: string; type: string; config: boolean }[] = [];
        window.RED.nodes.eachNode((n: { id: string; type: string }) => { if (types.includes(n.type)) out.push({ id: n.id, type: n.type, config: false }); });
        window.RED.nodes.eachConfig((n: { id: string; type: string }) => { if (types.includes(n.type)) out.push({ id: n.id, type: n.type, config: true }); });
        return out;
      }, nodeTypes);
      let selects = 0;
      for (const n of ours) {
        if (n.config) await page.evaluate((c: { id: string; type: string }) => window.RED.editor.editConfig('', c.type, c.id), n);
        else await page.evaluate((id: string) => window.RED.editor.edit(window.RED.nodes.node(id)), n.id);
        const form = n.config ? '#node-config-dialog-edit-form' : '#dialog-form';
        await page.locator(form).waitFor();
        const findings: string[] = await page.$eval(form, (f: any) => {
          const out: string[] = [];
          for (const sel of f.querySelectorAll('select')) {
            if (sel.offsetParent === null) continue; // a row this configuration hides
            out.push('checked');
            const hasEmpty = [...sel.options].some((o: { value: string }) => o.value === '');
            if (sel.selectedIndex < 0 || (sel.value === '' && !hasEmpty)) out.push(`empty select ${sel.id}`);
          }
          for (const el of f.querySelectorAll('.input-error')) if (el.offsetParent !== null) out.push(`invalid ${el.id || el.className}`);
          return out;
        });
        selects += findings.filter((x) => x === 'checked').length;
        assert.deepEqual(findings.filter((x) => x !== 'checked'), [], `${name}: the ${n.type} dialog of ${n.id}`);
        const cancel = n.config ? '#node-config-dialog-cancel' : '#node-dialog-cancel';
        await page.click(cancel);
        // Once in many runs (Node-RED 4.1, 2026-12-03) the click landed and the tray stayed open for 30 s: click once
        // more. A dialog whose Cancel really fails (e.g. an oneditcancel that throws) fails the second click too.
        await page.locator(form).waitFor({ state: 'detached', timeout: 10_000 }).catch(async () => {
          await page.click(cancel);
          await page.locator(form).waitFor({ state: 'detached' });
        });
      }
      assert.ok(ours.length > 0 && selects > 0, 'the example\'s own nodes and their selects were looked at');
      assertClean(`${name} dialogs`);
      if (process.env.COAP_SCREENSHOTS && /^Lighting group/.test(name)) {
        await page.locator('.red-ui-notification').first().waitFor({ state: 'detached', timeout: 15000 }).catch(() => undefined);
        await page.screenshot({ path: path.join(process.env.COAP_SCREENSHOTS, 'demo-flow.png') });
      }
    });
  }

  it('the group view tab draws members x exchanges coloured by response code', async function () {
    this.timeout(90000);
    const file = exampleFiles.find((f) => /^Lighting group/.test(f)) ?? exampleFiles[0];
    await emptyNodeRed();
    await openImportExamples();
    await page.locator('#red-ui-clipboard-dialog-import-tab-examples .red-ui-treeList-label-text', { hasText: exactly(file.replace(/\.json$/, '')) }).click();
    await importAndShow();
    await deploy();
    await openSidebarTab('coap-group-view');
    const injects: { id: string; name: string }[] = await page.evaluate(() => window.RED.nodes.filterNodes({ type: 'inject' }).map((n: { id: string; name?: string }) => ({ id: n.id, name: n.name ?? '' })));
    const requestNodes: { id: string; name: string }[] = await page.evaluate(() => window.RED.nodes.filterNodes({ type: 'coap-group-request' }).map((n: { id: string; name?: string }) => ({ id: n.id, name: n.name ?? '' })));
    const box = (id: string) => `.coap-gv-node[data-node="${id}"]`;
    const ended = (id: string, n: number) => page.waitForFunction(([sel, k]) => Number(document.querySelector(sel)?.getAttribute('data-ended') ?? 0) >= k, [box(id), n] as [string, number], { timeout: 20000 });
    // the example reads the lamps once at deploy; read them again (a second column), then switch them on (a second node)
    const reader = requestNodes.find((n) => /GET/.test(n.name)) ?? requestNodes[0];
    await ended(reader.id, 1);
    const read = injects.find((b) => /read/i.test(b.name));
    if (read) {
      await page.click(`g.red-ui-flow-node-group[id="${read.id}"] .red-ui-flow-node-button`);
      await ended(reader.id, 2);
    }
    const on = injects.find((b) => /on$/i.test(b.name));
    const writer = requestNodes.find((n) => /PUT/.test(n.name));
    if (on && writer) {
      await page.click(`g.red-ui-flow-node-group[id="${on.id}"] .red-ui-flow-node-button`);
      await ended(writer.id, 1);
    }
    const grid = await page.$eval(box(reader.id), (n) => ({
      exchanges: Number(n.getAttribute('data-exchanges')),
      members: [...n.querySelectorAll('.coap-gv-grid tr')].slice(1).map((r) => r.querySelector('th').textContent),
      codes: [...n.querySelectorAll('td.coap-gv-cell')].map((c) => c.getAttribute('data-code')),
      head: n.querySelector('.coap-gv-head').textContent,
    }));
    assert.ok(grid.head.includes(reader.name), `the section names the node: ${grid.head}`);
    assert.equal(grid.exchanges, read ? 2 : 1, 'one column per exchange');
    assert.ok(grid.members.length >= 2 && grid.members.every((m: string) => /^127\.\d+\.\d+\.\d+(:\d+)?$/.test(m)), `one row per member: ${grid.members.join(', ')}`);
    assert.equal(grid.codes.length, grid.members.length * grid.exchanges);
    assert.ok(grid.codes.every((c: string) => c === '2.05' || c === 'missing'), `cells coloured by code: ${grid.codes.join(' ')}`);
    const cellTitle = await page.locator(`${box(reader.id)} td.coap-gv-cell[data-code^="2."]`).first().getAttribute('title');
    assert.match(cellTitle ?? '', /2\.05 after \d+ ms/, 'each cell gives the member\'s latency');
    if (writer && on) assert.ok(await page.locator(`${box(writer.id)} td.coap-gv-cell[data-code^="2."]`).count() >= 2, 'the PUT node has its own grid');
    assertClean('group view');
    if (process.env.COAP_SCREENSHOTS) {
      // a wider sidebar, and no notification over the flow
      const sep = await page.locator('#red-ui-sidebar-separator').boundingBox();
      if (sep) {
        await page.mouse.move(sep.x + sep.width / 2, sep.y + 200);
        await page.mouse.down();
        await page.mouse.move(sep.x - 180, sep.y + 200, { steps: 5 });
        await page.mouse.up();
      }
      await page.locator('.red-ui-notification').first().waitFor({ state: 'detached', timeout: 15000 }).catch(() => undefined);
      await page.screenshot({ path: path.join(process.env.COAP_SCREENSHOTS, 'group-view.png') });
    }
  });
});
