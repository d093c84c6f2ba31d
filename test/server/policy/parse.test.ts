import t from 'tap';
import { parsePolicyDocuments, parsePolicyObject, MAX_POLICY_INPUT_BYTES, type ParsedPolicy } from '../../../server/policy/index.js';
import { checkPolicySpec } from '../../../api/policy.js';
import { MeshidError } from '../../../spiffe/index.js';

const NS = 'io.kubernetes.pod.namespace';

/** The error a parse throws: `code field: message`. */
function failure(yaml: string): { code: string; field: string | undefined; message: string } {
  try { parsePolicyDocuments(yaml); } catch (err) {
    if (err instanceof MeshidError) return { code: err.code, field: err.field, message: err.message };
    throw err;
  }
  throw new Error('expected the parse to fail');
}

const header = 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: prod}\n';
const withSpec = (spec: string): string => `${header}spec:\n${spec.replace(/^\n/, '').split('\n').map((l) => `  ${l}`).join('\n')}\n`;

t.test('a CiliumNetworkPolicy with every supported field normalises as documented', async (t) => {
  const [p] = parsePolicyDocuments(withSpec(`
endpointSelector:
  matchLabels: {"k8s:app": pay, "any:tier": back}
  matchExpressions:
  - {key: version, operator: In, values: [v2, v1, v1]}
  - {key: canary, operator: DoesNotExist}
description: payments
ingress:
- fromEndpoints:
  - matchLabels: {app: order}
  - matchExpressions: [{key: team, operator: Exists}, {key: env, operator: NotIn, values: [test]}]
  toPorts:
  - ports: [{port: '8080', protocol: TCP}, {port: 9090}]
  - ports: [{port: 8080, protocol: TCP}, {protocol: UDP}]
  authentication: {mode: required}
- toPorts: [{ports: [{port: 443, protocol: SCTP}]}]
  authentication: {mode: disabled}
ingressDeny:
- fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": dev}}]
egress:
- toEndpoints: [{}]
egressDeny:
- toPorts: [{ports: [{port: 25, protocol: ANY}]}]
enableDefaultDeny: {egress: false}
`));
  const ns = { key: NS, operator: 'In', values: ['prod'] };
  t.same(p, {
    namespace: 'prod', name: 'p', kind: 'CiliumNetworkPolicy',
    spec: {
      format: 'meshid.policy/v1',
      rules: [{
        subject: { requirements: [
          { key: 'app', operator: 'In', values: ['pay'] },
          { key: 'canary', operator: 'DoesNotExist', values: [] },
          ns,
          { key: 'tier', operator: 'In', values: ['back'] },
          { key: 'version', operator: 'In', values: ['v1', 'v2'] },
        ] },
        defaultDeny: { ingress: true, egress: false },
        description: 'payments',
        ingress: [
          {
            peers: [
              { requirements: [{ key: 'app', operator: 'In', values: ['order'] }, ns] },
              { requirements: [{ key: 'env', operator: 'NotIn', values: ['test'] }, ns, { key: 'team', operator: 'Exists', values: [] }] },
            ],
            ports: [
              { port: 8080, protocol: 'TCP' }, { port: 9090, protocol: 'TCP' },
              { port: 0, protocol: 'UDP' }, { port: 9090, protocol: 'UDP' },
              { port: 9090, protocol: 'SCTP' },
            ],
            auth: true,
          },
          { peers: 'all', ports: [{ port: 443, protocol: 'SCTP' }], auth: false },
        ],
        ingressDeny: [{ peers: [{ requirements: [{ key: NS, operator: 'In', values: ['dev'] }] }], ports: 'all', auth: false }],
        egress: [{ peers: [{ requirements: [ns] }], ports: 'all', auth: false }],
        egressDeny: [{ peers: 'all', ports: [{ port: 25, protocol: 'TCP' }, { port: 25, protocol: 'UDP' }, { port: 25, protocol: 'SCTP' }], auth: false }],
      }],
    },
  });
});

