/**
 * The X509-SVID signing path (CSR parse and signature check, certificate
 * encoding, signature) and the pool of worker threads that runs it on every
 * core, so the server's event loop stays free for its streams.
 *
 * `signOrder` is the path itself, used by the CA inline (no pool) and by each
 * worker. The pool splits a batch into contiguous chunks, a few per worker,
 * and queues them; a worker is handed the next chunk when it has fewer than
 * two, so a worker that runs slower (descheduled, collecting garbage) takes
 * fewer chunks instead of holding the batch back. The answers are put back in
 * the batch's order.
 */
import { availableParallelism } from 'node:os';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import type { Logger } from '../../common/log.js';
import {
  type CertificateIssuer, type CsrOptions, type ErrorCode, MeshidError, mintX509Svid, parseCsr, SerialSource,
  type SpiffeId, Unavailable,
} from '../../spiffe/index.js';

/** One X509-SVID to sign: everything decided but the key, which the CSR brings. */
export interface SvidOrder {
  readonly csr: Buffer;
  readonly spiffeId: SpiffeId;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly dnsNames: readonly string[];
}

export interface SignedLeaf { readonly der: Buffer; readonly serialHex: string }

/** Checks the CSR and signs its key into an X509-SVID: the whole signing path of one SVID. */
export function signOrder(issuer: CertificateIssuer, csrOptions: CsrOptions, serials: SerialSource, order: SvidOrder): SignedLeaf {
  const { publicKeySpki } = parseCsr(order.csr, csrOptions);
  const serial = serials.next();
  const der = mintX509Svid(issuer, {
    spiffeId: order.spiffeId, publicKeySpki, notBefore: order.notBefore, notAfter: order.notAfter,
    dnsNames: [...order.dnsNames], serial,
  });
  return { der, serialHex: serial.toString('hex') };
}

/**
 * The active X.509 authority as a worker can rebuild it. `version` changes with
 * every rotation; a worker imports the key once per version.
 */
export interface SigningAuthority {
  readonly version: number;
  readonly subject: Buffer;
  readonly keyId: Buffer;
  /** The signing key, PKCS#8 DER. */
  readonly privateKeyPkcs8: Buffer;
}

/**
 * Byte strings packed into one buffer of their own, which crosses to another
 * thread without a copy (transferred). Sending each Buffer alone would clone
 * the whole 8 KiB pool slab that a small Buffer is a view of.
 */
export interface Packed { bytes: Uint8Array<ArrayBuffer>; ends: number[] }

export function pack(items: readonly Uint8Array[]): Packed {
  const ends: number[] = [];
  let total = 0;
  for (const item of items) ends.push(total += item.byteLength);
  const bytes = new Uint8Array(total); // never from Buffer's pool: it is transferred away
  items.forEach((item, i) => bytes.set(item, i === 0 ? 0 : ends[i - 1]!));
  return { bytes, ends };
}

/** The byte strings again, as Buffers viewing the packed bytes (no copy). */
export function unpack(packed: Packed): Buffer[] {
  return packed.ends.map((end, i) => Buffer.from(packed.bytes.buffer, packed.bytes.byteOffset + (i === 0 ? 0 : packed.ends[i - 1]!), end - (i === 0 ? 0 : packed.ends[i - 1]!)));
}

export interface WireError { code: ErrorCode; message: string; field?: string }
/** A chunk of orders as it crosses to a worker (SPIFFE IDs as text: values do not cross threads). */
export interface ChunkRequest {
  id: number;
  version: number;
  authority?: SigningAuthority;
  csrs: Packed;
  spiffeIds: string[];
  notBefore: number[];
  notAfter: number[];
  dnsNames: Array<readonly string[]>;
}
/** The answer: for order i, an error (errors[i]) or the certificate (ders entry i, serials[i]). */
export interface ChunkAnswer { id: number; ders: Packed; serials: string[]; errors: Array<WireError | null> }
/** A worker's first message: what it loaded. */
export interface WorkerHello { hello: { nativeP256: boolean } }
export type SignOutcome = SignedLeaf | MeshidError;

export interface SigningPoolOptions {
  /** Worker threads; default: the machine's cores. */
  readonly workers?: number;
  readonly logger: Logger;
  /** Load the native P-256 addon in each worker (when built), as the CA does. */
  readonly nativeP256?: boolean;
  /** Smallest chunk a batch is split into (default 8): a small batch goes to one worker whole. */
  readonly minChunk?: number;
  /** Chunks a batch is split into per worker, at most (default 4): more balance the workers better, each costs a message. */
  readonly chunksPerWorker?: number;
  /** Starts a worker thread (default: new Worker); tests hand in one that keeps the threads it makes. */
  readonly createWorker?: (url: URL, options: WorkerOptions) => Worker;
}

