/** Read-only views of the mesh state: security identities, nodes, endpoints. */
import { serviceAccountId } from '../../spiffe/index.js';
import { Query } from './input.js';
import type { Route, RouteContext } from './route.js';

export function meshRoutes(ctx: RouteContext): Route[] {
  const { store, trustDomain } = ctx;
  return [
    {
      method: 'get', path: '/v1/identities',
      async handle(req) {
        new Query(req.query, []);
        const identities = (await store.listIdentities()).map((i) => ({
          id: i.id,
          labels: i.labels,
          namespace: i.serviceAccount.namespace,
          service_account: i.serviceAccount.name,
          spiffe_id: serviceAccountId(trustDomain, i.serviceAccount.namespace, i.serviceAccount.name).toString(),
          created_at: i.createdAt,
        }));
        return { json: { identities } };
      },
    },
    {
      method: 'get', path: '/v1/nodes',
      async handle(req) {
        new Query(req.query, []);
        const nodes = (await store.listNodes()).map((n) => ({
          id: n.id, name: n.name, address: n.address, wireguard_public_key: n.wireguardPublicKey, pod_cidr: n.podCidr,
          agent_id: n.agentId, created_at: n.createdAt,
        }));
        return { json: { nodes } };
      },
    },
    {
      method: 'get', path: '/v1/endpoints',
      async handle(req) {
        const q = new Query(req.query, ['node_id', 'identity']);
        const filter: { nodeId?: number; identity?: number } = {};
        const nodeId = q.wholeNumber('node_id');
        const identity = q.wholeNumber('identity');
        if (nodeId !== undefined) filter.nodeId = nodeId;
        if (identity !== undefined) filter.identity = identity;
        const endpoints = (await store.listEndpoints(filter)).map((e) => ({
          ip: e.ip, identity: e.identity, node_id: e.nodeId, namespace: e.namespace, name: e.name, labels: e.labels,
        }));
        return { json: { endpoints } };
      },
    },
  ];
}
