/** Node attestation: turns an agent's attestation data into its agent SPIFFE ID and node selectors. */
import { createHash } from 'node:crypto';
import type { Datastore } from '../datastore/index.js';
import { agentId, InvalidArgument, PermissionDenied, Selector, SelectorSet, type SpiffeId, type TrustDomain } from '../../spiffe/index.js';

export interface AttestationResult {
  agentId: SpiffeId;
  selectors: SelectorSet;
  /** Whether the agent may attest again with fresh data of the same kind (join tokens are one-time: no). */
  canReattest: boolean;
}

export interface NodeAttestor {
  readonly type: string;
  attest(payload: Buffer): Promise<AttestationResult>;
}

/**
 * Join tokens: one-time secrets with a TTL. The agent ID is the token's fixed
 * agent ID when it was generated with one, else
 * spiffe://<td>/meshid/agent/join_token/<token> as in SPIRE (the token is
 * spent by then, so naming it reveals nothing usable).
 */
export class JoinTokenAttestor implements NodeAttestor {
  readonly type = 'join_token';
  constructor(private readonly store: Datastore, private readonly trustDomain: TrustDomain) {}

  async attest(payload: Buffer): Promise<AttestationResult> {
    const token = payload.toString('utf8');
    if (!/^[A-Za-z0-9_.-]{8,256}$/.test(token)) throw new InvalidArgument('join token must be 8-256 letters, digits, "_", "." or "-"', 'attestation.payload');
    let consumed;
    try {
      consumed = await this.store.consumeJoinToken(token);
    } catch (err) {
      // Unknown, spent and expired tokens look the same to the caller; a datastore outage does not.
      const code = (err as { code?: string }).code;
      if (code !== 'not_found' && code !== 'failed_precondition') throw err;
      throw new PermissionDenied(`join token refused: ${(err as Error).message}`);
    }
    const id = consumed.agentId ?? agentId(this.trustDomain, 'join_token', token);
    return { agentId: id, selectors: SelectorSet.of([Selector.of('join_token', tokenDigest(token))]), canReattest: false };
  }
}

/** A short digest of a token, for selectors and logs (never the token itself). */
export function tokenDigest(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

export class AttestorRegistry {
  private readonly byType = new Map<string, NodeAttestor>();
  constructor(attestors: NodeAttestor[]) { for (const a of attestors) this.byType.set(a.type, a); }
  get(type: string): NodeAttestor {
    const a = this.byType.get(type);
    if (!a) throw new InvalidArgument(`unknown attestation type "${type}"; this server accepts ${[...this.byType.keys()].join(', ')}`, 'attestation.type');
    return a;
  }
}
