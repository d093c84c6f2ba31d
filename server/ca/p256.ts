import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { packageRoot } from '../../api/assets.js';

interface P256Addon {
  verify(point: Buffer, message: Buffer, signature: Buffer): boolean;
  signer(scalar: Buffer): object;
  sign(handle: object, message: Buffer): Buffer;
}

/**
 * ECDSA P-256 / SHA-256 through the native addon in ./p256 (OpenSSL's EC_KEY
 * API, the one Node links): the two operations every X509-SVID costs, the
 * CSR's signature check and the certificate's signature, at about 2.5 times
 * node:crypto's rate for the check (no key import through OpenSSL 3's
 * decoders). Keys other than P-256 stay on node:crypto.
 */
export class P256 {
  private constructor(private readonly addon: P256Addon) {}

  /** The accelerator, or undefined when the addon was not built (`make native`): callers fall back to node:crypto. */
  static load(root: string = packageRoot): P256 | undefined {
    const path = join(root, 'server', 'ca', 'p256', 'build', 'Release', 'p256.node');
    if (!existsSync(path)) return undefined;
    return new P256(createRequire(import.meta.url)(path) as P256Addon);
  }

  /** SHA-256 + ECDSA verify of a DER signature against an uncompressed point (65 bytes); false for a point off the curve. */
  verify(point: Buffer, message: Buffer, signature: Buffer): boolean {
    return this.addon.verify(point, message, signature);
  }

  /** A signing function for a P-256 private key (DER ECDSA-Sig-Value over SHA-256), or undefined for other keys. */
  signerFor(privateKey: KeyObject): ((message: Buffer) => Buffer) | undefined {
    if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return undefined;
    const d = privateKey.export({ format: 'jwk' }).d;
    if (typeof d !== 'string') return undefined;
    const handle = this.addon.signer(Buffer.from(d, 'base64url'));
    return (message) => this.addon.sign(handle, message);
  }
}
