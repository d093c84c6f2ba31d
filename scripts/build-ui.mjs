// Bundles the web UI (ui/) into dist/ui: app.js (esbuild; cytoscape and the
// shared api/ code inside, nothing loaded from the network at run time),
// index.html and app.css beside it. The server serves dist/ui under /ui/.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const out = join(root, 'dist', 'ui');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(root, 'ui', 'app.ts')],
  bundle: true,
  format: 'iife',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outfile: join(out, 'app.js'),
  logLevel: 'warning',
  legalComments: 'linked',
});
for (const f of ['index.html', 'app.css']) copyFileSync(join(root, 'ui', f), join(out, f));