/** A chunk of a batch, waiting for a worker or at one. */
interface PendingChunk {
  authority: SigningAuthority;
  orders: readonly SvidOrder[];
  resolve: (answer: ChunkAnswer) => void;
  reject: (err: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  /** The authority version this worker was sent. */
  version: number;
  /** Whether it signs with the native P-256 addon (undefined until it says). */
  nativeP256: boolean | undefined;
  /** Chunks sent and not answered yet, by request id. */
  pending: Map<number, PendingChunk>;
}

/** Chunks a worker holds at once: the one it signs, and the next, so it never waits for a message. */
const CHUNKS_AT_A_WORKER = 2;

const WORKER_URL = new URL('./signworker.js', import.meta.url);

function outcomesOf(answer: ChunkAnswer): SignOutcome[] {
  const ders = unpack(answer.ders);
  return answer.errors.map((e, i) => e ? new MeshidError(e.code, e.message, e.field) : { der: ders[i]!, serialHex: answer.serials[i]! });
}

/**
 * Worker threads that sign X509-SVIDs. start() spawns them; stop() ends them,
 * failing what they had not answered with Unavailable. A worker that dies is
 * replaced, and the chunks it held fail with Unavailable (the agent asks again).
 */
export class SigningPool {
  readonly size: number;
  readonly #opts: SigningPoolOptions;
  readonly #workers: PoolWorker[] = [];
  /** Chunks no worker has been handed yet, oldest first. */
  readonly #waiting: PendingChunk[] = [];
  #nextId = 1;
  #stopping = false;

  constructor(opts: SigningPoolOptions) {
    this.#opts = opts;
    this.size = Math.max(1, opts.workers ?? availableParallelism());
  }

  start(): void {
    this.#stopping = false;
    while (this.#workers.length < this.size) this.#workers.push(this.#spawn());
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    const workers = this.#workers.splice(0);
    const stopped = new Unavailable('the signing pool stopped');
    for (const chunk of this.#waiting.splice(0)) chunk.reject(stopped);
    for (const w of workers) this.#failPending(w, stopped);
    await Promise.all(workers.map((w) => w.worker.terminate()));
  }

  /** Signs every order with `authority`; the outcomes come in the orders' order. */
  async sign(authority: SigningAuthority, orders: readonly SvidOrder[]): Promise<SignOutcome[]> {
    if (this.#workers.length === 0) throw new Unavailable('the signing pool is not running');
    const minChunk = this.#opts.minChunk ?? 8;
    const most = this.#workers.length * (this.#opts.chunksPerWorker ?? 4);
    const chunks = Math.max(1, Math.min(most, Math.ceil(orders.length / minChunk)));
    const per = Math.ceil(orders.length / chunks);
    const parts: Array<Promise<SignOutcome[]>> = [];
    for (let start = 0; start < orders.length; start += per) {
      const chunk = orders.slice(start, start + per);
      parts.push(new Promise<ChunkAnswer>((resolve, reject) => this.#waiting.push({ authority, orders: chunk, resolve, reject })).then(outcomesOf));
    }
    this.#dispatch();
    return (await Promise.all(parts)).flat();
  }

  /** Workers that said they loaded the native P-256 addon. */
  get nativeWorkers(): number { return this.#workers.filter((w) => w.nativeP256).length; }

  /** Orders not answered yet: waiting for a worker, or at one. */
  get queued(): number {
    const count = (chunks: Iterable<PendingChunk>): number => { let n = 0; for (const c of chunks) n += c.orders.length; return n; };
    return count(this.#waiting) + this.#workers.reduce((n, w) => n + count(w.pending.values()), 0);
  }

  /** Hands waiting chunks, oldest first, to the workers that hold the fewest, up to CHUNKS_AT_A_WORKER each. */
  #dispatch(): void {
    while (this.#waiting.length > 0 && this.#workers.length > 0) {
      const w = this.#workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
      if (w.pending.size >= CHUNKS_AT_A_WORKER) return;
      this.#send(w, this.#waiting.shift()!);
    }
  }

  #send(w: PoolWorker, chunk: PendingChunk): void {
    const { authority, orders } = chunk;
    const request: ChunkRequest = {
      id: this.#nextId++, version: authority.version, csrs: pack(orders.map((o) => o.csr)),
      spiffeIds: orders.map((o) => o.spiffeId.toString()), notBefore: orders.map((o) => o.notBefore.getTime()),
      notAfter: orders.map((o) => o.notAfter.getTime()), dnsNames: orders.map((o) => o.dnsNames),
    };
    if (w.version !== authority.version) {
      request.authority = authority;
      w.version = authority.version;
    }
    if (w.pending.size === 0) w.worker.ref(); // while it holds work, the process waits for it
    w.pending.set(request.id, chunk);
    w.worker.postMessage(request, [request.csrs.bytes.buffer]);
  }

  #spawn(): PoolWorker {
    const create = this.#opts.createWorker ?? ((url: URL, options: WorkerOptions) => new Worker(url, options));
    const worker = create(WORKER_URL, { workerData: { nativeP256: this.#opts.nativeP256 ?? true } });
    const w: PoolWorker = { worker, version: -1, pending: new Map(), nativeP256: undefined };
    worker.on('message', (answer: ChunkAnswer | WorkerHello) => {
      if ('hello' in answer) {
        w.nativeP256 = answer.hello.nativeP256;
        return;
      }
      const chunk = w.pending.get(answer.id);
      if (!chunk) return;
      w.pending.delete(answer.id);
      if (w.pending.size === 0) worker.unref();
      chunk.resolve(answer);
      this.#dispatch();
    });
    worker.on('error', (err) => this.#opts.logger.error('signing worker failed', { err }));
    worker.on('exit', (code) => {
      const index = this.#workers.indexOf(w);
      this.#failPending(w, new Unavailable(`a signing worker exited (code ${code}); ask again`));
      if (index < 0 || this.#stopping) return;
      this.#opts.logger.warn('signing worker exited; starting another', { code });
      this.#workers[index] = this.#spawn();
      this.#dispatch();
    });
    worker.unref();
    return w;
  }

  #failPending(w: PoolWorker, err: Error): void {
    for (const chunk of w.pending.values()) chunk.reject(err);
    w.pending.clear();
  }
}
