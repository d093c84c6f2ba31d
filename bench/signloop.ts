/**
 * A worker of bench:sign's scaling reference: it runs the signing path (CSR
 * parse and check, encoding, signature; the native P-256 addon when built) in a
 * loop of its own for `seconds`, with no pool and no messages, and posts its
 * rate. Several at once show how well the machine's cores scale this code.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { systemClock } from '../common/clock.js';
import { silentLogger } from '../common/log.js';
import { CertificateAuthority, MemoryCaJournal, MemoryKeyManager, P256 } from '../server/ca/index.js';
import { SpiffeId, TrustDomain } from '../spiffe/index.js';

const { csrs, seconds } = workerData as { csrs: Uint8Array[]; seconds: number };
const p256 = P256.load();
const ca = new CertificateAuthority({
  trustDomain: TrustDomain.parse('example.org'), keys: new MemoryKeyManager(), journal: new MemoryCaJournal(), clock: systemClock,
  logger: silentLogger, caTtlSeconds: 86400, x509SvidTtlSeconds: 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256',
  caSubject: [['O', 'bench']], ...(p256 ? { p256 } : {}),
});
await ca.start();
const id = SpiffeId.parse('spiffe://example.org/ns/default/sa/web');
const ders = csrs.map((c) => Buffer.from(c));
const signAll = (): void => { for (const csr of ders) ca.signX509Svid(id, ca.parseCsr(csr).publicKeySpki); };
signAll(); // warm: the code is optimised before the clock starts
let signed = 0;
const start = performance.now();
while (performance.now() - start < seconds * 1000) {
  signAll();
  signed += ders.length;
}
parentPort!.postMessage(signed / ((performance.now() - start) / 1000));
ca.stop();
