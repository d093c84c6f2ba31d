import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generatePrivateKey, loadOrCreateKeyPair, publicKeyFromPrivate } from '../../../agent/wireguard/index.js';
import { MeshidError } from '../../../spiffe/index.js';

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-wgkey-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function thrown(fn: () => unknown): MeshidError {
  try {
    fn();
  } catch (err) {
    if (err instanceof MeshidError) return err;
    throw err;
  }
  throw new Error('expected a MeshidError, nothing was thrown');
}

const wgPubkey = (priv: string): string => execFileSync('wg', ['pubkey'], { input: priv + '\n', encoding: 'utf8' }).trim();

t.test('the key file is created once with mode 0600 and reused on the next start', async (t) => {
  const path = join(tempDir(t), 'sub', 'wg.key');
  const first = loadOrCreateKeyPair(path);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.equal(readFileSync(path, 'utf8').trim(), first.privateKey);
  const second = loadOrCreateKeyPair(path);
  t.same(second, first, 'the same key pair is read back');
});

t.test('the public key equals what `wg pubkey` derives, for our keys and for `wg genkey` keys', async (t) => {
  const path = join(tempDir(t), 'wg.key');
  const pair = loadOrCreateKeyPair(path);
  t.equal(pair.publicKey, wgPubkey(pair.privateKey));
  for (let i = 0; i < 5; i++) {
    const ours = generatePrivateKey();
    t.equal(publicKeyFromPrivate(ours), wgPubkey(ours));
    const theirs = execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim();
    t.equal(publicKeyFromPrivate(theirs), wgPubkey(theirs));
  }
});

t.test('a key written by `wg genkey` is accepted as the node key', async (t) => {
  const path = join(tempDir(t), 'wg.key');
  const genkey = execFileSync('wg', ['genkey'], { encoding: 'utf8' });
  writeFileSync(path, genkey, { mode: 0o600 });
  t.equal(loadOrCreateKeyPair(path).publicKey, wgPubkey(genkey.trim()));
});

t.test('generated private keys are clamped like `wg genkey` output', async (t) => {
  for (let i = 0; i < 20; i++) {
    const raw = Buffer.from(generatePrivateKey(), 'base64');
    t.equal(raw[0]! & 7, 0);
    t.equal(raw[31]! & 0xc0, 0x40);
  }
});

t.test('a key file readable by group or others is refused with an error naming the file', async (t) => {
  const path = join(tempDir(t), 'wg.key');
  loadOrCreateKeyPair(path);
  chmodSync(path, 0o644);
  const err = thrown(() => loadOrCreateKeyPair(path));
  t.equal(err.code, 'failed_precondition');
  t.match(err.message, path);
  t.match(err.message, '0644');
  chmodSync(path, 0o640);
  t.throws(() => loadOrCreateKeyPair(path), /must not be accessible by group or others/);
});

t.test('a key file with bad content is refused with an error naming the file, and left as it is', async (t) => {
  const dir = tempDir(t);
  const cases = {
    'not base64': 'this is not a key',
    'short key': Buffer.alloc(31, 7).toString('base64'),
    'long key': Buffer.alloc(33, 7).toString('base64'),
    'two keys': `${generatePrivateKey()}\n${generatePrivateKey()}`,
    'empty': '',
  };
  for (const [name, content] of Object.entries(cases)) {
    const path = join(dir, name.replace(' ', '-'));
    writeFileSync(path, content, { mode: 0o600 });
    const err = thrown(() => loadOrCreateKeyPair(path));
    t.equal(err.field, 'wireguard.keyFile', name);
    t.match(err.message, path, name);
    t.equal(readFileSync(path, 'utf8'), content, `${name}: file untouched`);
  }
});

t.test('publicKeyFromPrivate rejects text that is not a 32-byte base64 key', async (t) => {
  t.throws(() => publicKeyFromPrivate('abc'), { code: 'invalid_argument' });
});
