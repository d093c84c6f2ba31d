/**
 * The one place that removes auth entries, each removal with its reason and
 * counted by it (as Cilium's authmap_gc.go does): an entry expired, its
 * identity or node left the registry, an endpoint it stood for went away, no
 * policy of either side needs it any more, or the peer refused it on
 * re-authentication.
 */
import { AuthType, type AuthPair } from '../../bpf/index.js';
import type { Logger } from '../../common/log.js';
import type { Counter, MetricsRegistry } from '../../common/metrics.js';
import { authPairKey, type AuthMapWriter } from './authmap.js';

export type RemovalReason = 'expired' | 'identity_gone' | 'node_gone' | 'endpoint_gone' | 'no_policy' | 'refused';
export const REMOVAL_REASONS: readonly RemovalReason[] = ['expired', 'identity_gone', 'node_gone', 'endpoint_gone', 'no_policy', 'refused'];

export interface AuthGcOptions {
  authMap: AuthMapWriter;
  /** What the service keeps fresh, keyed by authPairKey; an entry removed here is forgotten there too. */
  held: Map<string, unknown>;
  logger: Logger;
}

export class AuthGc {
  readonly removed: Record<RemovalReason, number> = { expired: 0, identity_gone: 0, node_gone: 0, endpoint_gone: 0, no_policy: 0, refused: 0 };

  constructor(private readonly opts: AuthGcOptions) {}

  /** Removes one entry; false when the map had none (it is forgotten either way). */
  remove(pair: AuthPair, reason: RemovalReason): boolean {
    this.opts.held.delete(authPairKey(pair));
    if (!this.opts.authMap.delete(pair)) return false;
    this.removed[reason]++;
    this.counter?.inc({ reason });
    return true;
  }

  /**
   * Removes every mutual-auth entry for which `why` names a reason; returns how
   * many went, and logs them once by reason.
   */
  sweep(why: (pair: AuthPair, expiresAtBootNs: bigint) => RemovalReason | undefined): number {
    const by: Partial<Record<RemovalReason, number>> = {};
    let n = 0;
    for (const { pair, expiresAtBootNs } of [...this.opts.authMap.entries()]) {
      if (pair.authType !== AuthType.mutual) continue;
      const reason = why(pair, expiresAtBootNs);
      if (reason === undefined || !this.remove(pair, reason)) continue;
      by[reason] = (by[reason] ?? 0) + 1;
      n++;
    }
    if (n > 0) this.opts.logger.info('auth entries removed', { count: n, reasons: by });
    return n;
  }

  /** meshid_agent_auth_entries_removed_total{reason}: every reason shown, from 0. */
  registerMetrics(registry: MetricsRegistry): void {
    this.counter = registry.counter('meshid_agent_auth_entries_removed_total', 'Auth map entries removed since start, by reason (expired, identity_gone, node_gone, endpoint_gone, no_policy, refused).');
    for (const r of REMOVAL_REASONS) this.counter.inc({ reason: r }, this.removed[r]);
  }
  private counter: Counter | undefined;
}
