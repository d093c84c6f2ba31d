/**
 * The agent's own identity: attest the node once, keep the agent SVID and
 * key on disk (0600) so a restart reuses them while valid, renew at half
 * life, attest again when the server has evicted the agent, and stop when it
 * has banned it.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import type { AttestAgentResponseMsg, RenewAgentResponseMsg } from '../../api/agentproto.js';
import { Bundle, createCsr, derFromPem, FailedPrecondition, generateKeyPair, pemFromDer, PermissionDenied, privateKeyPem, SpiffeId, type TrustDomain, verifyX509Svid } from '../../spiffe/index.js';
import type { ServerConnection } from '../serverapi/index.js';

/** Produces the attestation data for one node attestation type (join_token, k8s_psat). */
export interface NodeAttestorPlugin {
  readonly type: string;
  payload(): Promise<Buffer>;
}

export class JoinTokenPlugin implements NodeAttestorPlugin {
  readonly type = 'join_token';
  constructor(private readonly token: string) {}
  async payload(): Promise<Buffer> { return Buffer.from(this.token); }
}

export interface AgentSvid { spiffeId: SpiffeId; chain: Buffer[]; key: KeyObject; expiresAt: Date; issuedAt: Date }

export interface AgentIdentityOptions {
  trustDomain: TrustDomain;
  dataDir: string;
  connection: ServerConnection;
  /** The bootstrap trust bundle; the latest one from the server replaces it on disk. */
  bootstrapBundle: Bundle;
  attestor: NodeAttestorPlugin | undefined;
  clock: Clock;
  logger: Logger;
  /** Called after every new SVID (attestation or renewal). */
  onSvid?: (svid: AgentSvid) => void;
}

/** Thrown when the server has banned this agent: the agent must stop. */
export class AgentBanned extends PermissionDenied {}

