/**
 * For random policies, the entry the datapath's most-specific lookup finds in
 * the compiled map decides every flow exactly as the rules do, and the
 * auth-required pairs are exactly the pairs with some flow that needs auth.
 */
import t from 'tap';
import fc from 'fast-check';
import {
  compilePolicies, policyForLabels, decideFlow,
  type DecodedPolicy, type PolicySpec,
} from '../../../agent/policy/index.js';
import { mapOf } from './fixtures.js';

type Spec = PolicySpec;
type Rule = Spec['rules'][number];
type Peer = NonNullable<Rule['ingress']>[number];

const IDENTITIES = new Map<number, { labels: Record<string, string> }>([
  [300, { labels: { app: 'a', ns: 'x' } }],
  [301, { labels: { app: 'b', ns: 'x' } }],
  [302, { labels: { app: 'c', ns: 'y' } }],
  [303, { labels: { app: 'a', ns: 'y', tier: 't' } }],
  [304, { labels: { ns: 'x' } }],
]);
const LOCALS = [300, 303];
const PORTS = [0, 80, 443, 8080];
const PROTOS = [6, 17, 132, 1];
const REMOTES = [0, ...IDENTITIES.keys()];

const requirement = fc.oneof(
  fc.record({ key: fc.constantFrom('app', 'ns', 'tier'), operator: fc.constantFrom('In' as const, 'NotIn' as const), values: fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'x', 'y', 't'), { minLength: 1, maxLength: 2 }) }),
  fc.record({ key: fc.constantFrom('app', 'tier'), operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const), values: fc.constant([] as string[]) }),
);
const selector = fc.record({ requirements: fc.array(requirement, { maxLength: 2 }) });
const portSpec = fc.record({ port: fc.constantFrom(0, 80, 443), protocol: fc.constantFrom('TCP' as const, 'UDP' as const, 'SCTP' as const) });
const peer = (deny: boolean): fc.Arbitrary<Peer> => fc.record({
  peers: fc.oneof(fc.constant('all' as const), fc.array(selector, { maxLength: 2 })),
  ports: fc.oneof(fc.constant('all' as const), fc.array(portSpec, { minLength: 1, maxLength: 3 })),
  auth: deny ? fc.constant(false) : fc.boolean(),
});
const section = (deny: boolean): fc.Arbitrary<Peer[] | undefined> => fc.option(fc.array(peer(deny), { minLength: 1, maxLength: 3 }), { nil: undefined });
const rule: fc.Arbitrary<Rule> = fc.record({
  subject: selector,
  ingress: section(false), ingressDeny: section(true), egress: section(false), egressDeny: section(true),
  defaultDeny: fc.record({ ingress: fc.boolean(), egress: fc.boolean() }),
}).map((r) => {
  const out: Rule = { subject: r.subject, defaultDeny: r.defaultDeny };
  for (const s of ['ingress', 'ingressDeny', 'egress', 'egressDeny'] as const) if (r[s]) out[s] = r[s];
  return out;
});
const policies = fc.array(fc.array(rule, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }).map((specs) =>
  specs.map((rules, i): DecodedPolicy => ({ id: `/p${i}`, namespace: '', name: `p${i}`, kind: 'CiliumClusterwideNetworkPolicy', spec: { format: 'meshid.policy/v1', rules } })));

t.test('the compiled map decides every flow as the rules do, and the auth pairs are the flows that need auth', async (t) => {
  let checked = 0;
  fc.assert(fc.property(policies, (ps) => {
    const compiled = compilePolicies({ policies: ps, identities: IDENTITIES, localIdentities: LOCALS });
    const m = mapOf(compiled.entries);
    if (m.size !== compiled.entries.length) throw new Error('duplicate keys in the compile');
    const needAuth = new Set<string>();
    for (const local of LOCALS) {
      for (const direction of ['ingress', 'egress'] as const) {
        const dp = policyForLabels({ policies: ps, identities: IDENTITIES }, IDENTITIES.get(local)!.labels, direction);
        for (const remote of REMOTES) for (const port of PORTS) for (const proto of PROTOS) {
          const hit = m.lookup(local, remote, port, proto, direction);
          const flow = `${local}->${remote} ${direction} ${port}/${proto}`;
          if (dp.selectedBy.length === 0) {
            if (hit) throw new Error(`${flow}: not selected, yet the map has ${JSON.stringify(hit)}`);
            continue;
          }
          const want = decideFlow(dp, remote, port, proto).entry;
          if (!hit) throw new Error(`${flow}: selected, yet no entry (no marker)`);
          // An address with no identity is never authenticated: allow with auth drops it like a deny.
          const outcome = (e: { verdict: string; authType: number }): string => (remote === 0 && (e.authType || e.verdict === 'deny') ? 'drop' : `${e.verdict}/${e.authType}`);
          if (outcome(hit.entry) !== outcome(want)) {
            throw new Error(`${flow}: map says ${JSON.stringify(hit)}, rules say ${JSON.stringify(want)}`);
          }
          if (remote !== 0 && want.verdict === 'allow' && want.authType) needAuth.add(`${local}->${remote}`);
          checked++;
        }
      }
    }
    const got = compiled.authPairs.map((p) => `${p.localIdentity}->${p.remoteIdentity}`);
    if (JSON.stringify(got.sort()) !== JSON.stringify([...needAuth].sort())) {
      throw new Error(`auth pairs ${JSON.stringify(got)}, flows needing auth ${JSON.stringify([...needAuth])}`);
    }
  }), { numRuns: 400 });
  t.ok(checked > 10_000, `checked ${checked} flows`);
});