t.test('the three kinds: CNP and AuthPolicy are namespaced (default "default"), CCNP is cluster-wide and unrestricted', async (t) => {
  const ps = parsePolicyDocuments(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a}
spec: {endpointSelector: {}, ingress: [{fromEndpoints: [{}]}]}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: b}
spec: {endpointSelector: {}, ingress: [{fromEndpoints: [{}]}]}
---
apiVersion: meshid.io/v1alpha1
kind: AuthPolicy
metadata: {name: c, namespace: shop}
spec: {endpointSelector: {}, ingress: [{fromEndpoints: [{}], authentication: {mode: required}}]}
`);
  t.same(ps.map((p) => [p.kind, p.namespace, p.name]), [
    ['CiliumNetworkPolicy', 'default', 'a'], ['CiliumClusterwideNetworkPolicy', '', 'b'], ['AuthPolicy', 'shop', 'c'],
  ]);
  const rule = (p: ParsedPolicy) => p.spec.rules[0]!;
  t.same(rule(ps[0]!).subject, { requirements: [{ key: NS, operator: 'In', values: ['default'] }] });
  t.same(rule(ps[1]!).subject, { requirements: [] }, 'a cluster-wide {} selects every endpoint');
  t.same(rule(ps[1]!).ingress, [{ peers: [{ requirements: [] }], ports: 'all', auth: false }]);
  t.same(rule(ps[2]!).ingress, [{ peers: [{ requirements: [{ key: NS, operator: 'In', values: ['shop'] }] }], ports: 'all', auth: true }]);
});

t.test('multi-document input: empty documents are skipped, specs lists add rules, JSON works', async (t) => {
  const ps = parsePolicyDocuments(`---
# nothing here
---
${header}specs:
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{}]
- endpointSelector: {matchLabels: {app: b}}
  egress: [{}]
spec:
  endpointSelector: {matchLabels: {app: c}}
---
{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "q", "namespace": "prod", "labels": {"x": "y"}}, "spec": {"endpointSelector": {}}}
---
`);
  t.same(ps.map((p) => p.name), ['p', 'q']);
  t.same(ps[0]!.spec.rules.map((r) => r.subject.requirements[0]!.values[0]), ['c', 'a', 'b'], 'spec first, then specs');
  t.same(ps[0]!.spec.rules[1]!.ingress, [{ peers: [], ports: 'all', auth: false }], '- {} allows nothing');
  t.equal(parsePolicyObject({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'o' }, spec: { endpointSelector: {} } }).name, 'o');
});

t.test('every parsed policy fits the shared schema that agents decode with', async (t) => {
  const ps = parsePolicyDocuments(withSpec(`
