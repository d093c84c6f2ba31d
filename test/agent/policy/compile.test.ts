import t from 'tap';
import { compileState, selectorMatches, type AuthRequirement } from '../../../agent/policy/index.js';
import { ccnp, cnp, ICMP, ids, inputs, mapOf, SCTP, TCP, UDP, verdictOf } from './fixtures.js';
import { decodePolicyMsg } from '../../../agent/sync/index.js';

const { pay, order, web, orderDev, kube, bad } = ids;
const pairs = (ps: AuthRequirement[]): string[] => ps.map((p) => `${p.localIdentity}->${p.remoteIdentity}`);

t.test('a selected direction gets a deny marker; the other direction has no entries and passes', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  `), [pay]));
  t.same(c.errors, []);
  t.same(c.localIdentities, [pay.id]);
  t.same(c.entries.find((e) => e.key.remoteIdentity === 0 && e.key.port === 0 && e.key.proto === 0),
    { key: { localIdentity: pay.id, remoteIdentity: 0, port: 0, proto: 0, direction: 'ingress' }, entry: { verdict: 'deny', authType: 0 } });
  t.notOk(c.entries.some((e) => e.key.direction === 'egress'), 'egress is not selected');
  const m = mapOf(c.entries);
  t.equal(verdictOf(m, pay.id, order.id, 8080, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, order.id, 8080, UDP, 'ingress'), 'deny', 'only TCP was allowed');
  t.equal(verdictOf(m, pay.id, order.id, 9090, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, web.id, 8080, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, 0, 8080, TCP, 'ingress'), 'deny', 'an address with no identity');
  t.equal(verdictOf(m, pay.id, web.id, 80, TCP, 'egress'), 'pass');
  t.same(c.authPairs, []);
});

t.test('an empty rule (- {}) only turns on default deny; an empty section ([]) does nothing', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {}
    ingress:
    - {}
    egress: []
  `), [pay]));
  t.same(c.entries, [{ key: { localIdentity: pay.id, remoteIdentity: 0, port: 0, proto: 0, direction: 'ingress' }, entry: { verdict: 'deny', authType: 0 } }]);
});

t.test('allows of several rules and policies add up; ANY expands to TCP, UDP and SCTP; no toPorts is every port and protocol', async (t) => {
  const c = compileState(inputs(cnp('a', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      toPorts: [{ports: [{port: 80}]}]
  `) + cnp('b', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: 443, protocol: TCP}]}]
    - fromEndpoints: [{matchLabels: {app: bad}}]
  `), [pay]));
  const m = mapOf(c.entries);
  for (const proto of [TCP, UDP, SCTP]) t.equal(verdictOf(m, pay.id, order.id, 80, proto, 'ingress'), 'allow', `order:80/${proto}`);
  t.equal(verdictOf(m, pay.id, order.id, 0, ICMP, 'ingress'), 'deny', 'ANY is not ICMP');
  t.equal(verdictOf(m, pay.id, order.id, 443, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, web.id, 443, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, web.id, 80, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, bad.id, 12345, UDP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, bad.id, 0, ICMP, 'ingress'), 'allow');
});

