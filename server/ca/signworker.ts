/**
 * A worker of the signing pool (signing.ts): rebuilds the active authority from
 * what the pool sends once per rotation, and runs signOrder over each chunk.
 * A refused CSR is an answer (its error), never a failure of the chunk.
 */
import { createPrivateKey } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { type CertificateIssuer, type CsrOptions, issuerFromKey, MeshidError, SerialSource, SpiffeId } from '../../spiffe/index.js';
import { P256 } from './p256.js';
import { type ChunkAnswer, type ChunkRequest, pack, type SigningAuthority, signOrder, unpack, type WireError } from './signing.js';

const { nativeP256 } = workerData as { nativeP256: boolean };
const p256 = nativeP256 ? P256.load() : undefined;
const csrOptions: CsrOptions = p256 ? { verifyP256: (point, message, signature) => p256.verify(point, message, signature) } : {};
const serialSource = new SerialSource();
const EMPTY = Buffer.alloc(0);
let issuer: { version: number; issuer: CertificateIssuer } | undefined;
parentPort!.postMessage({ hello: { nativeP256: !!p256 } });

function issuerOf(authority: SigningAuthority): CertificateIssuer {
  const key = createPrivateKey({ key: Buffer.from(authority.privateKeyPkcs8), format: 'der', type: 'pkcs8' });
  const base = issuerFromKey(Buffer.from(authority.subject), Buffer.from(authority.keyId), key);
  const sign = p256?.signerFor(key);
  return sign ? { ...base, sign } : base;
}

parentPort!.on('message', (request: ChunkRequest) => {
  if (request.authority) issuer = { version: request.authority.version, issuer: issuerOf(request.authority) };
  const csrs = unpack(request.csrs);
  const ders: Buffer[] = [];
  const serialHexes: string[] = [];
  const errors: Array<WireError | null> = csrs.map((csr, i) => {
    try {
      if (!issuer || issuer.version !== request.version) throw new Error(`no signing authority of version ${request.version} in this worker`);
      const leaf = signOrder(issuer.issuer, csrOptions, serialSource, {
        csr, spiffeId: SpiffeId.parse(request.spiffeIds[i]!), notBefore: new Date(request.notBefore[i]!),
        notAfter: new Date(request.notAfter[i]!), dnsNames: request.dnsNames[i]!,
      });
      ders.push(leaf.der);
      serialHexes.push(leaf.serialHex);
      return null;
    } catch (err) {
      ders.push(EMPTY);
      serialHexes.push('');
      if (err instanceof MeshidError) return { code: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) };
      return { code: 'internal', message: (err as Error).message };
    }
  });
  const answer: ChunkAnswer = { id: request.id, ders: pack(ders), serials: serialHexes, errors };
  parentPort!.postMessage(answer, [answer.ders.bytes.buffer]);
});
