// agent/endpoints.ts: which addresses a caller's network namespace has, read
// from /proc/<pid>/net without entering it (the Readiness call's way to find
// the caller's pod).
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { ipv6FromIfInet6, localIpv4FromFibTrie, namespaceAddresses } from '../../agent/endpoints.js';

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
