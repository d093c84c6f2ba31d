import t from 'tap';
import { agentId, isDnsLabel, isDnsSubdomain, isK8sName, isLabelKey, isLabelValue, k8sNameProblem, TrustDomain } from '../../spiffe/index.js';
import { serviceAccountOfUser } from '../../server/k8s/index.js';
import { entryForServiceAccount } from '../../server/registration/validate.js';

t.test('DNS-1123 labels and subdomains', async (t) => {
  for (const ok of ['a', 'a-b', '0', 'a'.repeat(63)]) t.ok(isDnsLabel(ok), `label ${ok}`);
  for (const bad of ['', '-a', 'a-', 'A', 'a_b', 'a.b', 'a'.repeat(64)]) t.notOk(isDnsLabel(bad), `not a label: ${JSON.stringify(bad)}`);
  for (const ok of ['a', 'a.b', 'web-1.prod', `${'a'.repeat(63)}.${'b'.repeat(63)}`]) t.ok(isDnsSubdomain(ok), `subdomain ${ok}`);
  for (const bad of ['', '.a', 'a.', 'a..b', 'a_b', 'A.b', '-a.b', 'a.-b', `${'a.'.repeat(126)}ab`]) t.notOk(isDnsSubdomain(bad), `not a subdomain: ${JSON.stringify(bad)}`);
  t.ok(isDnsSubdomain(`${'a.'.repeat(125)}abc`), '253 characters');
});

t.test('each kind takes its Kubernetes rule: namespaces are labels, ServiceAccounts and nodes subdomains', async (t) => {
  t.ok(isK8sName('serviceaccount', 'web.v2'), 'a ServiceAccount name may have dots');
  t.notOk(isK8sName('namespace', 'web.v2'), 'a namespace may not');
  t.ok(isK8sName('node', 'ip-10-0-0-1.ec2.internal'));
  t.notOk(isK8sName('serviceaccount', 'web..v2'), 'an empty label inside a ServiceAccount name');
  t.equal(k8sNameProblem('serviceaccount', 'web'), undefined);
  t.match(k8sNameProblem('serviceaccount', 'Web'), /"Web" is not a Kubernetes ServiceAccount name \(a DNS-1123 subdomain/);
  t.match(k8sNameProblem('namespace', 7), /7 is not a Kubernetes namespace name \(a DNS-1123 label/);
});

t.test('label keys and values', async (t) => {
  for (const ok of ['app', 'app.kubernetes.io/name', 'a_b', 'A.b']) t.ok(isLabelKey(ok), ok);
  for (const bad of ['', '/app', 'bad key!', 'x/', 'Bad_Prefix/app', `${'a'.repeat(64)}`]) t.notOk(isLabelKey(bad), JSON.stringify(bad));
  for (const ok of ['', 'v1', 'a_b.c-d']) t.ok(isLabelValue(ok), JSON.stringify(ok));
  for (const bad of ['a b', '-a', 'a-', 'a'.repeat(64)]) t.notOk(isLabelValue(bad), JSON.stringify(bad));
});

// The places that take ServiceAccount names disagreed before: the endpoint registry took
// "a..b", PSAT user names took "a..b" and "-a", entries refused both. Now all ask one module.
t.test('every place that takes a ServiceAccount name agrees', async (t) => {
  const td = TrustDomain.parse('example.org');
  const parent = agentId(td, 'join_token', 'x', 'y');
  for (const [name, ok] of [['web', true], ['web.v2', true], ['web..v2', false], ['-web', false], ['Web', false]] as const) {
    t.equal(serviceAccountOfUser(`system:serviceaccount:prod:${name}`) !== undefined, ok, `PSAT user ${name}`);
    let entryOk = true;
    try { entryForServiceAccount(td, 'prod', name, parent); } catch { entryOk = false; }
    t.equal(entryOk, ok, `entry for ${name}`);
  }
  t.same(serviceAccountOfUser('system:serviceaccount:meshid:meshid-agent'), { namespace: 'meshid', serviceAccount: 'meshid-agent' });
  t.equal(serviceAccountOfUser('system:serviceaccount:meshid'), undefined, 'no name');
  t.equal(serviceAccountOfUser('system:node:n1'), undefined, 'not a ServiceAccount');
  t.equal(serviceAccountOfUser('system:serviceaccount:a.b:web'), undefined, 'a namespace with a dot');
});
