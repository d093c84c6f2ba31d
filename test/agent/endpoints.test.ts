// agent/endpoints.ts: which addresses a caller's network namespace has, read
// from /proc/<pid>/net without entering it (the Readiness call's way to find
// the caller's pod), and what an endpoint's readiness waits for.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { ipv6FromIfInet6, LocalEndpoints, localIpv4FromFibTrie, namespaceAddresses } from '../../agent/endpoints.js';
import type { DatapathManager } from '../../agent/datapath/index.js';
import type { NodeMembership } from '../../agent/node/index.js';
import { FailedPrecondition } from '../../spiffe/index.js';
import { AgentState } from '../../agent/sync/state.js';
import { makeCa, snapshot } from './mutualauth/fixtures.js';
import { AuthPlanner } from '../../agent/mutualauth/index.js';

// /proc/net/fib_trie of a namespace with 10.77.1.5/32 and 10.78.0.1/24 (shortened: one table, and of loopback only 127.0.0.1)
const FIB_TRIE = `Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.76.0.0/14 2 0 2
        |-- 10.77.1.5
           /32 host LOCAL
        +-- 10.78.0.0/24 2 0 2
           +-- 10.78.0.0/31 1 0 0
              |-- 10.78.0.0
                 /24 link UNICAST
              |-- 10.78.0.1
                 /32 host LOCAL
           |-- 10.78.0.255
              /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
`;
const IF_INET6 = `00000000000000000000000000000001 01 80 10 80       lo
fd000001000000000000000000000005 03 80 00 82       d0
20010db8000000000001000000000000 03 40 00 80       d0
fe80000000000000a4e77afffe79bad7 02 40 20 c0       d1
`;

t.test('host-local IPv4 addresses from fib_trie: not the subnet, broadcast or loopback entries', async (t) => {
  t.same(localIpv4FromFibTrie(FIB_TRIE).sort(), ['10.77.1.5', '10.78.0.1']);
  t.same(localIpv4FromFibTrie(''), []);
});

t.test('IPv6 addresses from if_inet6 in RFC 5952 form, without loopback and link-local', async (t) => {
  t.same(ipv6FromIfInet6(IF_INET6), ['fd00:1::5', '2001:db8:0:0:1::']);
});

t.test('a process in another network namespace: its addresses, read from /proc (root)', async (t) => {
  const ns = `mshid-${process.pid}-ep`;
  const ip = (...a: string[]) => execFileSync('ip', a);
  ip('netns', 'add', ns);
  t.teardown(() => { try { ip('netns', 'del', ns); } catch { /* gone */ } });
  ip('-n', ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1');
  ip('-n', ns, 'addr', 'add', '10.79.3.4/32', 'dev', 'p0');
  ip('-n', ns, 'link', 'set', 'p0', 'up');
  const child = spawn('ip', ['netns', 'exec', ns, 'sleep', '30'], { stdio: 'ignore' });
  t.teardown(() => child.kill());
  // `ip netns exec` execs sleep in place: once the pid's namespace differs from ours, it is in
  const ours = execFileSync('readlink', ['/proc/self/ns/net']).toString();
  for (const end = Date.now() + 5000; Date.now() < end;) {
    try { if (execFileSync('readlink', [`/proc/${child.pid}/ns/net`]).toString() !== ours) break; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 10));
  }
  t.same(namespaceAddresses(child.pid!), ['10.79.3.4']);
  t.notOk(namespaceAddresses(process.pid).includes('10.79.3.4'), 'not ours');
  t.same(namespaceAddresses(999_999_999), [], 'a process that does not exist has none');
});

t.test('readiness: the identity, and every auth entry the pairs need here, own policies\' and the mirrored ones of other nodes\' policies', async (t) => {
  // node 1 (here) hosts 101 at 10.0.1.1; node 2 hosts 201; node 3 hosts 301.
  // Our policies require (101 → 201); node 3's require (301 → 101); node 2's require nothing of 101.
  const state = new AgentState(makeCa().td);
  state.apply(snapshot(1, makeCa()));
  const entries = new Set<string>();
  const authMap = { get: (p: { localIdentity: number; remoteIdentity: number; remoteNodeId: number; authType: number }) => (entries.has(`${p.localIdentity}/${p.remoteIdentity}/${p.remoteNodeId}`) ? 1n : undefined) };
  const pairs: Record<number, { localIdentity: number; remoteIdentity: number; authType: number }[]> = {
    1: [{ localIdentity: 101, remoteIdentity: 201, authType: 1 }],
    2: [{ localIdentity: 201, remoteIdentity: 102, authType: 1 }],
    3: [{ localIdentity: 301, remoteIdentity: 101, authType: 1 }],
  };
  const membership = { endpoints: [] } as unknown as NodeMembership;
  // the planner's pairs per node are given; where identities are hosted it reads from the state
  const planner = new AuthPlanner({ state, ownPairs: () => pairs[1] });
  planner.pairsOf = (n) => pairs[n] ?? [];
  const eps = new LocalEndpoints({ state, membership, authMap, planner });
  const s = eps.status('10.0.1.1');
  t.equal(s.identity, 101);
  t.notOk(s.ready);
  t.same(s.auth_entries, { needed: 2, present: 0 }, 'ours with node 2, and the mirror of node 3\'s requirement');
  t.match(s.waiting_for.join('\n'), /a\/web \(101\) ↔ b\/db \(201\) with node node-b/);
  t.match(s.waiting_for.join('\n'), /a\/web \(101\) ↔ c\/x \(301\) with node node-c/);
  entries.add('101/201/2');
  t.notOk(eps.status('10.0.1.1').ready, 'one of two');
  entries.add('101/301/3');
  const ready = eps.status('10.0.1.1');
  t.ok(ready.ready, 'ready with both');
  t.same(ready.waiting_for, []);
  t.match(eps.status('10.0.1.2').waiting_for.join('\n'), /a\/api \(102\) ↔ b\/db \(201\) with node node-b/, 'node 2 requires (201 → 102): 102 waits for its mirror');
  t.same(eps.status('10.0.1.2').auth_entries, { needed: 1, present: 0 });
  t.throws(() => eps.status('10.0.2.1'), { code: 'not_found' }, 'another node\'s endpoint is not ours to report');
  t.same(eps.callerReadiness(999_999_999).endpoints, [], 'a caller whose namespace has none of our endpoints');
});

t.test('where the Kubernetes API owns the endpoints, add and remove are refused before any interface is touched', async (t) => {
  const state = new AgentState(makeCa().td);
  state.apply(snapshot(1, makeCa()));
  const touched: string[] = [];
  const membership = {
    endpoints: [],
    refuseWhenOwnedElsewhere() { throw new FailedPrecondition('this node\'s endpoints come from the Kubernetes API', 'endpoints'); },
  } as unknown as NodeMembership;
  const datapath = {
    attachInterface: (i: string) => touched.push(`attach ${i}`), detachInterface: (i: string) => { touched.push(`detach ${i}`); return true; },
    isAttached: () => false, discoveredInterfaces: () => new Map(),
  } as unknown as DatapathManager;
  const eps = new LocalEndpoints({ state, membership, datapath, planner: new AuthPlanner({ state, ownPairs: () => [] }) });
  await t.rejects(eps.add({ name: 'web', ip: '10.0.1.9', interface: 'lxc-pod' }), { code: 'failed_precondition', field: 'endpoints' });
  await t.rejects(eps.remove('10.0.1.1'), { code: 'failed_precondition' });
  t.same(touched, [], 'no attach, no detach');
});