t.test('deny rules win over allows, in whichever policy and at whichever specificity', async (t) => {
  const c = compileState(inputs(cnp('allow-all-ns', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{}]
  `) + cnp('deny', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingressDeny:
    - fromEndpoints: [{matchLabels: {app: bad}}]
    - toPorts: [{ports: [{port: 22, protocol: TCP}]}]
  `) + cnp('allow-bad-80', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: bad}}]
      toPorts: [{ports: [{port: 80, protocol: TCP}]}]
  `), [pay]));
  const m = mapOf(c.entries);
  t.equal(verdictOf(m, pay.id, order.id, 80, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, order.id, 22, TCP, 'ingress'), 'deny', 'the wildcard-peer port deny reaches an identity allowed on every port');
  t.equal(verdictOf(m, pay.id, order.id, 22, UDP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, bad.id, 80, TCP, 'ingress'), 'deny', 'a port allow does not undo a deny of every port');
  t.equal(verdictOf(m, pay.id, bad.id, 443, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, 0, 22, TCP, 'ingress'), 'deny');
});

t.test('an auth requirement of a broader rule reaches the narrower entries it covers, and not the other way', async (t) => {
  const broadAuth = compileState(inputs(cnp('a', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      toPorts: [{ports: [{port: 80, protocol: TCP}]}]
    - fromEndpoints: [{matchLabels: {app: order}}]
      authentication: {mode: required}
  `), [pay]));
  let m = mapOf(broadAuth.entries);
  t.equal(verdictOf(m, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth', 'port 80 needs auth too');
  t.equal(verdictOf(m, pay.id, order.id, 443, TCP, 'ingress'), 'allow+auth');
  t.notOk(broadAuth.entries.some((e) => e.key.remoteIdentity === order.id && e.entry.authType === 0), 'no entry of order without auth');

  const narrowAuth = compileState(inputs(cnp('a', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      toPorts: [{ports: [{port: 80, protocol: TCP}]}]
      authentication: {mode: required}
    - fromEndpoints: [{matchLabels: {app: order}}]
  `), [pay]));
  m = mapOf(narrowAuth.entries);
  t.equal(verdictOf(m, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth');
  t.equal(verdictOf(m, pay.id, order.id, 80, UDP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, order.id, 443, TCP, 'ingress'), 'allow');

  // The broad rule is a wildcard-peer one (toPorts only) and the narrow one names the remote.
  const wildcardAuth = compileState(inputs(cnp('a', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - toPorts: [{ports: [{port: 80, protocol: TCP}]}]
      authentication: {mode: required}
    - fromEndpoints: [{matchLabels: {app: order}}]
  `), [pay]));
  m = mapOf(wildcardAuth.entries);
  t.equal(verdictOf(m, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth', 'the remote-specific entry must not skip the port rule\'s auth');
  t.equal(verdictOf(m, pay.id, order.id, 81, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, web.id, 80, TCP, 'ingress'), 'allow+auth');
  t.equal(verdictOf(m, pay.id, web.id, 81, TCP, 'ingress'), 'deny');
});

t.test('{} in a namespaced policy is every identity of that namespace, expanded; a selector naming the namespace leaves it', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{}]
    - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": kube-system}}]
      toPorts: [{ports: [{port: 53, protocol: UDP}]}]
  `), [pay]));
  t.notOk(c.entries.some((e) => e.key.remoteIdentity === 0 && e.entry.verdict === 'allow'), 'no any-remote allow');
  const m = mapOf(c.entries);
  for (const i of [pay, order, web, bad]) t.equal(verdictOf(m, pay.id, i.id, 80, TCP, 'ingress'), 'allow', `prod identity ${i.id}`);
  t.equal(verdictOf(m, pay.id, orderDev.id, 80, TCP, 'ingress'), 'deny', 'dev is another namespace');
  t.equal(verdictOf(m, pay.id, kube.id, 53, UDP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, kube.id, 80, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, 0, 80, TCP, 'ingress'), 'deny');
});

t.test('{} in a cluster-wide policy is every identity of every namespace but not unknown addresses; toPorts alone is every peer', async (t) => {
  const c = compileState(inputs(ccnp('all', `
    endpointSelector:
      matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}]
    ingress:
    - fromEndpoints: [{}]
      authentication: {mode: required}
    - toPorts: [{ports: [{port: 8080, protocol: TCP}]}]
  `), [pay, kube]));
  const m = mapOf(c.entries);
  for (const i of Object.values(ids)) t.equal(verdictOf(m, pay.id, i.id, 80, TCP, 'ingress'), 'allow+auth', `identity ${i.id}`);
  t.equal(verdictOf(m, pay.id, 0, 80, TCP, 'ingress'), 'deny', 'no identity: not an endpoint of the cluster');
  t.equal(verdictOf(m, pay.id, 0, 8080, TCP, 'ingress'), 'allow', 'the L4-only rule admits any address');
  t.same(c.entries.filter((e) => e.key.remoteIdentity === 0).map((e) => [e.key.port, e.key.proto, e.entry.verdict]),
    [[0, 0, 'deny'], [8080, TCP, 'allow']], 'remote 0 is used only for the L4-only rule and the marker');
  t.equal(verdictOf(m, pay.id, order.id, 8080, TCP, 'ingress'), 'allow+auth', 'identities still need auth on 8080 (both rules match)');
  t.equal(verdictOf(m, kube.id, order.id, 80, TCP, 'ingress'), 'pass', 'kube-system is not selected');
  t.same(pairs(c.authPairs), Object.values(ids).map((i) => `${pay.id}->${i.id}`), 'pay needs auth with every identity, itself included');
});

t.test('cluster-wide {} with auth is written once with remote 0, not once per identity, when that drops unknown addresses alike', async (t) => {
  const c = compileState(inputs(ccnp('mtls', `
    endpointSelector: {}
    ingress:
    - fromEndpoints: [{}]
      authentication: {mode: required}
    egress:
    - toEndpoints: [{}]
      authentication: {mode: required}
    - toEndpoints: [{matchLabels: {app: dns}}]
      toPorts: [{ports: [{port: 53, protocol: UDP}]}]
  `), [pay, web]));
  t.same(c.entries.filter((e) => e.key.localIdentity === pay.id).map((e) => `${e.key.direction} ${e.key.remoteIdentity} ${e.key.port}/${e.key.proto} ${e.entry.verdict}/${e.entry.authType}`), [
    'ingress 0 0/0 allow/1',
    'egress 0 0/0 allow/1',
  ], 'one marker per direction carries the allow with auth; dns:53 needs auth anyway and adds nothing');
  const m = mapOf(c.entries);
  for (const i of Object.values(ids)) t.equal(verdictOf(m, pay.id, i.id, 80, TCP, 'ingress'), 'allow+auth', `identity ${i.id}`);
  t.equal(verdictOf(m, pay.id, 0, 80, TCP, 'ingress'), 'allow+auth', 'an unknown address meets auth, which it can never pass');
  t.equal(pairs(c.authPairs).length, 2 * Object.values(ids).length, 'still a pair with every identity');
});

t.test('matchExpressions: In, NotIn (an absent key matches), Exists, DoesNotExist', async (t) => {
  const labels = { app: 'web', tier: 'front' };
  const sel = (key: string, operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist', values: string[] = []): boolean =>
    selectorMatches({ requirements: [{ key, operator, values }] }, labels);
  t.ok(sel('app', 'In', ['api', 'web']));
  t.notOk(sel('app', 'In', ['api']));
  t.notOk(sel('zone', 'In', ['a']));
  t.ok(sel('app', 'NotIn', ['api']));
  t.notOk(sel('app', 'NotIn', ['web']));
  t.ok(sel('zone', 'NotIn', ['a']), 'absent key');
  t.ok(sel('tier', 'Exists'));
  t.notOk(sel('zone', 'Exists'));
  t.ok(sel('zone', 'DoesNotExist'));
  t.notOk(sel('tier', 'DoesNotExist'));
  t.ok(selectorMatches({ requirements: [] }, labels), 'no requirement selects all');

  const c = compileState(inputs(ccnp('expr', `
    endpointSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}
    egress:
    - toEndpoints:
      - matchExpressions:
        - {key: app, operator: In, values: [order, web]}
        - {key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [dev]}
    - toEndpoints: [{matchExpressions: [{key: tier, operator: Exists}]}]
      toPorts: [{ports: [{port: 9000, protocol: TCP}]}]
  `), [pay, web]));
  t.same(c.localIdentities, [pay.id, web.id]);
  t.notOk(c.entries.some((e) => e.key.localIdentity === web.id), 'web has a tier label, so it is not selected');
  const m = mapOf(c.entries);
  t.equal(verdictOf(m, pay.id, order.id, 1, TCP, 'egress'), 'allow');
  t.equal(verdictOf(m, pay.id, web.id, 1, TCP, 'egress'), 'allow');
  t.equal(verdictOf(m, pay.id, orderDev.id, 1, TCP, 'egress'), 'deny', 'NotIn dev');
  t.equal(verdictOf(m, pay.id, kube.id, 1, TCP, 'egress'), 'deny');
});

t.test('a peer selector that matches no identity writes nothing but the marker', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: nobody}}]
      authentication: {mode: required}
  `), [pay]));
  t.same(c.entries.map((e) => e.key.remoteIdentity), [0]);
  t.same(c.authPairs, []);
});

