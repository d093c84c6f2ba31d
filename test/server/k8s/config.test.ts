import t from 'tap';
import { kubernetesConfigSchema } from '../../../server/k8s/index.js';
import { kubernetesAgentConfigSchema } from '../../../agent/workloadattestor/k8s.js';

t.test('the kubernetes config sections have the documented defaults', async (t) => {
  const c = kubernetesConfigSchema.parse({});
  t.equal(c.enabled, false);
  t.equal(c.psat_audience, 'meshid-server');
  t.same(c.allowed_agent_service_accounts, ['meshid:meshid-agent']);
  t.same(c.leader_election, { enabled: true, namespace: 'meshid', lease_name: 'meshid-server-controller', lease_duration: 15, renew_deadline: 10, retry_period: 2 });
  t.same(c.bundle_configmap, { enabled: true, namespace: 'meshid', name: 'meshid-bundle' });
  t.equal(c.crd_discovery_interval, 60);
  const a = kubernetesAgentConfigSchema.parse({ enabled: true, cluster: 'prod' });
  t.equal(a.token_path, '/var/run/secrets/tokens/meshid-agent');
  t.equal(a.pod_source, 'apiserver');
  t.equal(a.pending_retry, 0.5);
});

t.test('the kubernetes config section refuses bad values, naming the key', async (t) => {
  const issues = (input: unknown): string[] => {
    const r = kubernetesConfigSchema.safeParse(input);
    return r.success ? [] : r.error.issues.map((i) => i.path.join('.'));
  };
  t.same(issues({ cluster: 'Prod_EU' }), ['cluster']);
  t.same(issues({ allowed_agent_service_accounts: ['meshid-agent'] }), ['allowed_agent_service_accounts.0']);
  t.same(issues({ allowed_agent_service_accounts: [] }), ['allowed_agent_service_accounts']);
  t.same(issues({ leader_election: { lease_duration: '10s', renew_deadline: '10s', retry_period: '2s' } }), ['leader_election.renew_deadline']);
  t.same(issues({ leader_election: { lease_duration: '10s', renew_deadline: '5s', retry_period: '5s' } }), ['leader_election.retry_period']);
  t.same(issues({ leader_election: { lease_duration: 'soon' } }), ['leader_election.lease_duration']);
  t.same(issues({ unknown_key: 1 }), ['']);
});
