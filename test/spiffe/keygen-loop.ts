/**
 * Child process of keygen-deadlock.test.ts: meshid's own key and CSR code in
 * the loop that deadlocked Node 20's crypto (issue 14): batches of fresh keys,
 * each asked for its signature algorithm (its details), signed with and
 * exported, with garbage in between so the collector destroys key-generation
 * jobs while keys are being read. Prints "done N" when it gets through.
 */
import { createCsr, generateKeyPair, pkcs8Der, signatureAlgorithmFor } from '../../spiffe/index.js';

const total = Number(process.argv[2] ?? 30_000);
const batch = 200;
let garbage: string[][] = [];
for (let done = 0; done < total; done += batch) {
  const keys = Array.from({ length: batch }, () => generateKeyPair());
  for (const k of keys) {
    signatureAlgorithmFor(k.privateKey);
    createCsr(k.privateKey, k.publicKey);
    pkcs8Der(k.privateKey);
  }
  garbage.push(new Array(1000).fill('x'.repeat(10)));
  if (garbage.length > 50) garbage = [];
}
process.stdout.write(`done ${total}\n`);
