// Reads the nested TAP stream that `tap --reporter=tap` printed and prints
// "N passed, N failed[, N skipped]": one count per named test in each file
// (or per file, where a file failed before it ran any named test).
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2], 'utf8').split('\n');
const point = /^( *)(not ok|ok) \d+(?: - ([^#]*))?(?:#\s*(.*))?$/i;
let passed = 0, failed = 0, skipped = 0;
let childrenOfFile = [];
const failures = [];
for (const line of lines) {
  const m = point.exec(line);
  if (!m) continue;
  const depth = m[1].length / 4;
  const result = { ok: m[2] === 'ok', name: (m[3] ?? '').trim(), skip: /^(SKIP|TODO)\b/i.test(m[4] ?? '') };
  if (depth === 1) childrenOfFile.push(result);
  if (depth !== 0) continue;
  const counted = childrenOfFile.length > 0 ? childrenOfFile : [result];
  for (const r of counted) {
    if (r.skip) skipped++;
    else if (r.ok) passed++;
    else { failed++; failures.push(`${result.name} > ${r.name}`); }
  }
  childrenOfFile = [];
}
if (failures.length) console.log('\nfailed:\n  ' + failures.join('\n  '));
console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ''));
process.exit(failed > 0 || passed === 0 ? 1 : 0);
