/**
 * The signing pool (server/ca/signing.ts): X509-SVIDs signed on worker threads,
 * in the batch's order, with each request's own errors, across a CA rotation,
 * through a worker's death and the pool's stop; a slow worker takes fewer
 * chunks; and the event loop left free.
 */
import { X509Certificate } from 'node:crypto';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import t from 'tap';
import { FakeClock } from '../../../common/clock.js';
import { silentLogger } from '../../../common/log.js';
import { ACTIVATE_AT, CertificateAuthority, MemoryCaJournal, MemoryKeyManager, P256, SigningPool } from '../../../server/ca/index.js';
import { createCsr, generateKeyPair, MeshidError, SpiffeId, TrustDomain, verifyX509Svid } from '../../../spiffe/index.js';

const td = TrustDomain.parse('example.org');
const p256 = P256.load();

async function newCa(opts: { pool?: SigningPool; clock?: FakeClock } = {}): Promise<CertificateAuthority> {
  const ca = new CertificateAuthority({
    trustDomain: td, keys: new MemoryKeyManager(), journal: new MemoryCaJournal(), clock: opts.clock ?? new FakeClock(new Date('2026-12-01T00:00:00Z')),
    logger: silentLogger, caTtlSeconds: 86400, x509SvidTtlSeconds: 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256',
    caSubject: [['O', 'signing test']], rotationCheckSeconds: 3600,
    ...(p256 ? { p256 } : {}), ...(opts.pool ? { signingPool: opts.pool } : {}),
  });
  await ca.start();
  return ca;
}

function requests(n: number): Array<{ spiffeId: SpiffeId; csr: Buffer; spki: Buffer }> {
  return Array.from({ length: n }, (_, i) => {
    const key = generateKeyPair();
    return {
      spiffeId: SpiffeId.parse(`spiffe://example.org/ns/n${i}/sa/s${i}`),
      csr: createCsr(key.privateKey, key.publicKey),
      spki: key.publicKey.export({ format: 'der', type: 'spki' }),
    };
  });
}

/** A started pool, and the worker threads it made (kept here, so a test can end one as a crash would). */
function startedPool(workers: number, threads: Worker[] = []): SigningPool {
  const pool = new SigningPool({
    workers, logger: silentLogger, nativeP256: !!p256,
    createWorker: (url: URL, options: WorkerOptions) => { const w = new Worker(url, options); threads.push(w); return w; },
  });
  pool.start();
  return pool;
}

t.test('a batch signed on 2 workers comes back in its order: each SVID names its own ID and key and verifies under the bundle', async (t) => {
  const pool = startedPool(2);
  const ca = await newCa({ pool });
  t.teardown(async () => { ca.stop(); await pool.stop(); });
  const reqs = requests(40);
  const out = await ca.signX509Svids(reqs.map((r) => ({ spiffeId: r.spiffeId, csr: r.csr, dnsNames: ['web.example'] })));
  t.equal(out.length, 40);
  const serials = new Set<string>();
  out.forEach((svid, i) => {
    if (svid instanceof MeshidError) throw svid;
    const verified = verifyX509Svid(svid.certChainDer, () => ca.bundle().x509Authorities, new Date('2026-12-01T00:00:01Z'));
    t.equal(verified.spiffeId.toString(), reqs[i]!.spiffeId.toString(), `item ${i} is its own ID`);
    const leaf = new X509Certificate(svid.certChainDer[0]!);
    t.ok(leaf.publicKey.export({ format: 'der', type: 'spki' }).equals(reqs[i]!.spki), `item ${i} certifies its own key`);
    t.match(leaf.subjectAltName, /DNS:web\.example/);
    serials.add(svid.serialHex);
  });
  t.equal(serials.size, 40, 'every serial differs, across the workers');
  if (p256) t.equal(pool.nativeWorkers, 2, 'both workers loaded the native P-256 addon');
});

t.test('a bad CSR or an ID of another trust domain fails its own item only, with the error the event-loop path gives', async (t) => {
  const pool = startedPool(2);
  const ca = await newCa({ pool });
  const inline = await newCa();
  t.teardown(async () => { ca.stop(); inline.stop(); await pool.stop(); });
  const reqs = requests(20).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr }));
  const truncated = reqs[5]!.csr.subarray(0, 40);
  reqs[5] = { ...reqs[5]!, csr: truncated };
  const otherKey = generateKeyPair();
  const forged = Buffer.from(reqs[13]!.csr);
  forged[forged.length - 5] ^= 0xff; // the signature no longer matches
  reqs[13] = { ...reqs[13]!, csr: forged };
  reqs[17] = { spiffeId: SpiffeId.parse('spiffe://other.org/ns/a/sa/b'), csr: createCsr(otherKey.privateKey, otherKey.publicKey) };
  const pooled = await ca.signX509Svids(reqs);
  const local = await inline.signX509Svids(reqs);
  for (const i of [5, 13, 17]) {
    const err = pooled[i];
    t.ok(err instanceof MeshidError, `item ${i} failed`);
    t.same({ code: (err as MeshidError).code, message: (err as MeshidError).message, field: (err as MeshidError).field },
      { code: (local[i] as MeshidError).code, message: (local[i] as MeshidError).message, field: (local[i] as MeshidError).field },
      `item ${i}: the same error as on the event loop`);
  }
  t.equal((pooled[17] as MeshidError).field, 'spiffe_id');
  t.equal(pooled.filter((o) => !(o instanceof MeshidError)).length, 17, 'the 17 others are signed');
});

