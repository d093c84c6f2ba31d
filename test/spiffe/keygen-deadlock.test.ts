import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

// Node 20's crypto deadlocks when a KeyObject from a key-generation job is read
// (asymmetricKeyDetails, export) while the collector destroys that job: with
// the keys generateKeyPair returned before issue 14, this loop hung within
// ~10,000 keys here, every run. It runs in a child because a hung main thread
// ignores everything but SIGKILL.
const KEYS = 30_000;
const BUDGET_MS = 150_000; // ~30 s on an idle core; the margin is for a loaded CI machine, not for the bug

t.test(`${KEYS} fresh keys read, signed with and exported in meshid's key and CSR code finish (no crypto deadlock)`, async (tt) => {
  const script = fileURLToPath(new URL('./keygen-loop.js', import.meta.url));
  const child = spawn(process.execPath, ['--max-semi-space-size=1', script, String(KEYS)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d; });
  child.stderr.on('data', (d: Buffer) => { err += d; });
  const started = Date.now();
  const timer = setTimeout(() => child.kill('SIGKILL'), BUDGET_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.once('exit', (c, s) => r([c, s])));
  clearTimeout(timer);
  tt.equal(signal, null, `the loop finished by itself (killed after ${Date.now() - started} ms means it hung)`);
  tt.equal(code, 0, `exit 0 (stderr: ${err.slice(0, 500)})`);
  tt.match(out, new RegExp(`done ${KEYS}`), 'it went through every key');
});