export class AgentIdentity {
  private svid: AgentSvid | undefined;
  private bundle: Bundle;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: AgentIdentityOptions) {
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    this.bundle = this.loadStoredBundle() ?? opts.bootstrapBundle;
  }

  current(): AgentSvid {
    if (!this.svid) throw new FailedPrecondition('the agent has no SVID yet');
    return this.svid;
  }
  trustBundle(): Bundle { return this.bundle; }

  /** The newest bundle of the agent's trust domain, from Sync; kept on disk for the next start. */
  updateBundle(b: Bundle): void {
    if (b.toJson() === this.bundle.toJson()) return;
    this.bundle = b;
    this.writeFile('bundle.json', b.toJson(), 0o644);
    this.opts.connection.configure(b.x509Authorities, this.svid && { chain: this.svid.chain, key: this.svid.key });
  }

  /** Reuses a stored, still valid SVID or attests; then keeps it renewed. */
  async start(): Promise<AgentSvid> {
    const stored = this.loadStoredSvid();
    if (stored) {
      this.opts.logger.info('reusing stored agent SVID', { spiffe_id: stored.spiffeId.toString(), expires_at: stored.expiresAt.toISOString() });
      this.install(stored, false);
    } else {
      await this.attest();
    }
    this.scheduleRenewal();
    return this.current();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Node attestation with the configured plugin; a ban is final. */
  async attest(): Promise<void> {
    const plugin = this.opts.attestor;
    if (!plugin) throw new FailedPrecondition('no stored agent SVID and no node attestation configured (give --join-token)', 'join_token');
    this.opts.connection.configure(this.bundle.x509Authorities, undefined);
    const key = generateKeyPair();
    let res: AttestAgentResponseMsg;
    try {
      // not repeated on another server by the connection: a server that got the call but not
      // its answer out may have spent a one-time token (the caller's retry picks the next server)
      res = await this.opts.connection.unary<AttestAgentResponseMsg>('AttestAgent', {
        attestation: { type: plugin.type, payload: await plugin.payload() }, csr: createCsr(key.privateKey, key.publicKey),
      }, 15_000, { failover: false });
    } catch (err) {
      const e = err as ServiceError;
      if (e.code === status.PERMISSION_DENIED && /banned/.test(e.details ?? '')) throw new AgentBanned(`the server has banned this agent: ${e.details}`);
      throw err;
    }
    const bundle = Bundle.fromJwks(this.opts.trustDomain, res.bundle.toString('utf8'));
    this.updateBundleNoReconnect(bundle);
    const svid = this.toSvid(res.svid!.cert_chain, key.privateKey);
    this.install(svid, true);
    this.opts.logger.info('node attested', { spiffe_id: svid.spiffeId.toString(), attestation: plugin.type });
  }

  private updateBundleNoReconnect(b: Bundle): void {
    this.bundle = b;
    this.writeFile('bundle.json', b.toJson(), 0o644);
  }

  private toSvid(chain: Buffer[], key: KeyObject): AgentSvid {
    const v = verifyX509Svid(chain, (td) => (td.equals(this.opts.trustDomain) ? this.bundle.x509Authorities : undefined), this.opts.clock.now());
    return { spiffeId: v.spiffeId, chain, key, expiresAt: v.expiresAt, issuedAt: v.leaf.notBefore };
  }

  private install(svid: AgentSvid, persist: boolean): void {
    this.svid = svid;
    if (persist) {
      this.writeFile('agent-svid.pem', svid.chain.map((d) => pemFromDer(d)).join(''), 0o644);
      this.writeFile('agent-key.pem', privateKeyPem(svid.key), 0o600);
    }
    this.opts.connection.configure(this.bundle.x509Authorities, { chain: svid.chain, key: svid.key });
    this.opts.onSvid?.(svid);
  }

  private scheduleRenewal(): void {
    if (this.stopped || !this.svid) return;
    const { issuedAt, expiresAt } = this.svid;
    const at = issuedAt.getTime() + (expiresAt.getTime() - issuedAt.getTime()) / 2;
    const delay = Math.max(1000, at - this.opts.clock.now().getTime());
    this.timer = setTimeout(() => { void this.renew(); }, Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  /** Renews at half life; on an eviction attests again; retries on other failures. */
  async renew(): Promise<void> {
    try {
      const key = generateKeyPair();
      const res = await this.opts.connection.unary<RenewAgentResponseMsg>('RenewAgent', { csr: createCsr(key.privateKey, key.publicKey) });
      this.install(this.toSvid(res.svid!.cert_chain, key.privateKey), true);
      this.opts.logger.info('agent SVID renewed', { expires_at: this.svid!.expiresAt.toISOString() });
      this.scheduleRenewal();
    } catch (err) {
      await this.handleServerRefusal(err);
      if (this.stopped) return;
      this.timer = setTimeout(() => { void this.renew(); }, 5000);
      this.timer.unref();
    }
  }

  /** Evicted: attest again. Banned: throw AgentBanned (via onBanned). Anything else: log. */
  async handleServerRefusal(err: unknown): Promise<void> {
    const e = err as ServiceError;
    if (e.code === status.PERMISSION_DENIED && /banned/.test(e.details ?? '')) {
      this.opts.logger.error('the server has banned this agent', { reason: e.details });
      this.stop();
      this.onBanned?.(new AgentBanned(`the server has banned this agent: ${e.details}`));
      return;
    }
    if (e.code === status.UNAUTHENTICATED) {
      this.opts.logger.warn('the server no longer accepts this agent SVID; attesting again', { reason: e.details });
      try { await this.attest(); this.scheduleRenewal(); } catch (err2) {
        if (err2 instanceof AgentBanned) { this.stop(); this.onBanned?.(err2); return; }
        this.opts.logger.error('node attestation failed', { err: err2 });
      }
      return;
    }
    this.opts.logger.warn('agent SVID renewal failed; will retry', { code: e.code, reason: e.details ?? (err as Error).message });
  }

  /** Set by the agent: what to do when the server bans this agent. */
  onBanned: ((err: AgentBanned) => void) | undefined;

  private loadStoredBundle(): Bundle | undefined {
    const path = join(this.opts.dataDir, 'bundle.json');
    if (!existsSync(path)) return undefined;
    try { return Bundle.fromJwks(this.opts.trustDomain, readFileSync(path, 'utf8')); } catch (err) {
      this.opts.logger.warn('ignoring unreadable stored bundle', { path, err });
      return undefined;
    }
  }

  private loadStoredSvid(): AgentSvid | undefined {
    const certPath = join(this.opts.dataDir, 'agent-svid.pem');
    const keyPath = join(this.opts.dataDir, 'agent-key.pem');
    if (!existsSync(certPath) || !existsSync(keyPath)) return undefined;
    if (statSync(keyPath).mode & 0o077) throw new FailedPrecondition(`${keyPath} must have mode 0600`, 'data_dir');
    try {
      const svid = this.toSvid(derFromPem(readFileSync(certPath, 'utf8')), createPrivateKey(readFileSync(keyPath)));
      if (!svid.spiffeId.memberOf(this.opts.trustDomain)) return undefined;
      return svid;
    } catch (err) {
      this.opts.logger.info('stored agent SVID is not usable; attesting', { reason: (err as Error).message });
      return undefined;
    }
  }

  private writeFile(name: string, content: string, mode: number): void {
    const path = join(this.opts.dataDir, name);
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, content, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  }
}
