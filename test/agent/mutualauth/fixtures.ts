/**
 * Two agents' worth of mutual auth in one process: a CA minted with the core,
 * agent and workload SVIDs, an AgentState per agent built through apply() as
 * Sync would, an in-memory auth map each, and services on 127.0.0.1 ports.
 */
import type { KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import type { EndpointMsg, IdentityMsg, NodeMsg, SyncUpdateMsg } from '../../../api/agentproto.js';
import { systemClock, type Clock } from '../../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../../common/log.js';
import { MemoryAuthMap, MutualAuth, type MutualAuthOptions } from '../../../agent/mutualauth/index.js';
import { AgentState } from '../../../agent/sync/state.js';
import {
  decodeAuthenticate, encodeProof, pairsOf, proofInput, signProof,
  type AuthenticateMsg, type DecodedAuthenticate, type ResultMsg, type WirePair,
} from '../../../agent/mutualauth/protocol.js';
import { acceptSession, connectSession, SecureContextCache, type Session } from '../../../agent/mutualauth/session.js';
import { Bundle, type CertificateIssuer, encodeName, generateKeyPair, issuerFromKey, keyIdentifier, mintCertificate, mintX509Svid, SpiffeId, spkiDer, TrustDomain } from '../../../spiffe/index.js';

export const MIN = 60_000;
export const HOUR = 3_600_000;
export const TD = 'example.org';

export interface Ca { td: TrustDomain; issuer: CertificateIssuer; der: Buffer; notAfter: Date }

export function makeCa(td = TD, opts: { notAfter?: Date; now?: Date } = {}): Ca {
  const now = opts.now ?? new Date();
  const keys = generateKeyPair();
  const spki = spkiDer(keys.publicKey);
  const subject = encodeName([['O', 'meshid mutualauth test'], ['CN', `${td} ${process.pid} ${Math.random()}`]]);
  const issuer = issuerFromKey(subject, keyIdentifier(spki), keys.privateKey);
  const notAfter = opts.notAfter ?? new Date(now.getTime() + 24 * HOUR);
  const der = mintCertificate({ subject, notBefore: new Date(now.getTime() - HOUR), notAfter, publicKeySpki: spki, ca: {}, uris: [`spiffe://${td}`] }, issuer);
  return { td: TrustDomain.parse(td), issuer, der, notAfter };
}

export interface Svid { id: SpiffeId; chain: Buffer[]; key: KeyObject; notAfter: Date }

export function mintSvid(ca: Ca, id: string, opts: { notBefore?: Date; notAfter?: Date; now?: Date } = {}): Svid {
  const now = opts.now ?? new Date();
  const keys = generateKeyPair();
  const notAfter = opts.notAfter ?? new Date(now.getTime() + HOUR);
  const spiffeId = SpiffeId.parse(id);
  const der = mintX509Svid(ca.issuer, { spiffeId, publicKeySpki: spkiDer(keys.publicKey), notBefore: opts.notBefore ?? new Date(now.getTime() - MIN), notAfter });
  return { id: spiffeId, chain: [der], key: keys.privateKey, notAfter };
}

export const agentIdOf = (name: string): string => `spiffe://${TD}/meshid/agent/join_token/${name}-${process.pid}`;
export const saId = (ns: string, sa: string): string => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

/** The registry both agents see: nodes 1 (A), 2 (B) and 3 (C, registered but not running). */
export const IDENTITIES: IdentityMsg[] = [
  { id: 101, labels: {}, namespace: 'a', service_account: 'web', spiffe_id: saId('a', 'web') },
  { id: 102, labels: {}, namespace: 'a', service_account: 'api', spiffe_id: saId('a', 'api') },
  { id: 201, labels: {}, namespace: 'b', service_account: 'db', spiffe_id: saId('b', 'db') },
  { id: 202, labels: {}, namespace: 'b', service_account: 'cache', spiffe_id: saId('b', 'cache') },
  { id: 301, labels: {}, namespace: 'c', service_account: 'x', spiffe_id: saId('c', 'x') },
];
const ep = (ip: string, identity: number, node_id: number): EndpointMsg => ({ ip, identity, node_id, namespace: 'n', name: ip, labels: {} });
export const ENDPOINTS: EndpointMsg[] = [
  ep('10.0.1.1', 101, 1), ep('10.0.1.2', 102, 1), ep('10.0.2.1', 201, 2), ep('10.0.2.2', 202, 2), ep('10.0.3.1', 301, 3),
];
export function nodes(): NodeMsg[] {
  return [1, 2, 3].map((id) => ({
    id, name: `node-${'abc'[id - 1]}`, address: '127.0.0.1', wireguard_public_key: '', pod_cidr: `10.0.${id}.0/24`,
    agent_id: agentIdOf(`node-${'abc'[id - 1]}`),
  }));
}

export function snapshot(localNodeId: number, ca: Ca, extra: Partial<SyncUpdateMsg> = {}): SyncUpdateMsg {
  const bundle = new Bundle(ca.td, [ca.der], []);
  return {
    revision: 1, snapshot: true, entries: [], removed_entries: [],
    bundles: [{ trust_domain: ca.td.name, document: Buffer.from(bundle.toJson()) }],
    identities: IDENTITIES, removed_identities: [], endpoints: ENDPOINTS, removed_endpoints: [], nodes: nodes(), removed_nodes: [],
    policies: [], removed_policies: [], local_node_id: localNodeId, ...extra,
  };
}

export function delta(extra: Partial<SyncUpdateMsg>): SyncUpdateMsg {
  return {
    revision: 2, snapshot: false, entries: [], removed_entries: [], bundles: [], identities: [], removed_identities: [],
    endpoints: [], removed_endpoints: [], nodes: [], removed_nodes: [], policies: [], removed_policies: [], local_node_id: 0, ...extra,
  };
}

/** One agent: its state, SVIDs (replaceable by the test), auth map, logs and service. */
export interface Agent {
  nodeId: number;
  state: AgentState;
  agent: Svid;
  workloads: Map<string, Svid>;
  map: MemoryAuthMap;
  logs: MemoryLogSink;
  auth: MutualAuth;
}

export interface Cluster { ca: Ca; a: Agent; b: Agent; ports: Map<number, number> }

export interface ClusterOptions {
  clock?: Clock;
  ca?: Ca;
  options?: Partial<MutualAuthOptions>;
  /** Options for one agent only (node 1: A, node 2: B), after `options`. */
  optionsFor?: (nodeId: number) => Partial<MutualAuthOptions>;
  /** Change an agent before it starts (e.g. give it another agent SVID). */
  prepare?: (agent: Omit<Agent, 'auth'>, ca: Ca) => void;
}

/** Agents A (node 1: identities 101, 102) and B (node 2: 201, 202), started; stopped in teardown. */
export async function cluster(t: { teardown(fn: () => unknown): void }, opts: ClusterOptions = {}): Promise<Cluster> {
  const clock = opts.clock ?? systemClock;
  const now = clock.now();
  const ca = opts.ca ?? makeCa(TD, { now });
  const ports = new Map<number, number>();
  const make = (nodeId: number, name: string, hosted: number[]): Agent => {
    const state = new AgentState(ca.td);
    state.apply(snapshot(nodeId, ca));
    const workloads = new Map<string, Svid>();
    for (const id of hosted) {
      const sid = IDENTITIES.find((i) => i.id === id)!.spiffe_id;
      workloads.set(sid, mintSvid(ca, sid, { now }));
    }
    const base = { nodeId, state, agent: mintSvid(ca, agentIdOf(name), { now, notAfter: new Date(now.getTime() + 2 * HOUR) }), workloads, map: new MemoryAuthMap(), logs: new MemoryLogSink() };
    opts.prepare?.(base, ca);
    const agent = base as Agent;
    agent.auth = new MutualAuth({
      state, clock, logger: new JsonLogger(base.logs, 'debug'), authMap: base.map,
      agentSvid: () => agent.agent, workloadSvid: (id) => agent.workloads.get(id.toString()),
      listen: { host: '127.0.0.1', port: 0 },
      peerAddress: (n) => ({ host: '127.0.0.1', port: ports.get(n.id) ?? 1 }),
      backoffMs: 20, maxAttempts: 2, reauthTickMs: 3_600_000,
      ...opts.options,
      ...opts.optionsFor?.(nodeId),
    });
    return agent;
  };
  const a = make(1, 'node-a', [101, 102]);
  const b = make(2, 'node-b', [201, 202]);
  t.teardown(() => Promise.all([a.auth.stop(), b.auth.stop()]));
  // B first: A's reconcile() at start may need to reach it.
  await b.auth.start();
  ports.set(2, b.auth.port);
  await a.auth.start();
  ports.set(1, a.auth.port);
  return { ca, a, b, ports };
}

/** A client that speaks the protocol by hand, with any agent SVID: for sending what a real agent never would. */
export interface RawClient { session: Session; request(msg: unknown): Promise<unknown>; close(): Promise<void> }

export async function rawClient(port: number, agent: Svid): Promise<RawClient> {
  const session = await connectSession({ host: '127.0.0.1', port, context: new SecureContextCache().get(agent), timeoutMs: 5000 });
  const inbox: unknown[] = [];
  const waiters: ((m: unknown) => void)[] = [];
  session.listen((m) => { const w = waiters.shift(); if (w) w(m); else inbox.push(m); }, () => {});
  void session.closed.then(() => { for (const w of waiters.splice(0)) w({ type: 'closed' }); });
  return {
    session,
    request(msg: unknown): Promise<unknown> {
      session.send(msg);
      if (inbox.length > 0) return Promise.resolve(inbox.shift());
      if (!session.isOpen) return Promise.resolve({ type: 'closed' });
      return new Promise((resolve) => waiters.push(resolve));
    },
    close: () => session.close(),
  };
}

/** A server that speaks the protocol by hand: `answer` builds the reply to each batch. */
export async function rawServer(
  t: { teardown(fn: () => unknown): void }, agent: Svid, answer: (req: DecodedAuthenticate, session: Session) => unknown,
): Promise<number> {
  const sessions = new Set<Session>();
  const server: Server = createServer((raw) => {
    acceptSession(raw, new SecureContextCache().get(agent), 5000).then((s) => {
      sessions.add(s);
      s.listen((m) => s.send(answer(decodeAuthenticate(m), s)), () => {});
    }, () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    await Promise.all([...sessions].map((s) => s.close(undefined, 100)));
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as { port: number }).port;
}

/** The auth entries of a map as sortable strings, e.g. "101/201/2". */
export const entryKeys = (m: MemoryAuthMap): string[] => m.entries().map((e) => `${e.pair.localIdentity}/${e.pair.remoteIdentity}/${e.pair.remoteNodeId}`).sort();

/** An authenticate message signed by hand: `signers` gives the SVID that signs for each client identity. */
export function clientMessage(ekm: Buffer, batch: number, pairs: WirePair[], signers: Map<number, Svid>): AuthenticateMsg {
  return {
    type: 'authenticate', batch, pairs,
    proofs: [...signers].map(([id, svid]) => encodeProof(id, svid.chain, signProof(svid.key, proofInput(ekm, 'client', batch, id, pairsOf('client', id, pairs))))),
  };
}

/** A result message signed by hand, accepting every pair: `signers` gives the SVID that signs for each server identity. */
export function serverResult(ekm: Buffer, batch: number, pairs: WirePair[], signers: Map<number, Svid>): ResultMsg {
  return {
    type: 'result', batch, verdicts: pairs.map(() => 0 as const),
    proofs: [...signers].map(([id, svid]) => encodeProof(id, svid.chain, signProof(svid.key, proofInput(ekm, 'server', batch, id, pairsOf('server', id, pairs))))),
  };
}

/** Waits until `cond` holds (polling), or throws after `ms`. */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
