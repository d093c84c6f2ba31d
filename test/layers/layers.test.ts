import t from 'tap';
import { importGraph, topFolder, type Edge } from './graph.js';

/**
 * The layers of meshid (../shared/DESIGN.md): what each top folder may import.
 * The SPIFFE core imports nothing of the project; the agent and the server
 * never import each other; the CLI talks to the server through api/ alone.
 */
const MAY_IMPORT: Record<string, readonly string[]> = {
  spiffe: [],
  common: ['spiffe'],
  api: ['spiffe', 'common'],
  bpf: ['api', 'common', 'spiffe'],
  server: ['api', 'common', 'spiffe'],
  agent: ['api', 'common', 'spiffe', 'bpf'],
  cli: ['api', 'common', 'spiffe', 'deploy'],
  ui: ['api'],
  deploy: ['agent', 'api', 'bpf', 'common', 'spiffe'],
};

const edges = importGraph(Object.keys(MAY_IMPORT));

t.test('the import graph was read', async (t) => {
  t.ok(edges.length > 500, `${edges.length} imports found`);
  t.ok(edges.some((e) => e.from === 'agent/agent.ts' && e.to === 'agent/sync/index.ts'), 'a known import is among them');
});

t.test('every import stays inside its layer', async (t) => {
  const bad = edges.filter((e) => {
    const from = topFolder(e.from), to = topFolder(e.to);
    return from !== to && !(MAY_IMPORT[from] ?? []).includes(to);
  }).map((e) => `${e.from} → ${e.to}`);
  t.same(bad, [], 'no import crosses a layer it may not');
});

/** Files that import each other, directly or around a circle (Tarjan's strongly connected components). */
export function cycles(es: readonly Edge[]): string[][] {
  const adj = new Map<string, string[]>();
  for (const e of es) (adj.get(e.from) ?? adj.set(e.from, []).get(e.from)!).push(e.to);
  const index = new Map<string, number>(), low = new Map<string, number>(), stack: string[] = [], on = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++; stack.push(v); on.add(v);
    for (const w of adj.get(v) ?? []) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do { w = stack.pop()!; on.delete(w); c.push(w); } while (w !== v);
      if (c.length > 1) out.push(c.sort());
    }
  };
  for (const v of adj.keys()) if (!index.has(v)) visit(v);
  return out;
}

t.test('no two files import each other, directly or around a circle', async (t) => {
  t.same(cycles(edges), []);
  t.same(cycles([{ from: 'a', to: 'b', typeOnly: true }, { from: 'b', to: 'c', typeOnly: false }, { from: 'c', to: 'a', typeOnly: false }]), [['a', 'b', 'c']], 'the check finds a circle');
});

/**
 * Doors: a folder is entered through its index.ts, which holds its exports; the
 * files behind it are its own business. api/ and common/ are the exception:
 * each of their files is a module of its own (a wire format, a tool), so that
 * a caller loads only what it uses.
 */
const OPEN_FOLDERS = new Set(['api', 'common']);
const dirOf = (p: string): string => p.split('/').slice(0, -1).join('/');

t.test('every folder is entered through its index.ts', async (t) => {
  const bad = edges.filter((e) => {
    const from = dirOf(e.from), to = dirOf(e.to);
    if (from === to || from.startsWith(`${to}/`) || OPEN_FOLDERS.has(to)) return false;
    return !e.to.endsWith('/index.ts');
  }).map((e) => `${e.from} → ${e.to}`);
  t.same(bad, [], 'no import goes around a folder\'s index.ts');
});

t.test('an index.ts holds exports, not an implementation', async (t) => {
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { packageRoot } = await import('../../api/assets.js');
  const indexes = [...new Set(edges.map((e) => e.to).filter((p) => p.endsWith('/index.ts')))];
  t.ok(indexes.length >= 20, `${indexes.length} index files`);
  const bad = indexes.filter((p) => {
    const code = readFileSync(join(packageRoot, p), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    // what is left once every export … from '…' statement is taken out must be blank
    return code.replace(/export\s+(type\s+)?(\*(\s+as\s+\w+)?|\{[^}]*\})\s+from\s+'[^']+';/g, '').trim() !== '';
  });
  t.same(bad, [], 'each is re-exports only');
});

t.test('the layer check can fail: an import of the server from the agent is caught', async (t) => {
  const from = 'agent/x.ts', to = 'server/y.ts';
  t.notOk((MAY_IMPORT[topFolder(from)] ?? []).includes(topFolder(to)));
});
