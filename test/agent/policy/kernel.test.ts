/**
 * PolicyMapSync on a real kernel hash map with meshid_policy's layout (made
 * with bpftool, no programs): bpf's PolicyMap is a PolicyMapWriter as it is,
 * and what the sync writes and later adopts round-trips through the kernel.
 * The datapath's own lookups are tested in test/bpf.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PolicyMap } from '../../../bpf/index.js';
import { AgentState } from '../../../agent/sync/state.js';
import { PolicyMapSync, type PolicyMapWriter } from '../../../agent/policy/index.js';
import { TrustDomain } from '../../../spiffe/index.js';
import { ids, mapOf, payClusterSnapshot, TCP, update, verdictOf } from './fixtures.js';

const { pay, order, web } = ids;

t.test('the sync writes the compiled entries into a kernel map, and a new sync adopts them without rewriting', async (t) => {
  const pinDir = `/sys/fs/bpf/meshid-poltest-${process.pid}`;
  mkdirSync(pinDir, { recursive: true });
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  execFileSync('bpftool', ['map', 'create', join(pinDir, 'meshid_policy'), 'type', 'hash', 'key', '12', 'value', '4', 'entries', '1024', 'name', 'meshid_policy']);
  // every write is followed by a bump of the fast path's generation (bpf/README.md), which lives beside it
  execFileSync('bpftool', ['map', 'create', join(pinDir, 'meshid_gen'), 'type', 'array', 'key', '4', 'value', '8', 'entries', '1', 'name', 'meshid_gen']);
  const kernel = PolicyMap.open(pinDir);
  t.teardown(() => kernel.close());
  const writer: PolicyMapWriter = kernel;

  const state = new AgentState(TrustDomain.parse('example.org'));
  state.apply(payClusterSnapshot());
  const first = new PolicyMapSync({ state, map: writer });
  first.start();
  first.stop();
  const inKernel = mapOf(kernel.entries());
  t.equal(inKernel.size, first.compiled!.entries.length);
  t.equal(verdictOf(inKernel, pay.id, order.id, 8080, TCP, 'ingress'), 'allow+auth');
  t.equal(verdictOf(inKernel, pay.id, order.id, 8081, TCP, 'ingress'), 'deny');
  t.equal(verdictOf(inKernel, pay.id, web.id, 80, TCP, 'egress'), 'deny');
  t.equal(verdictOf(inKernel, pay.id, order.id, 80, TCP, 'egress'), 'deny', 'a deny rule selects, and so turns on default deny, as in Cilium');

  let writes = 0;
  const counting: PolicyMapWriter = {
    upsert: (k, e) => { writes++; kernel.upsert(k, e); },
    delete: (k) => { writes++; return kernel.delete(k); },
    entries: () => kernel.entries(),
  };
  const second = new PolicyMapSync({ state, map: counting });
  second.start();
  t.teardown(() => second.stop());
  t.equal(writes, 0, 'an agent restart with the same state writes nothing');
  state.apply(update({ removed_policies: ['prod/pay'] }));
  t.same(kernel.entries(), [], 'the policy going removes every entry from the kernel map');
});
