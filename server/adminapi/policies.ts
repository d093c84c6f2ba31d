/** Network and authentication policies (CiliumNetworkPolicy syntax): apply, list, delete. */
import { InvalidArgument } from '../../spiffe/index.js';
import { applyPolicies, deletePolicy, deletePolicyDocuments, type PolicyKind } from '../policy/index.js';
import { bodyObject, requiredString } from './input.js';
import { Query } from './input.js';
import type { Route, RouteContext } from './route.js';

const KINDS: readonly PolicyKind[] = ['CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'AuthPolicy'];

export function policyRoutes(ctx: RouteContext): Route[] {
  const { store } = ctx;
  return [
    {
      method: 'post', path: '/v1/policies:apply', action: 'policy.apply',
      async handle(req) {
        const body = bodyObject(req.body, ['yaml']);
        const applied = await applyPolicies(store, requiredString(body, 'yaml'));
        return { json: { applied }, audit: applied.map((p) => ({ target: `${p.kind} ${p.namespace ? `${p.namespace}/` : ''}${p.name} (${p.result})` })) };
      },
    },
    {
      method: 'post', path: '/v1/policies:delete', action: 'policy.delete',
      async handle(req) {
        const body = bodyObject(req.body, ['yaml', 'namespace', 'name', 'kind']);
        if (typeof body['yaml'] === 'string') {
          const deleted = await deletePolicyDocuments(store, body['yaml']);
          return { json: { deleted }, audit: deleted.map((p) => ({ target: `${p.namespace ? `${p.namespace}/` : ''}${p.name}${p.deleted ? '' : ' (absent)'}` })) };
        }
        const name = requiredString(body, 'name');
        const namespace = body['namespace'] === undefined ? '' : requiredString(body, 'namespace');
        const kind = body['kind'];
        if (kind !== undefined && !KINDS.includes(kind as PolicyKind)) throw new InvalidArgument(`kind must be one of ${KINDS.join(', ')}`, 'kind');
        const old = await deletePolicy(store, { namespace, name, ...(kind ? { kind: kind as PolicyKind } : {}) });
        return { json: { deleted: [{ namespace: old.namespace, name: old.name, kind: old.kind, deleted: true }] }, audit: [{ target: `${namespace ? `${namespace}/` : ''}${name}` }] };
      },
    },
    {
      method: 'get', path: '/v1/policies',
      async handle(req) {
        const q = new Query(req.query, ['namespace']);
        const namespace = q.one('namespace');
        const policies = (await store.listPolicies(namespace !== undefined ? { namespace } : {})).map((p) => ({
          namespace: p.namespace, name: p.name, kind: p.kind, revision: p.revision, spec: p.spec,
        }));
        return { json: { policies } };
      },
    },
  ];
}
