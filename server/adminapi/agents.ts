/** Attested agents (list, show, evict, ban) and the join tokens that let new agents attest. */
import { randomBytes } from 'node:crypto';
import { agentId, FailedPrecondition, InvalidArgument, InvalidSpiffeId, isAgentId, SpiffeId } from '../../spiffe/index.js';
import { tokenDigest } from '../attestation/index.js';
import type { AttestedNode, ListAttestedNodesOptions } from '../datastore/index.js';
import { Query, bodyObject, present, seconds, spiffeIdIn } from './input.js';
import { type AdminRequest, type Route, type RouteContext, bodyString } from './route.js';
import type { AgentJson } from '../../api/admin.js';
export type { AgentJson };

/** SPIRE's default join token lifetime. */
export const DEFAULT_TOKEN_TTL = 600;
/** A join token is a bearer secret for a node's first contact; a week is plenty to provision one. */
export const MAX_TOKEN_TTL = 7 * 24 * 3600;


function agentToJson(a: AttestedNode): AgentJson {
  return {
    spiffe_id: a.spiffeId.toString(),
    attestation_type: a.attestationType,
    x509_svid_serial_number: a.certSerial,
    x509_svid_expires_at: a.certNotAfter,
    banned: a.banned,
    can_reattest: a.canReattest,
    selectors: a.selectors.toStrings(),
    created_at: a.createdAt,
    updated_at: a.updatedAt,
  };
}

/** The `{id}` path parameter: a URL-encoded agent SPIFFE ID. */
function agentParam(req: AdminRequest): SpiffeId {
  return SpiffeId.parse(req.params.id ?? '', 'id');
}

export function agentRoutes(ctx: RouteContext): Route[] {
  const { store, trustDomain } = ctx;
  const evict = async (req: AdminRequest) => {
    const agent = await store.evictAttestedNode(agentParam(req));
    return { json: agentToJson(agent), audit: [{ target: agent.spiffeId.toString() }] };
  };
  const idTarget = (req: AdminRequest) => req.params.id ?? '';
  return [
    {
      method: 'get', path: '/v1/agents',
      async handle(req) {
        const q = new Query(req.query, ['banned', 'attestation_type', 'page_size', 'page_token']);
        const opts: ListAttestedNodesOptions = {};
        const banned = q.bool('banned');
        const attestationType = q.one('attestation_type');
        const pageSize = q.wholeNumber('page_size');
        const pageToken = q.one('page_token');
        if (banned !== undefined) opts.banned = banned;
        if (attestationType !== undefined) opts.attestationType = attestationType;
        if (pageSize !== undefined) opts.pageSize = pageSize;
        if (pageToken !== undefined) opts.pageToken = pageToken;
        const page = await store.listAttestedNodes(opts);
        return { json: { agents: page.items.map(agentToJson), next_page_token: page.nextPageToken } };
      },
    },
    { method: 'get', path: '/v1/agents/{id}', handle: async (req) => ({ json: agentToJson(await store.getAttestedNode(agentParam(req))) }) },
    { method: 'delete', path: '/v1/agents/{id}', action: 'agent.evict', target: idTarget, handle: evict },
    { method: 'post', path: '/v1/agents/{id}:evict', action: 'agent.evict', target: idTarget, handle: evict },
    {
      method: 'post', path: '/v1/agents/{id}:ban', action: 'agent.ban', target: idTarget,
      async handle(req) {
        const agent = await store.banAttestedNode(agentParam(req));
        return { json: agentToJson(agent), audit: [{ target: agent.spiffeId.toString() }] };
      },
    },
    {
      method: 'post', path: '/v1/tokens', action: 'token.create',
      target: (req) => bodyString(req, 'agent_id'),
      async handle(req) {
        const body = bodyObject(req.body, ['ttl', 'agent_id', 'reattest']);
        const ttl = present(body, 'ttl') ? seconds(body.ttl, 'ttl', 1, MAX_TOKEN_TTL) : DEFAULT_TOKEN_TTL;
        if (present(body, 'reattest') && typeof body.reattest !== 'boolean') throw new InvalidArgument('reattest must be true or false', 'reattest');
        let fixedId: SpiffeId | undefined;
        if (present(body, 'agent_id')) {
          fixedId = spiffeIdIn(trustDomain, body.agent_id, 'agent_id');
          // Agents and workloads live in separate parts of the ID space, so a token can never mint a workload's ID.
          if (!isAgentId(fixedId)) {
            throw new InvalidSpiffeId(`agent_id must be an agent ID, spiffe://${trustDomain.name}/meshid/agent/<attestor>/<node>`, 'agent_id');
          }
          // a token for an agent that is attested lets whoever holds it take that node's identity over
          const attested = await store.findAttestedNode(fixedId);
          if (attested && body.reattest !== true) {
            throw new FailedPrecondition(`agent ${fixedId.toString()} is attested already (${attested.banned ? 'banned' : 'active'}); a token for it lets its holder become that agent: set reattest (meshid token generate --reattest) to mean it`, 'agent_id');
          }
        }
        const token = randomBytes(32).toString('base64url');
        const expiresAt = Math.floor(ctx.clock.now().getTime() / 1000) + ttl;
        await store.createJoinToken(fixedId ? { token, expiresAt, agentId: fixedId } : { token, expiresAt });
        const agent = fixedId ?? agentId(trustDomain, 'join_token', token);
        // The audit line names the token by digest: the log must not hold a usable secret.
        const target = fixedId ? `${fixedId.toString()} (join_token ${tokenDigest(token)})` : `join_token ${tokenDigest(token)}`;
        return { status: 201, json: { token, expires_at: expiresAt, agent_id: agent.toString() }, audit: [{ target }] };
      },
    },
  ];
}
