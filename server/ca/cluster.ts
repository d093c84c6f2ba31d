/**
 * The trust domain's authorities when several servers share one datastore, as
 * in SPIRE: each server signs with keys of its own, publishes them (its X.509
 * CA certificates or upstream roots, its JWT keys) in its `servers` row, and the
 * bundle every agent and workload gets is the union of every server's
 * authorities that have not expired. So an SVID signed by any server verifies
 * everywhere, and an agent whose SVID came from server A is accepted by B.
 *
 * A server that stops sending heartbeats is pruned (by the leader) once its CA
 * lifetime has passed: nothing it signed can still be valid by then.
 */
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { Bundle, parseCertificate, type TrustDomain } from '../../spiffe/index.js';
import type { Datastore, ServerAuthority, ServerRecord, SpiffeBundleDocument } from '../datastore/index.js';

export interface ClusterAuthoritiesOptions {
  store: Datastore;
  serverId: string;
  trustDomain: TrustDomain;
  clock: Clock;
  logger: Logger;
}

/** A bundle's keys as authorities with their expiry, the form a server row keeps. */
export function authoritiesOf(bundle: Bundle): ServerAuthority[] {
  const keys = bundle.toJwks().keys as Record<string, unknown>[];
  return keys.map((jwk) => {
    if (jwk.use === 'x509-svid') {
      const der = Buffer.from((jwk.x5c as string[])[0]!, 'base64');
      return { jwk, expiresAt: Math.floor(parseCertificate(der).notAfter.getTime() / 1000) };
    }
    const a = bundle.jwtAuthorities.find((x) => x.kid === jwk.kid);
    return { jwk, expiresAt: a?.expiresAt ? Math.floor(a.expiresAt.getTime() / 1000) : 0 };
  });
}

const keyOf = (jwk: Record<string, unknown>): string =>
  jwk.use === 'x509-svid' ? `x509:${(jwk.x5c as string[])[0]}` : `jwt:${String(jwk.kid)}`;

/** The union of the servers' unexpired authorities, ordered by expiry (the newest last) so the document is stable. */
export function unionOf(servers: readonly ServerRecord[], nowSeconds: number): { keys: Record<string, unknown>[]; intermediates: string[]; refreshHint: number } {
  const byKey = new Map<string, ServerAuthority>();
  for (const s of servers) {
    for (const a of s.authorities) {
      if (a.expiresAt !== 0 && a.expiresAt <= nowSeconds) continue;
      const k = keyOf(a.jwk);
      const seen = byKey.get(k);
      if (!seen || seen.expiresAt < a.expiresAt) byKey.set(k, a);
    }
  }
  const keys = [...byKey.entries()].sort(([ka, a], [kb, b]) => a.expiresAt - b.expiresAt || (ka < kb ? -1 : 1)).map(([, a]) => a.jwk);
  const intermediates = [...new Set(servers.flatMap((s) => s.intermediates))];
  const refreshHint = Math.max(1, Math.min(...servers.map((s) => Math.floor(s.caTtl / 6)), 3600));
  return { keys, intermediates, refreshHint };
}

export class ClusterAuthorities {
  private current: Bundle | undefined;
  private currentIntermediates: Buffer[] = [];
  private readonly listeners: (() => void)[] = [];
  private seen = '';

  constructor(private readonly opts: ClusterAuthoritiesOptions) {}

  /**
   * Writes this server's authorities and rebuilds the trust domain's bundle from
   * every server's, in one transaction (so two servers rotating at once cannot
   * drop each other's keys).
   */
  async publish(own: Bundle, intermediates: readonly Buffer[]): Promise<void> {
    const { store, serverId, trustDomain } = this.opts;
    await store.transaction(async (tx) => {
      await tx.setServerAuthorities(serverId, authoritiesOf(own), intermediates.map((d) => d.toString('base64')));
      await this.rebuild(tx);
    });
    await this.refresh();
    this.opts.logger.info('trust bundle published', { trust_domain: trustDomain.name, authorities: this.current?.x509Authorities.length ?? 0 });
  }

  /** The bundle from every live server's authorities, written when it differs from the stored one. */
  async rebuild(tx: Datastore): Promise<void> {
    const { trustDomain } = this.opts;
    const union = unionOf(await tx.listServers(), tx.nowSeconds());
    let previous: SpiffeBundleDocument | undefined;
    try { previous = (await tx.getBundle(trustDomain)).document; } catch { previous = undefined; }
    const same = previous && JSON.stringify(previous.keys) === JSON.stringify(union.keys) && previous['spiffe_refresh_hint'] === union.refreshHint;
    if (same) return;
    const sequence = Number(previous?.['spiffe_sequence'] ?? 0) + 1;
    await tx.setBundle(trustDomain, { keys: union.keys, spiffe_sequence: sequence, spiffe_refresh_hint: union.refreshHint } as SpiffeBundleDocument);
  }

  /** Reads the stored bundle and the servers' intermediates (after a change by any server). */
  async refresh(): Promise<void> {
    const { store, trustDomain } = this.opts;
    const [stored, servers] = await Promise.all([store.getBundle(trustDomain), store.listServers()]);
    this.current = Bundle.fromJwks(trustDomain, stored.document as unknown as Record<string, unknown>);
    this.currentIntermediates = unionOf(servers, store.nowSeconds()).intermediates.map((b) => Buffer.from(b, 'base64'));
    const now = JSON.stringify([stored.document.keys, servers.flatMap((s) => s.intermediates)]);
    if (now !== this.seen) {
      this.seen = now;
      for (const l of this.listeners) l();
    }
  }

  /** Called after the union of authorities changed (to refresh TLS roots). */
  onChange(listener: () => void): void { this.listeners.push(listener); }

  /** The trust domain's bundle: every server's authorities. */
  bundle(): Bundle {
    if (!this.current) throw new Error('cluster authorities not loaded: publish() or refresh() first');
    return this.current;
  }

  /** Every server's CA certificates below the bundle, to complete the chains of agents' leaf-only certificates. */
  intermediates(): Buffer[] { return this.currentIntermediates; }
}
