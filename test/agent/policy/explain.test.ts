import t from 'tap';
import { explainFlow } from '../../../agent/policy/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { ccnp, cnp, ids, inputs, ipOf } from './fixtures.js';

const { pay, order, web, bad, kube } = ids;

const inp = inputs(cnp('pay-in', 'prod', `
  endpointSelector: {matchLabels: {app: pay}}
  description: payments take orders
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: 8080, protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: order}}]
    authentication: {mode: required}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: bad}}]
`) + ccnp('mtls', `
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: order}}]
    toPorts: [{ports: [{port: 8080, protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: 8080, protocol: TCP}]}]
    authentication: {mode: required}
`), [pay, web]);

const q = (local: typeof pay, remote: typeof pay | string, port: number, direction: 'ingress' | 'egress' = 'ingress', protocol: number | string = 'TCP') =>
  explainFlow(inp, { localIp: ipOf(inp, local), remoteIp: typeof remote === 'string' ? remote : ipOf(inp, remote), port, protocol, direction });

t.test('an allowed flow names every allow rule that matches and the ones that require auth', async (t) => {
  const e = q(pay, web, 8080);
  t.match(e, { verdict: 'allow', authRequired: true, reason: 'allowed-by-rule', localIdentity: pay.id, remoteIdentity: web.id, protocol: 6, localEndpointOnThisNode: true });
  t.same(e.decidedBy.map((o) => `${o.policy} ${o.section}[${o.item}]`), ['mtls ingress[1]', 'prod/pay-in ingress[0]']);
  t.same(e.authRequiredBy.map((o) => `${o.policy} ${o.section}[${o.item}]`), ['mtls ingress[1]'], 'auth comes from the cluster-wide rule');
  t.same(e.selectedBy.map((r) => r.policy), ['mtls', 'prod/pay-in']);
  t.equal(e.selectedBy[1]!.description, 'payments take orders');
  t.same(e.datapathEntry?.entry, { verdict: 'allow', authType: 1 });
});

t.test('a denied flow names the deny rule; the datapath entry agrees', async (t) => {
  const e = q(pay, bad, 8080);
  t.match(e, { verdict: 'deny', authRequired: false, reason: 'denied-by-rule' });
  t.same(e.decidedBy.map((o) => `${o.policy} ${o.section}[${o.item}]`), ['prod/pay-in ingressDeny[0]']);
  t.equal(e.datapathEntry?.entry.verdict, 'deny');
});

t.test('a flow no rule allows is default deny; an unknown address has identity 0', async (t) => {
  const e = q(pay, kube, 22);
  t.match(e, { verdict: 'deny', reason: 'default-deny', decidedBy: [] });
  t.same(e.datapathEntry?.key, { localIdentity: pay.id, remoteIdentity: 0, port: 0, proto: 0, direction: 'ingress' }, 'the marker decides');
  const w = q(pay, '203.0.113.9', 8080);
  t.match(w, { remoteIdentity: 0, verdict: 'deny', reason: 'default-deny' });
});

t.test('a direction no rule selects passes, with no datapath entry', async (t) => {
  const e = q(pay, order, 443, 'egress');
  t.match(e, { verdict: 'allow', reason: 'not-selected', selectedBy: [], datapathEntry: null });
});

t.test('order -> pay needs auth on every port: the broad rule\'s auth covers the narrower 8080 allow', async (t) => {
  for (const port of [8080, 9000]) {
    const e = q(pay, order, port);
    t.match(e, { verdict: 'allow', authRequired: true }, `port ${port}`);
    t.same(e.datapathEntry?.entry, { verdict: 'allow', authType: 1 });
  }
});

t.test('explain refuses bad input, naming the field', async (t) => {
  const code = (fn: () => unknown): string | undefined => {
    try { fn(); } catch (err) { if (err instanceof MeshidError) return `${err.code}:${err.field}`; throw err; }
    return undefined;
  };
  t.equal(code(() => explainFlow(inp, { localIp: '10.9.9.9', remoteIp: '10.2.0.10', port: 80, protocol: 'TCP', direction: 'ingress' })), 'not_found:local_ip');
  t.equal(code(() => explainFlow(inp, { localIp: 'pay', remoteIp: '10.2.0.10', port: 80, protocol: 'TCP', direction: 'ingress' })), 'invalid_argument:local_ip');
  t.equal(code(() => explainFlow(inp, { localIp: ipOf(inp, pay), remoteIp: '10.2.0.10', port: 70000, protocol: 'TCP', direction: 'ingress' })), 'invalid_argument:port');
  t.equal(code(() => explainFlow(inp, { localIp: ipOf(inp, pay), remoteIp: '10.2.0.10', port: 80, protocol: 'GRE', direction: 'ingress' })), 'invalid_argument:protocol');
  t.equal(code(() => q(pay, order, 80, 'ingress', 'udp')), undefined, 'protocol names are case-insensitive');
});