t.test('auth-required pairs come from ingress and egress rules, for allowed flows only', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      authentication: {mode: required}
    - fromEndpoints: [{matchLabels: {app: web}}]
    egress:
    - toEndpoints: [{matchLabels: {app: dns, "k8s:io.kubernetes.pod.namespace": kube-system}}]
      toPorts: [{ports: [{port: 53}]}]
      authentication: {mode: required}
    - toEndpoints: [{matchLabels: {app: bad}}]
      authentication: {mode: required}
    egressDeny:
    - toEndpoints: [{matchLabels: {app: bad}}]
  `) + cnp('web', 'prod', `
    endpointSelector: {matchLabels: {app: web}}
    egress:
    - toEndpoints: [{matchLabels: {app: pay}}]
      authentication: {mode: required}
  `), [pay, web]));
  t.same(pairs(c.authPairs), [`${pay.id}->${order.id}`, `${pay.id}->${kube.id}`, `${web.id}->${pay.id}`],
    'bad is denied, so it needs no auth; web->pay comes from web\'s egress');
  const m = mapOf(c.entries);
  t.equal(verdictOf(m, pay.id, kube.id, 53, UDP, 'egress'), 'allow+auth');
  t.equal(verdictOf(m, pay.id, bad.id, 53, UDP, 'egress'), 'deny');
});

t.test('enableDefaultDeny false selects without default deny: only the deny rules bite', async (t) => {
  const c = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    enableDefaultDeny: {ingress: false}
    ingressDeny:
    - fromEndpoints: [{matchLabels: {app: bad}}]
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
      authentication: {mode: required}
  `), [pay]));
  const m = mapOf(c.entries);
  t.equal(verdictOf(m, pay.id, web.id, 80, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, 0, 80, TCP, 'ingress'), 'allow');
  t.equal(verdictOf(m, pay.id, bad.id, 80, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(m, pay.id, order.id, 80, TCP, 'ingress'), 'allow+auth');

  const both = compileState(inputs(cnp('p', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    enableDefaultDeny: {ingress: false}
    ingressDeny:
    - fromEndpoints: [{matchLabels: {app: bad}}]
  `) + cnp('q', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
  `), [pay]));
  t.equal(verdictOf(mapOf(both.entries), pay.id, web.id, 80, TCP, 'ingress'), 'deny', 'another policy turns default deny on');
});

