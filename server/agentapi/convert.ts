/** Datastore records to agent API messages. */
import type { Endpoint, Identity, MeshNode, Policy, RegistrationEntry } from '../datastore/index.js';
import type { EndpointMsg, EntryMsg, IdentityMsg, NodeMsg, PolicyMsg, X509SvidMsg } from '../../api/agentproto.js';
import { serviceAccountId, type SpiffeId, type TrustDomain } from '../../spiffe/index.js';

export const entryMsg = (e: RegistrationEntry): EntryMsg => ({
  id: e.id, spiffe_id: e.spiffeId.toString(), parent_id: e.parentId.toString(), selectors: e.selectors.toStrings(),
  x509_svid_ttl: e.x509SvidTtl, jwt_svid_ttl: e.jwtSvidTtl, dns_names: [...e.dnsNames], hint: e.hint, admin: e.admin,
  downstream: e.downstream, federates_with: e.federatesWith.map((t) => t.name), revision: e.revision,
});

export const identityMsg = (td: TrustDomain, i: Identity): IdentityMsg => ({
  id: i.id, labels: i.labels, namespace: i.serviceAccount.namespace, service_account: i.serviceAccount.name,
  spiffe_id: serviceAccountId(td, i.serviceAccount.namespace, i.serviceAccount.name).toString(),
});

export const endpointMsg = (e: Endpoint): EndpointMsg => ({
  ip: e.ip, identity: e.identity, node_id: e.nodeId, namespace: e.namespace, name: e.name, labels: e.labels,
});

export const nodeMsg = (n: MeshNode): NodeMsg => ({
  id: n.id, name: n.name, address: n.address, wireguard_public_key: n.wireguardPublicKey, pod_cidr: n.podCidr, agent_id: n.agentId,
});

export const policyMsg = (p: Policy): PolicyMsg => ({ namespace: p.namespace, name: p.name, kind: p.kind, spec_json: JSON.stringify(p.spec) });

export const x509SvidMsg = (id: SpiffeId, chain: Buffer[], expiresAt: Date): X509SvidMsg => ({
  spiffe_id: id.toString(), cert_chain: chain, expires_at: Math.floor(expiresAt.getTime() / 1000),
});
