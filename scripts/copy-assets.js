// Node-RED loads a node's .html, locales/ and icons/ from beside its .js, so copy them next to the compiled
// nodes in dist/nodes/. Plain JS so that it runs before anything is compiled. An optional argument names another
// output directory (the --outDir of a private build): `node scripts/copy-assets.js dist-mine` fills dist-mine/nodes/.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const src = path.join(__dirname, '..', 'nodes');
const dst = process.argv[2] ? path.resolve(process.argv[2], 'nodes') : path.join(__dirname, '..', 'dist', 'nodes');

function copy(from, to) {
  const st = fs.statSync(from);
  if (st.isDirectory()) {
    fs.mkdirSync(to, { recursive: true });
    for (const entry of fs.readdirSync(from)) copy(path.join(from, entry), path.join(to, entry));
  } else if (!from.endsWith('.ts')) {
    fs.copyFileSync(from, to);
  }
}

fs.mkdirSync(dst, { recursive: true });
for (const entry of fs.readdirSync(src)) {
  if (entry.endsWith('.html') || entry === 'locales' || entry === 'icons') copy(path.join(src, entry), path.join(dst, entry));
}