t.test('only identities with an endpoint on this node get entries', async (t) => {
  const yaml = cnp('p', 'prod', `
    endpointSelector: {}
    ingress:
    - fromEndpoints: [{matchLabels: {app: order}}]
  `);
  const c = compileState(inputs(yaml, [pay]));
  t.same([...new Set(c.entries.map((e) => e.key.localIdentity))], [pay.id]);
  const none = compileState({ ...inputs(yaml, [pay]), localNodeId: 0 });
  t.same(none.entries, [], 'before the snapshot names this node, nothing is local');
});

t.test('a policy whose spec does not decode is left out and reported; the others still compile', async (t) => {
  const inp = inputs(cnp('good', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress: [{fromEndpoints: [{matchLabels: {app: order}}]}]
  `), [pay]);
  const policies = new Map(inp.policies);
  policies.set('prod/broken', decodePolicyMsg({ namespace: 'prod', name: 'broken', kind: 'CiliumNetworkPolicy', spec_json: '{"format":"meshid.policy/v1","rules":[{"subject":{}}]}' }));
  policies.set('prod/notjson', decodePolicyMsg({ namespace: 'prod', name: 'notjson', kind: 'CiliumNetworkPolicy', spec_json: '{' }));
  const c = compileState({ ...inp, policies });
  t.same(c.errors.map((e) => e.policy), ['prod/broken', 'prod/notjson']);
  t.match(c.errors[0]!.message, /spec\.rules\.0\.subject\.requirements/);
  t.equal(verdictOf(mapOf(c.entries), pay.id, order.id, 80, TCP, 'ingress'), 'allow');
});

t.test('the compile is deterministic and independent of the order policies arrive in', async (t) => {
  const a = cnp('a', 'prod', `
    endpointSelector: {matchLabels: {app: pay}}
    ingress: [{fromEndpoints: [{matchLabels: {app: order}}], toPorts: [{ports: [{port: 80}]}]}]
  `);
  const b = cnp('b', 'prod', `
    endpointSelector: {}
    ingressDeny: [{fromEndpoints: [{matchLabels: {app: bad}}]}]
  `);
  t.same(compileState(inputs(a + b, [pay, web])), compileState(inputs(b + a, [pay, web])));
});
