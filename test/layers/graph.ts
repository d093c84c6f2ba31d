/**
 * The project's import graph, read from its TypeScript sources: for the layer
 * test and anyone who wants to look at it. Only relative imports are edges
 * (npm packages and node: builtins are outside the graph).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { packageRoot } from '../../api/assets.js';

export const SOURCE_FOLDERS = ['spiffe', 'common', 'api', 'bpf', 'server', 'agent', 'cli', 'deploy', 'bench', 'ui'] as const;

export interface Edge { from: string; to: string; typeOnly: boolean }

function walk(dir: string, out: string[]): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules' || name === 'build') continue;
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
}

const IMPORT_RE = /^\s*(import|export)\s+(type\s+)?([^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;
const DYNAMIC_RE = /import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Every relative import of the sources under `folders` (paths relative to the repository, .ts). */
export function importGraph(folders: readonly string[] = SOURCE_FOLDERS, root = packageRoot): Edge[] {
  const files: string[] = [];
  for (const f of folders) walk(join(root, f), files);
  const edges: Edge[] = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const from = relative(root, file).split(sep).join('/');
    const add = (spec: string, typeOnly: boolean) => {
      if (!spec.startsWith('.')) return;
      const to = relative(root, resolve(dirname(file), spec.replace(/\.js$/, '.ts'))).split(sep).join('/');
      edges.push({ from, to, typeOnly });
    };
    for (const m of text.matchAll(IMPORT_RE)) add(m[4]!, m[2] !== undefined || /^\s*import\s+type\b/.test(m[0]));
    for (const m of text.matchAll(DYNAMIC_RE)) add(m[1]!, false);
  }
  return edges;
}

export const topFolder = (path: string): string => path.split('/')[0]!;