t.test('after a rotation the workers sign with the new authority', async (t) => {
  const clock = new FakeClock(new Date('2026-12-01T00:00:00Z'));
  const pool = startedPool(2);
  const ca = await newCa({ pool, clock });
  t.teardown(async () => { ca.stop(); await pool.stop(); });
  const first = await ca.signX509Svids(requests(4).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr })));
  const issuerBefore = new X509Certificate((first[0] as { certChainDer: Buffer[] }).certChainDer[0]!).issuer;
  const activeBefore = ca.listSlots().find((s) => s.kind === 'x509' && s.state === 'active')!.id;
  clock.advance(86400 * 1000 * ACTIVATE_AT + 1000);
  await ca.rotate();
  const activeAfter = ca.listSlots().find((s) => s.kind === 'x509' && s.state === 'active')!;
  t.not(activeAfter.id, activeBefore, 'a new authority is active');
  const after = await ca.signX509Svids(requests(4).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr })));
  const activeCert = new X509Certificate(Buffer.from(activeAfter.certDer!, 'base64'));
  for (const svid of after) {
    const leaf = new X509Certificate((svid as { certChainDer: Buffer[] }).certChainDer[0]!);
    t.ok(leaf.verify(activeCert.publicKey), 'signed by the new authority\'s key');
    t.notOk(leaf.verify(new X509Certificate(Buffer.from(ca.listSlots().find((s) => s.id === activeBefore)!.certDer!, 'base64')).publicKey), 'not by the old one');
  }
  t.equal(issuerBefore, activeCert.subject, 'both authorities have the configured subject');
});

t.test('a worker that runs slower takes fewer chunks of a batch: the others are handed the next ones as they finish', async (t) => {
  const threads: Worker[] = [];
  const slow = new URL('../../helpers/slowsignworker.js', import.meta.url);
  const pool = new SigningPool({
    workers: 2, logger: silentLogger, nativeP256: !!p256,
    // the first thread stalls 150 ms before each chunk; the second signs at full speed
    createWorker: (url: URL, options: WorkerOptions) => {
      const w = threads.length === 0 ? new Worker(slow, { ...options, workerData: { ...options.workerData, stallMs: 150 } }) : new Worker(url, options);
      threads.push(w);
      return w;
    },
  });
  pool.start();
  const ca = await newCa({ pool });
  t.teardown(async () => { ca.stop(); await pool.stop(); });
  const answered = [0, 0];
  threads.forEach((w, i) => w.on('message', (m: object) => { if (!('hello' in m)) answered[i]!++; }));
  const reqs = requests(400);
  const out = await ca.signX509Svids(reqs.map((r) => ({ spiffeId: r.spiffeId, csr: r.csr })));
  t.equal(out.filter((o) => !(o instanceof MeshidError)).length, 400, 'the whole batch is signed');
  out.forEach((svid, i) => {
    const leaf = new X509Certificate((svid as { certChainDer: Buffer[] }).certChainDer[0]!);
    if (!leaf.publicKey.export({ format: 'der', type: 'spki' }).equals(reqs[i]!.spki)) t.fail(`item ${i} is out of order`);
  });
  t.equal(answered[0]! + answered[1]!, 8, 'in 8 chunks (4 per worker at most)');
  t.ok(answered[0]! <= 3 && answered[0]! < answered[1]!, `the slow worker signed ${answered[0]} of them, the other ${answered[1]} (a fixed split gives each 4)`);
});

t.test('a worker that dies fails what it held with Unavailable, is replaced, and the next batch is signed', async (t) => {
  const threads: Worker[] = [];
  const pool = startedPool(1, threads);
  const ca = await newCa({ pool });
  t.teardown(async () => { ca.stop(); await pool.stop(); });
  const reqs = requests(200).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr }));
  const doomed = t.rejects(ca.signX509Svids(reqs), { code: 'unavailable' }, 'the batch it held fails as unavailable (the agent asks again)');
  await threads[0]!.terminate();
  await doomed;
  const next = await ca.signX509Svids(reqs.slice(0, 10));
  t.equal(next.filter((o) => !(o instanceof MeshidError)).length, 10, 'a new worker signs the next batch');
  t.equal(threads.length, 2, 'made by a second thread');
});

t.test('stop() fails what is pending with Unavailable and ends every worker; sign() after it is refused', async (t) => {
  const threads: Worker[] = [];
  const pool = startedPool(2, threads);
  const ca = await newCa({ pool });
  t.teardown(() => ca.stop());
  const pending = t.rejects(ca.signX509Svids(requests(300).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr }))), { code: 'unavailable', message: /stopped/ });
  await pool.stop();
  await pending;
  t.equal(pool.queued, 0);
  t.same(threads.map((w) => w.threadId), [-1, -1], 'both threads ended');
  await t.rejects(ca.signX509Svids(requests(1).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr }))), { code: 'unavailable', message: /not running/ });
});

t.test('while the workers sign a large batch the event loop keeps turning; signed inline it does not', async (t) => {
  const pool = startedPool(2);
  const pooled = await newCa({ pool });
  const inline = await newCa();
  t.teardown(async () => { pooled.stop(); inline.stop(); await pool.stop(); });
  const reqs = requests(1500).map((r) => ({ spiffeId: r.spiffeId, csr: r.csr }));
  const turnsDuring = async (ca: CertificateAuthority): Promise<number> => {
    let turns = 0;
    const timer = setInterval(() => { turns++; }, 1);
    const signing = ca.signX509Svids(reqs);
    await signing;
    clearInterval(timer);
    return turns;
  };
  t.equal(await turnsDuring(inline), 0, 'inline: no timer runs until the whole batch is signed');
  t.ok(await turnsDuring(pooled) > 0, 'on the pool: timers run while it signs');
});
