/** Where the CA's private keys live: files (mode 0600) in the data dir, or memory only. */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { FailedPrecondition, generateKeyPair, InvalidArgument, type KeyType, privateKeyPem } from '../../spiffe/index.js';

export interface KeyManager {
  /** Makes a new key under `id`, replacing any key of that id. */
  generate(id: string, type: KeyType): KeyObject;
  get(id: string): KeyObject | undefined;
  delete(id: string): void;
}

const ID_RE = /^[a-zA-Z0-9_.-]{1,128}$/;
function checkId(id: string): void {
  if (!ID_RE.test(id)) throw new InvalidArgument(`key id "${id}" must be 1-128 letters, digits, "_", "." or "-"`, 'key_id');
}

export class MemoryKeyManager implements KeyManager {
  private readonly keys = new Map<string, KeyObject>();
  generate(id: string, type: KeyType): KeyObject {
    checkId(id);
    const { privateKey } = generateKeyPair(type);
    this.keys.set(id, privateKey);
    return privateKey;
  }
  get(id: string): KeyObject | undefined { return this.keys.get(id); }
  delete(id: string): void { this.keys.delete(id); }
}

/** One PKCS#8 PEM file per key, written atomically (temp file + rename) with mode 0600. */
export class DiskKeyManager implements KeyManager {
  private readonly cache = new Map<string, KeyObject>();
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  }
  private path(id: string): string { checkId(id); return join(this.dir, `${id}.pem`); }

  generate(id: string, type: KeyType): KeyObject {
    const path = this.path(id);
    const { privateKey } = generateKeyPair(type);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, privateKeyPem(privateKey), { mode: 0o600 });
    renameSync(tmp, path);
    this.cache.set(id, privateKey);
    return privateKey;
  }

  get(id: string): KeyObject | undefined {
    const cached = this.cache.get(id);
    if (cached) return cached;
    const path = this.path(id);
    if (!existsSync(path)) return undefined;
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o077) throw new FailedPrecondition(`key file ${path} has mode ${mode.toString(8)}; it must not be readable by group or others (0600)`);
    let key: KeyObject;
    try { key = createPrivateKey(readFileSync(path)); } catch (err) {
      throw new FailedPrecondition(`key file ${path} does not hold a private key: ${(err as Error).message}`);
    }
    this.cache.set(id, key);
    return key;
  }

  delete(id: string): void {
    this.cache.delete(id);
    rmSync(this.path(id), { force: true });
  }
}
