// Removes compiled files in dist/ whose TypeScript source is gone. tsc builds
// incrementally and never deletes an output, so a removed module (or test) would
// otherwise stay importable (and runnable by scripts/test.sh) until dist/ is wiped.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dist = join(root, 'dist');
let removed = 0;
function walk(dir) {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) { walk(path); continue; }
    const m = /^(.*)\.(js|js\.map|d\.ts)$/.exec(entry.name);
    if (!m) continue;
    const source = join(root, relative(dist, dir), `${m[1]}.ts`);
    if (!existsSync(source)) { rmSync(path); removed++; }
  }
}
walk(dist);
if (removed > 0) console.error(`prune-dist: removed ${removed} compiled file(s) whose source is gone`);
