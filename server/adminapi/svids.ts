/** Admin minting of SVIDs (like `spire-server x509 mint` and `jwt mint`): the key stays with the caller. */
import { performance } from 'node:perf_hooks';
import { InvalidArgument, InvalidCsr, pemFromDer } from '../../spiffe/index.js';
import { dnsNameError } from '../registration/index.js';
import { bodyObject, present, requiredString, seconds, stringList, workloadIdIn } from './input.js';
import { type Route, type RouteContext, bodyString } from './route.js';

const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

function dnsNames(v: unknown): string[] {
  const names = stringList(v, 'dns_names');
  names.forEach((name, i) => {
    const err = dnsNameError(name);
    if (err) throw new InvalidArgument(err, `dns_names[${i}]`);
  });
  return names;
}

function audience(v: unknown): string[] {
  const list = stringList(v, 'audience');
  if (list.length === 0) throw new InvalidArgument('audience must hold at least one value', 'audience');
  list.forEach((a, i) => { if (a === '') throw new InvalidArgument('an audience value is empty', `audience[${i}]`); });
  return list;
}

export function svidRoutes(ctx: RouteContext): Route[] {
  const { ca, registration, trustDomain, metrics } = ctx;
  const unix = (d: Date) => Math.floor(d.getTime() / 1000);
  return [
    {
      method: 'post', path: '/v1/svids/x509', action: 'svid.mint_x509', target: (req) => bodyString(req, 'spiffe_id'),
      async handle(req) {
        const body = bodyObject(req.body, ['spiffe_id', 'csr', 'ttl', 'dns_names']);
        const spiffeId = workloadIdIn(trustDomain, requiredString(body, 'spiffe_id'), 'spiffe_id');
        const csrText = requiredString(body, 'csr');
        if (!BASE64.test(csrText)) throw new InvalidCsr('csr must be the DER CSR in base64');
        const ttl = present(body, 'ttl') ? seconds(body.ttl, 'ttl', 0, registration.limits.maxX509SvidTtl) : 0;
        const names = present(body, 'dns_names') ? dnsNames(body.dns_names) : [];
        const started = performance.now();
        const { publicKeySpki } = ca.parseCsr(Buffer.from(csrText, 'base64'));
        const svid = ca.signX509Svid(spiffeId, publicKeySpki, ttl, names);
        metrics.svidsSigned.inc({ type: 'x509' });
        metrics.signingLatency.observe((performance.now() - started) / 1000);
        return {
          json: {
            spiffe_id: spiffeId.toString(),
            cert_chain: svid.certChainDer.map((der) => pemFromDer(der)).join(''),
            expires_at: unix(svid.expiresAt),
            bundle: ctx.trustBundle().x509Pem(),
          },
          audit: [{ target: spiffeId.toString() }],
        };
      },
    },
    {
      method: 'post', path: '/v1/svids/jwt', action: 'svid.mint_jwt', target: (req) => bodyString(req, 'spiffe_id'),
      async handle(req) {
        const body = bodyObject(req.body, ['spiffe_id', 'audience', 'ttl']);
        const spiffeId = workloadIdIn(trustDomain, requiredString(body, 'spiffe_id'), 'spiffe_id');
        if (!present(body, 'audience')) throw new InvalidArgument('audience is required', 'audience');
        const aud = audience(body.audience);
        const ttl = present(body, 'ttl') ? seconds(body.ttl, 'ttl', 0, registration.limits.maxJwtSvidTtl) : 0;
        const jwt = ca.signJwtSvid(spiffeId, aud, ttl);
        metrics.svidsSigned.inc({ type: 'jwt' });
        return { json: { spiffe_id: spiffeId.toString(), token: jwt.token, expires_at: unix(jwt.expiresAt) }, audit: [{ target: spiffeId.toString() }] };
      },
    },
  ];
}
