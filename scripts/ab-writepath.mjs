// The admin write path on SQLite (Registration.createEntry / deleteEntry, one per transaction), for an A/B
// between two builds: node scripts/ab-writepath.mjs <checkout with dist/> [n], run alternately on each.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
const root = process.argv[2];
const n = Number(process.argv[3] ?? 1000);
const { Datastore } = await import(join(root, 'dist/server/datastore/index.js'));
const { Registration } = await import(join(root, 'dist/server/registration/index.js'));
const { TrustDomain } = await import(join(root, 'dist/spiffe/id.js'));
const td = TrustDomain.parse('example.org');
const dir = mkdtempSync(join(tmpdir(), 'ab-'));
const store = await Datastore.open({ path: join(dir, 'x.sqlite3'), trustDomain: td });
const registration = new Registration({ datastore: store, trustDomain: td });
const parent = 'spiffe://example.org/meshid/agent/join_token/writepath';
const out = [];
for (let round = 0; round < 3; round++) {
  let t0 = performance.now();
  for (let i = 0; i < n; i++) { await registration.createEntry({ id: `wp-${round}-${i}`, spiffe_id: `spiffe://example.org/bench/wp/${round}/${i}`, parent_id: parent, selectors: ['unix:uid:1000'] }); await nextTurn(); }
  const create = n / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  for (let i = 0; i < n; i++) { await registration.deleteEntry(`wp-${round}-${i}`); await nextTurn(); }
  const del = n / ((performance.now() - t0) / 1000);
  out.push([Math.round(create), Math.round(del)]);
}
await store.close();
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ root, rounds: out }));
