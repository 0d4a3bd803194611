// Assembles the demo's static site: the page, its script and style, the Yjs bundle and the
// client package's own file (clients/js/src/octate-client.js), side by side in one directory
// for OCTATE_STATIC_DIR. The server refuses symlinks that leave its static directory, so the
// files are copied; the output is generated (under target/ by default, git-ignored).
//
//   node examples/browser/site.mjs [OUT_DIR]      # default: <repo>/target/browser-demo
//   OCTATE_STATIC_DIR=target/browser-demo cargo run -p octate-server
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const out = path.resolve(process.argv[2] ?? path.join(root, 'target', 'browser-demo'));

/** Source file → its path in the site. */
const FILES = [
  [path.join(here, 'index.html'), 'index.html'],
  [path.join(here, 'demo.js'), 'demo.js'],
  [path.join(here, 'style.css'), 'style.css'],
  [path.join(here, 'vendor', 'yjs.mjs'), path.join('vendor', 'yjs.mjs')],
  [path.join(root, 'clients', 'js', 'src', 'octate-client.js'), 'octate-client.js'],
];

for (const [from, to] of FILES) {
  const dest = path.join(out, to);
  mkdirSync(path.dirname(dest), { recursive: true });
  copyFileSync(from, dest);
}
console.log(`demo site in ${out}`);
