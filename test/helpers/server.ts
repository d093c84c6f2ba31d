/** Test harness: the server's real parts (SQLite file, CA, agent API over TLS on loopback) and an agent API client. */
import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock, systemClock, type Clock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink, silentLogger } from '../../common/log.js';
import { loadAgentProto } from '../../api/agentproto.js';
import { AgentApiServer, type AgentApiOptions } from '../../server/agentapi/server.js';
import { AttestorRegistry, JoinTokenAttestor } from '../../server/attestation/index.js';
import { CertificateAuthority, DatastoreCaJournal, MemoryKeyManager, P256, SigningPool } from '../../server/ca/index.js';
import { Datastore } from '../../server/datastore/index.js';
import { IdentityAllocator } from '../../server/identity/index.js';
import { ServerMetrics } from '../../server/metrics.js';
import { createCsr, generateKeyPair, type KeyPair, parseCertificate, pemFromDer, privateKeyPem, serverId, type SpiffeId, TrustDomain } from '../../spiffe/index.js';

export interface ServerParts {
  dir: string;
  td: TrustDomain;
  store: Datastore;
  ca: CertificateAuthority;
  api: AgentApiServer;
  port: number;
  metrics: ServerMetrics;
  logs: MemoryLogSink;
  clock: Clock;
  stop(): Promise<void>;
}

export async function startServerParts(opts: { clock?: Clock; signingWorkers?: number; caTtl?: number; x509Ttl?: number; agentTtl?: number; maxMessageBytes?: number; kubernetesOwnsNodes?: boolean; agentApi?: Partial<AgentApiOptions> } = {}): Promise<ServerParts> {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-srv-'));
  const td = TrustDomain.parse('example.org');
  const clock = opts.clock ?? systemClock;
  const store = await Datastore.open({ path: join(dir, 'ds.sqlite3'), trustDomain: td, now: () => clock.now().getTime() });
  const logs = new MemoryLogSink();
  const logger = new JsonLogger(logs, 'debug');
  const p256 = P256.load();
  const pool = opts.signingWorkers ? new SigningPool({ workers: opts.signingWorkers, logger, nativeP256: !!p256 }) : undefined;
  pool?.start();
  const ca = new CertificateAuthority({
    trustDomain: td, keys: new MemoryKeyManager(), journal: new DatastoreCaJournal(store), clock, logger,
    caTtlSeconds: opts.caTtl ?? 86400, x509SvidTtlSeconds: opts.x509Ttl ?? 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256',
    caSubject: [['O', 'meshid test']],
    onBundleChange: async (b) => { await store.setBundle(td, b.toJwks() as never); },
    // as meshid-server runs it: the native P-256 path when built
    ...(p256 ? { p256 } : {}),
    ...(pool ? { signingPool: pool } : {}),
  });
  await ca.start();
  const metrics = new ServerMetrics();
  const api = new AgentApiServer({
    bind: '127.0.0.1:0', ca, store, attestors: new AttestorRegistry([new JoinTokenAttestor(store, td)]), clock, logger, metrics,
    agentSvidTtlSeconds: opts.agentTtl ?? 3600, endpoints: new IdentityAllocator(store),
    ...(opts.maxMessageBytes ? { maxMessageBytes: opts.maxMessageBytes } : {}),
    ...(opts.kubernetesOwnsNodes ? { kubernetesOwnsNodes: true } : {}),
    ...opts.agentApi,
  });
  const port = await api.start();
  return {
    dir, td, store, ca, api, port, metrics, logs, clock,
    async stop() { await api.stop(); ca.stop(); await pool?.stop(); await store.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

export { FakeClock, silentLogger };

/** An agent API client; with `svid` it presents that certificate and key. */
export function agentClient(parts: Pick<ServerParts, 'port' | 'ca' | 'td'>, svid?: { chain: Buffer[]; key: KeyPair }): Client & Record<string, Function> {
  const { Client } = loadAgentProto();
  const rootPem = Buffer.from(parts.ca.bundle().x509Pem());
  const expected = serverId(parts.td).toString();
  const creds = credentials.createSsl(
    rootPem,
    svid ? Buffer.from(privateKeyPem(svid.key.privateKey)) : null,
    svid ? Buffer.from(svid.chain.map((d) => pemFromDer(d)).join('')) : null,
    {
      checkServerIdentity: (_host, cert) => {
        const uris = parseCertificate(cert.raw).uris;
        return uris.length === 1 && uris[0] === expected ? undefined : new Error(`server is ${uris.join(',')}, not ${expected}`);
      },
    },
  );
  return new Client(`127.0.0.1:${parts.port}`, creds, { 'grpc.ssl_target_name_override': 'meshid-server' }) as Client & Record<string, Function>;
}

export function call<Res>(client: Record<string, Function>, method: string, req: unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    client[method]!(req, new Metadata(), (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}

export function csrFor(key: KeyPair): Buffer { return createCsr(key.privateKey, key.publicKey); }

/** Attests with a fresh join token; returns the agent's SVID, key and a client that uses them. */
export async function attestAgent(parts: ServerParts, token = `tok-${Math.random().toString(36).slice(2)}-xyz`): Promise<{ agentId: SpiffeId; chain: Buffer[]; key: KeyPair; client: ReturnType<typeof agentClient>; token: string }> {
  await parts.store.createJoinToken({ token, expiresAt: Math.floor(parts.clock.now().getTime() / 1000) + 600 });
  const key = generateKeyPair();
  const anon = agentClient(parts);
  try {
    const res = await call<{ svid: { spiffe_id: string; cert_chain: Buffer[] } }>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(token) }, csr: csrFor(key) });
    const { SpiffeId } = await import('../../spiffe/index.js');
    return { agentId: SpiffeId.parse(res.svid.spiffe_id), chain: res.svid.cert_chain, key, client: agentClient(parts, { chain: res.svid.cert_chain, key }), token };
  } finally {
    anon.close();
  }
}
