/** The server's own trust bundle and the federated ones. */
import { Bundle, InvalidArgument, InvalidTrustDomain, TrustDomain } from '../../spiffe/index.js';
import type { SpiffeBundleDocument, StoredBundle } from '../datastore/index.js';
import { Query, isObject } from './input.js';
import type { AdminRequest, Route, RouteContext } from './route.js';

function bundleToJson(b: StoredBundle): { trust_domain: string; bundle: SpiffeBundleDocument; updated_at: number } {
  return { trust_domain: b.trustDomain.name, bundle: b.document, updated_at: b.updatedAt };
}

export function bundleRoutes(ctx: RouteContext): Route[] {
  const { store, trustDomain } = ctx;
  /** The `{trust_domain}` path parameter: a federated trust domain, never the server's own. */
  const federated = (req: AdminRequest): TrustDomain => {
    const td = TrustDomain.parse(req.params.trust_domain ?? '', 'trust_domain');
    if (td.equals(trustDomain)) {
      throw new InvalidTrustDomain(`${td.name} is the server's own trust domain; its bundle comes from the CA`, 'trust_domain');
    }
    return td;
  };
  const tdTarget = (req: AdminRequest) => req.params.trust_domain ?? '';
  return [
    {
      method: 'get', path: '/v1/bundle',
      async handle(req) {
        const format = new Query(req.query, ['format']).one('format') ?? 'spiffe';
        const bundle = ctx.trustBundle();
        if (format === 'pem') return { text: bundle.x509Pem(), contentType: 'application/x-pem-file' };
        if (format === 'spiffe') return { json: bundle.toJwks() };
        throw new InvalidArgument('format must be spiffe or pem', 'format');
      },
    },
    {
      method: 'get', path: '/v1/bundles',
      async handle(req) {
        new Query(req.query, []);
        return { json: { bundles: (await store.listFederatedBundles()).map(bundleToJson) } };
      },
    },
    {
      method: 'put', path: '/v1/bundles/{trust_domain}', action: 'bundle.set', target: tdTarget,
      async handle(req) {
        const td = federated(req);
        if (!isObject(req.body)) throw new InvalidArgument('the request body must be a SPIFFE bundle (a JSON object with "keys")', 'bundle');
        // Parsed and re-encoded: what is stored (and sent to agents) is known to be usable.
        const bundle = Bundle.fromJwks(td, req.body);
        if (bundle.x509Authorities.length + bundle.jwtAuthorities.length === 0) {
          throw new InvalidArgument('the bundle has no keys', 'bundle.keys');
        }
        const stored = await store.setBundle(td, bundle.toJwks() as SpiffeBundleDocument);
        return { json: bundleToJson(stored), audit: [{ target: td.name }] };
      },
    },
    {
      method: 'delete', path: '/v1/bundles/{trust_domain}', action: 'bundle.delete', target: tdTarget,
      async handle(req) {
        const td = federated(req);
        await store.deleteFederatedBundle(td);
        return { json: { trust_domain: td.name }, audit: [{ target: td.name }] };
      },
    },
  ];
}
