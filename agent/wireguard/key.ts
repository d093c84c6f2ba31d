import { createPrivateKey, createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { mkdirSync, openSync, closeSync, readFileSync, fstatSync, writeSync, constants as fsConstants } from 'node:fs';
import { dirname } from 'node:path';
import { FailedPrecondition, InvalidArgument } from '../../spiffe/index.js';

/** A node's WireGuard key pair, both halves in the base64 form that `wg genkey`/`wg pubkey` print. */
export interface WireGuardKeyPair {
  readonly privateKey: string;
  readonly publicKey: string;
}

const KEY_BYTES = 32;
// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): node:crypto imports keys in this form.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** Decodes a base64 WireGuard key (private or public); null when it is not 32 bytes of canonical base64. */
export function decodeWireGuardKey(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) return null;
  const raw = Buffer.from(text, 'base64');
  if (raw.length !== KEY_BYTES || raw.toString('base64') !== text) return null;
  return raw;
}

/** The public key of a base64 private key, computed as `wg pubkey` does (X25519 with the base point). */
export function publicKeyFromPrivate(privateKey: string): string {
  const raw = decodeWireGuardKey(privateKey);
  if (raw === null) throw new InvalidArgument('a WireGuard private key is 32 bytes in base64', 'privateKey');
  const keyObject = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const jwk = createPublicKey(keyObject).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('node:crypto returned an X25519 public key without x');
  return Buffer.from(jwk.x, 'base64url').toString('base64');
}

/** A fresh private key, clamped as `wg genkey` clamps it so the stored form is the same. */
export function generatePrivateKey(): string {
  // JWK straight from the key-generation job: exporting a job's KeyObject can deadlock Node 20 (spiffe/keys.ts)
  const jwk = generateKeyPairSync('x25519', { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } } as never) as unknown as { privateKey: JsonWebKey };
  if (typeof jwk.privateKey.d !== 'string') throw new Error('node:crypto returned an X25519 private key without d');
  const raw = Buffer.from(jwk.privateKey.d, 'base64url');
  raw[0]! &= 248;
  raw[31] = (raw[31]! & 127) | 64;
  return raw.toString('base64');
}

/**
 * Loads the node's private key from `path`, creating it (mode 0600) on first use.
 * A key file that group or others can read or write, or whose content is not one
 * base64 key, is refused: the agent must not run with a key it cannot trust.
 */
export function loadOrCreateKeyPair(path: string): WireGuardKeyPair {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new FailedPrecondition(`WireGuard key file ${path}: ${(err as Error).message}`, 'wireguard.keyFile');
    }
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const privateKey = generatePrivateKey();
    try {
      // O_EXCL: when two starts race, exactly one writes and the other reads its key.
      fd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
      try { writeSync(fd, privateKey + '\n'); } finally { closeSync(fd); }
    } catch (createErr) {
      if ((createErr as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new FailedPrecondition(`WireGuard key file ${path}: cannot create: ${(createErr as Error).message}`, 'wireguard.keyFile');
      }
    }
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) {
      throw new FailedPrecondition(`WireGuard key file ${path} is not a regular file`, 'wireguard.keyFile');
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new FailedPrecondition(
        `WireGuard key file ${path} has mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}; ` +
        'it must not be accessible by group or others (chmod 600)', 'wireguard.keyFile');
    }
    const content = readFileSync(fd, 'utf8').trim();
    if (decodeWireGuardKey(content) === null) {
      throw new FailedPrecondition(
        `WireGuard key file ${path} does not hold one base64 32-byte private key (as \`wg genkey\` writes)`, 'wireguard.keyFile');
    }
    return { privateKey: content, publicKey: publicKeyFromPrivate(content) };
  } finally {
    closeSync(fd);
  }
}