endpointSelector: {matchLabels: {app: pay}}
ingress: [{fromEndpoints: [{matchLabels: {app: x}}], toPorts: [{ports: [{port: 1}]}], authentication: {mode: required}}, {}]
ingressDeny: [{toPorts: [{ports: [{port: 2, protocol: UDP}]}]}]
egress: [{toEndpoints: [{}]}]
egressDeny: [{toEndpoints: [{matchExpressions: [{key: a, operator: Exists}]}]}]
enableDefaultDeny: {ingress: false, egress: true}
description: d
`));
  t.ok(ps.length > 0);
  for (const p of ps) t.same(checkPolicySpec(JSON.parse(JSON.stringify(p.spec)), p.name), p.spec, `${p.name} round-trips through JSON and the schema`);
});

t.test('each unsupported field is refused with its path', async (t) => {
  const cases: Array<[string, string, RegExp?]> = [
    ['ingress: [{toFQDNs: [{matchName: a.com}]}]', 'spec.ingress[0].toFQDNs'],
    ['egress: [{toFQDNs: [{matchName: a.com}]}]', 'spec.egress[0].toFQDNs'],
    ['egress: [{toCIDR: [10.0.0.0/8]}]', 'spec.egress[0].toCIDR'],
    ['egress: [{toCIDRSet: [{cidr: 10.0.0.0/8}]}]', 'spec.egress[0].toCIDRSet'],
    ['ingress: [{fromCIDR: [10.0.0.0/8]}]', 'spec.ingress[0].fromCIDR'],
    ['ingress: [{fromCIDRSet: [{cidr: 10.0.0.0/8}]}]', 'spec.ingress[0].fromCIDRSet'],
    ['egress: [{toEntities: [world]}]', 'spec.egress[0].toEntities'],
    ['ingress: [{fromEntities: [host]}]', 'spec.ingress[0].fromEntities'],
    ['egress: [{toServices: [{k8sService: {serviceName: a}}]}]', 'spec.egress[0].toServices'],
    ['ingress: [{fromRequires: [{}]}]', 'spec.ingress[0].fromRequires'],
    ['egress: [{toRequires: [{}]}]', 'spec.egress[0].toRequires'],
    ['egress: [{toGroups: [{}]}]', 'spec.egress[0].toGroups'],
    ['ingress: [{fromNodes: [{}]}]', 'spec.ingress[0].fromNodes'],
    ['ingress: [{icmps: [{fields: [{type: 8}]}]}]', 'spec.ingress[0].icmps'],
    ['ingressDeny: [{fromCIDR: [10.0.0.0/8]}]', 'spec.ingressDeny[0].fromCIDR'],
    ['ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{method: GET}]}}]}]', 'spec.ingress[0].toPorts[0].rules', /L7/],
    ['ingress: [{toPorts: [{ports: [{port: 443}], terminatingTLS: {}}]}]', 'spec.ingress[0].toPorts[0].terminatingTLS'],
    ['egress: [{toPorts: [{ports: [{port: 443}], serverNames: [a.com]}]}]', 'spec.egress[0].toPorts[0].serverNames'],
    ['egress: [{toPorts: [{ports: [{port: 443}], listener: {}}]}]', 'spec.egress[0].toPorts[0].listener'],
    ['ingress: [{toPorts: [{ports: [{port: 8000, endPort: 8080}]}]}]', 'spec.ingress[0].toPorts[0].ports[0].endPort', /port ranges/],
    ['nodeSelector: {}', 'spec.nodeSelector'],
    ['labels: [{key: a}]', 'spec.labels'],
    ['ingressDeny: [{fromEndpoints: [{}], authentication: {mode: required}}]', 'spec.ingressDeny[0].authentication', /deny rules cannot require/],
  ];
  for (const [extra, path, why] of cases) {
    const f = failure(withSpec(`endpointSelector: {}\n${extra}`));
    t.equal(f.code, 'invalid_argument', path);
    t.equal(f.field, path);
    t.match(f.message, new RegExp(`^document 1 \\(CiliumNetworkPolicy prod/p\\): ${path.replace(/[[\].]/g, '\\$&')} is not supported`), path);
    if (why) t.match(f.message, why);
  }
});

t.test('unknown fields (typos) are refused with their path too', async (t) => {
  t.match(failure(withSpec('endpointSelector: {}\ningres: [{}]')), { field: 'spec.ingres', message: /spec\.ingres is not a field of a policy rule/ });
  t.match(failure(withSpec('endpointSelector: {matchLabel: {a: b}}')), { field: 'spec.endpointSelector.matchLabel' });
  t.match(failure(withSpec('endpointSelector: {}\negress: [{fromEndpoints: [{}]}]')), { field: 'spec.egress[0].fromEndpoints', message: /not a field of an egress rule/ });
  t.match(failure(`${header}spec: {endpointSelector: {}}\nstatus: {}\n`), { field: 'document.status' });
});

t.test('bad ports and protocols are refused with their path', async (t) => {
  const port = (p: string): ReturnType<typeof failure> => failure(withSpec(`endpointSelector: {}\ningress: [{toPorts: [{ports: [${p}]}]}]`));
  const at = 'spec.ingress[0].toPorts[0].ports[0]';
  t.match(port('{port: 70000}'), { field: `${at}.port`, message: /\[0, 65535\]/ });
  t.match(port('{port: -1}'), { field: `${at}.port` });
  t.match(port('{port: 1.5}'), { field: `${at}.port` });
  t.match(port("{port: '80-90'}"), { field: `${at}.port`, message: /port ranges/ });
  t.match(port('{port: http}'), { field: `${at}.port`, message: /named ports \("http"\) are not supported/ });
  t.match(port('{port: [80]}'), { field: `${at}.port` });
  t.match(port('{port: 80, protocol: tcp}'), { field: `${at}.protocol`, message: /TCP, UDP, SCTP, ANY \(got "tcp"\)/ });
  t.match(port('{port: 80, protocol: ICMP}'), { field: `${at}.protocol`, message: /not supported/ });
  t.match(port('{port: 80, protocol: GRE}'), { field: `${at}.protocol` });
  t.match(failure(withSpec('endpointSelector: {}\ningress: [{toPorts: [{ports: []}]}]')), { field: 'spec.ingress[0].toPorts[0].ports', message: /at least one port/ });
  t.match(failure(withSpec('endpointSelector: {}\ningress: [{toPorts: [{}]}]')), { field: 'spec.ingress[0].toPorts[0].ports' });
});

t.test('selectors, authentication and metadata are validated', async (t) => {
  const sel = (s: string): ReturnType<typeof failure> => failure(withSpec(`endpointSelector: ${s}`));
  t.match(failure(withSpec('ingress: [{}]')), { field: 'spec.endpointSelector', message: /is required/ });
  t.match(sel('{matchLabels: {"reserved:host": ""}}'), { field: 'spec.endpointSelector.matchLabels.reserved:host', message: /label source "reserved:"/ });
  t.match(sel('{matchLabels: {app: 5}}'), { field: 'spec.endpointSelector.matchLabels.app', message: /quote numbers/ });
  t.match(sel('{matchLabels: {app: "a b"}}'), { message: /not a valid label value/ });
  t.match(sel('{matchLabels: {"bad key!": a}}'), { message: /invalid label key/ });
  t.match(sel('{matchLabels: {"io.cilium.k8s.namespace.labels.team": a}}'), { message: /namespace labels/ });
  t.match(sel('{matchExpressions: [{key: a, operator: In}]}'), { field: 'spec.endpointSelector.matchExpressions[0].values', message: /must not be empty for In/ });
  t.match(sel('{matchExpressions: [{key: a, operator: Exists, values: [x]}]}'), { message: /must be empty for Exists/ });
  t.match(sel('{matchExpressions: [{key: a, operator: Equals, values: [x]}]}'), { field: 'spec.endpointSelector.matchExpressions[0].operator' });
  t.match(sel('[]'), { field: 'spec.endpointSelector', message: /must be a mapping/ });
  t.match(failure(withSpec('endpointSelector: {}\ningress: [{authentication: {mode: test-always-fail}}]')), { field: 'spec.ingress[0].authentication.mode' });
  t.match(failure(withSpec('endpointSelector: {}\ningress: {fromEndpoints: []}')), { field: 'spec.ingress', message: /must be a list/ });
  t.match(failure(withSpec('endpointSelector: {}\nenableDefaultDeny: {ingress: "no"}')), { field: 'spec.enableDefaultDeny.ingress' });
  t.match(failure('apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n'), { field: 'spec', message: /is required/ });
  t.match(failure('apiVersion: cilium.io/v2\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n'), { field: 'kind' });
  t.match(failure('apiVersion: meshid.io/v1alpha1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec: {endpointSelector: {}}\n'), { field: 'apiVersion' });
  t.match(failure('apiVersion: cilium.io/v2\nkind: AuthPolicy\nmetadata: {name: p}\nspec: {endpointSelector: {}}\n'), { field: 'apiVersion' });
  t.match(failure('apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {endpointSelector: {}}\n'), { field: 'metadata.namespace', message: /cluster-wide/ });
  t.match(failure('apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: P_1}\nspec: {endpointSelector: {}}\n'), { field: 'metadata.name' });
  t.match(failure('apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: Prod}\nspec: {endpointSelector: {}}\n'), { field: 'metadata.namespace' });
});

t.test('input-level errors: bad YAML, no documents, duplicates, oversize; the failing document is named', async (t) => {
  t.match(failure('a: [1, 2'), { field: 'yaml', message: /^document 1: invalid YAML/ });
  t.match(failure('a: 1\na: 2\n'), { field: 'yaml', message: /invalid YAML/ });
  t.match(failure('---\n---\n'), { field: 'policy', message: /no policy documents/ });
  t.match(failure(`${withSpec('endpointSelector: {}')}---\n${withSpec('endpointSelector: {}')}`), { field: 'metadata.name', message: /^document 2: policy prod\/p is also document 1/ });
  t.match(failure(`${withSpec('endpointSelector: {}')}---\n- 1\n`), { field: 'document', message: /^document 2: document must be a mapping/ });
  t.match(failure(' '.repeat(MAX_POLICY_INPUT_BYTES + 1)), { field: 'policy', message: /larger than/ });
  t.match(failure(`${withSpec('endpointSelector: {}')}---\n${withSpec('endpointSelector: {}\negress: [{toCIDR: []}]').replace('name: p', 'name: q')}`),
    { message: /^document 2 \(CiliumNetworkPolicy prod\/q\): spec\.egress\[0\]\.toCIDR is not supported/ });
});

t.test('the seed examples of mutual auth parse', async (t) => {
  const ps = parsePolicyDocuments(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: require-mutual-auth
  namespace: production
spec:
  endpointSelector:
    matchLabels:
      app: payment-service
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: order-service
    authentication:
      mode: required # mTLS authentication required
    toPorts:
    - ports:
      - port: '8080'
        protocol: TCP
---
apiVersion: "cilium.io/v2"
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: enforce-mtls-cluster-wide
spec:
  endpointSelector:
    matchExpressions:
    - key: io.kubernetes.pod.namespace
      operator: NotIn
      values:
      - kube-system
  ingress:
  - fromEndpoints:
    - {}
    authentication:
      mode: required
`);
  t.same(ps[0]!.spec.rules[0]!.ingress, [{
    peers: [{ requirements: [{ key: 'app', operator: 'In', values: ['order-service'] }, { key: NS, operator: 'In', values: ['production'] }] }],
    ports: [{ port: 8080, protocol: 'TCP' }], auth: true,
  }]);
  t.same(ps[1]!.spec.rules[0]!.subject, { requirements: [{ key: NS, operator: 'NotIn', values: ['kube-system'] }] });
});
