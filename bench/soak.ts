/**
 * The soak: meshid-server and meshid-agent (the real binaries) under churn for
 * a long while, checked every second that they keep answering. 1,000 entries
 * with a 30 s X509-SVID TTL (every SVID renewed about every 15 s), live
 * FetchX509SVID readers, readers that stop reading (reset by the agent and
 * opened again), a new stream, /live and /ready every second, and JWT-SVIDs.
 * Traffic stays on loopback and a Unix socket; it ends by itself.
 *
 * With --servers N (N > 1): N servers on one PostgreSQL (a real cluster started
 * here, fsync on), the agent given every address, and every --kill-every
 * minutes one server (in turn) SIGKILLed and started again 10 s later, so the
 * agent keeps moving while the checks go on.
 *
 *   node dist/bench/soak.js [--minutes 60] [--entries 1000] [--ttl 30] [--servers 3 --kill-every 3]
 */
import { connect } from 'node:http2';
import { credentials } from '@grpc/grpc-js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWorkloadProto, workloadCallMetadata, type X509SVIDResponseMessage } from '../agent/workloadapi/index.js';
import { parseCertificate, splitConcatenatedDer } from '../spiffe/index.js';
import { Daemon, freePort, run } from '../test/helpers/process.js';
import { PostgresCluster } from '../test/helpers/postgres.js';
import { median, percentile } from './stats.js';

const arg = (name: string, dflt: number): number => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const MINUTES = arg('minutes', 60);
const ENTRIES = arg('entries', 1000);
const TTL = arg('ttl', 30);
const SERVERS = arg('servers', 1);
const KILL_EVERY_MIN = arg('kill-every', 3);
const SERVED = 20; // entries that match this process; the rest are signed and renewed for nobody here
const uid = process.getuid!();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-soak-'));
  const pg = SERVERS > 1 ? await PostgresCluster.start({ fast: false }) : undefined;
  const url = pg ? await pg.createDatabase('meshid') : undefined;
  const ports = await Promise.all(Array.from({ length: SERVERS }, async () => ({ agent: await freePort(), admin: await freePort() })));
  const startServer = (i: number): Daemon => new Daemon('meshid-server', ['run', '--data-dir', join(dir, `server${i}`), '--trust-domain', 'example.org',
    '--bind', `127.0.0.1:${ports[i]!.agent}`, '--admin', `127.0.0.1:${ports[i]!.admin}`, ...(url ? ['--datastore', url] : [])]);
  const servers = ports.map((_, i) => startServer(i));
  let agent: Daemon | undefined;
  try {
    for (const d of servers) await d.waitFor(/meshid-server started/, 60_000);
    const admin = `http://127.0.0.1:${ports[0]!.admin}`;
    const token = readFileSync(join(dir, 'server0', 'admin.token'), 'utf8').trim();
    const agentId = 'spiffe://example.org/meshid/agent/join_token/soak';
    const tok = run('meshid', ['--server', admin, '--token-file', join(dir, 'server0', 'admin.token'), '-o', 'json', 'token', 'generate', '--spiffe-id', agentId]);
    const joinToken = JSON.parse(tok.stdout).token as string;
    for (let i = 0; i < ENTRIES; i += 500) {
      const entries = Array.from({ length: Math.min(500, ENTRIES - i) }, (_, j) => ({
        spiffe_id: `spiffe://example.org/ns/soak/sa/w${i + j}`, parent_id: agentId, x509_svid_ttl: TTL, jwt_svid_ttl: TTL,
        selectors: [i + j < SERVED ? `unix:uid:${uid}` : `unix:uid:${60000 + i + j}`],
      }));
      const res = await fetch(`${admin}/v1/entries:batchCreate`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ entries }) });
      if (!res.ok) throw new Error(`batchCreate: ${res.status} ${await res.text()}`);
    }
    // with several servers, the bundle holds every server's CA
    let bundle = run('meshid', ['--server', admin, '--token-file', join(dir, 'server0', 'admin.token'), 'bundle', 'show', '--format', 'pem']);
    for (let i = 0; i < 100 && (bundle.stdout.match(/BEGIN CERTIFICATE/g) ?? []).length < SERVERS; i++) {
      await sleep(100);
      bundle = run('meshid', ['--server', admin, '--token-file', join(dir, 'server0', 'admin.token'), 'bundle', 'show', '--format', 'pem']);
    }
    writeFileSync(join(dir, 'bundle.pem'), bundle.stdout);
    const socket = join(dir, 'agent.sock');
    agent = new Daemon('meshid-agent', ['run', '--server', ports.map((p) => `127.0.0.1:${p.agent}`).join(','), '--join-token', joinToken, '--trust-bundle', join(dir, 'bundle.pem'),
      '--socket', socket, '--data-dir', join(dir, 'agent'), '--health', '127.0.0.1:0', '--node-name', 'soak']);
    const a = await agent.waitFor(/meshid-agent started/, 60_000);
    const health = `http://127.0.0.1:${a['health_port']}`;
    const proto = loadWorkloadProto();
    const client = new proto.Client(`unix:${socket}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void };

    const firstAnswer = (): Promise<X509SVIDResponseMessage> => new Promise((resolve, reject) => {
      const st = client['FetchX509SVID']!({}, workloadCallMetadata(), { deadline: Date.now() + 5000 }) as NodeJS.EventEmitter & { cancel(): void };
      st.once('data', (m: X509SVIDResponseMessage) => { st.removeAllListeners(); st.on('error', () => {}); st.cancel(); resolve(m); });
      st.once('error', reject);
    });
    // wait until every served SVID is there
    for (let i = 0; i < 600; i++) { const m = await firstAnswer().catch(() => undefined); if (m && m.svids.length === SERVED) break; await sleep(100); }

    // live readers: every message they get must hold only unexpired SVIDs
    let liveMessages = 0;
    let expiredSeen = 0;
    for (let i = 0; i < 20; i++) {
      const st = client['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter;
      st.on('data', (m: X509SVIDResponseMessage) => {
        liveMessages++;
        for (const svid of m.svids) if (parseCertificate(splitConcatenatedDer(svid.x509_svid)[0]!).notAfter.getTime() <= Date.now()) expiredSeen++;
      });
      st.on('error', () => {});
    }
    // readers that stop reading, opened again whenever the agent resets them
    let resets = 0;
    const paused = (): void => {
      const session = connect('http://localhost', { createConnection: () => createConnection(socket) });
      session.on('error', () => {});
      const req = session.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
      req.on('error', () => {});
      req.end(Buffer.from([0, 0, 0, 0, 0]));
      req.pause();
      req.once('close', () => { resets++; session.destroy(); if (!stopping) setTimeout(paused, 1000); });
    };
    let stopping = false;
    for (let i = 0; i < 10; i++) paused();

    const latencies: number[] = [];
    let checks = 0;
    let failures = 0;
    const failureNotes: string[] = [];
    const rss: number[] = [];
    const startedAt = Date.now();
    const endAt = startedAt + MINUTES * 60_000;
    let lastReport = startedAt;
    let kills = 0;
    let lastKill = startedAt;
    const restarting: Promise<void>[] = [];
    while (Date.now() < endAt) {
      if (SERVERS > 1 && Date.now() - lastKill >= KILL_EVERY_MIN * 60_000) {
        lastKill = Date.now();
        const i = kills++ % SERVERS;
        servers[i]!.child.kill('SIGKILL');
        process.stdout.write(`soak: SIGKILL server${i} (${kills} so far); it starts again in 10 s\n`);
        restarting.push((async () => {
          await sleep(10_000);
          servers[i] = startServer(i);
          await servers[i]!.waitFor(/meshid-server started/, 60_000);
        })().catch((err: Error) => { failures++; failureNotes.push(`server${i} did not start again: ${err.message}`); }));
      }
      const t0 = performance.now();
      try {
        const m = await firstAnswer();
        if (m.svids.length !== SERVED) throw new Error(`${m.svids.length} SVIDs, not ${SERVED}`);
        for (const svid of m.svids) if (parseCertificate(splitConcatenatedDer(svid.x509_svid)[0]!).notAfter.getTime() <= Date.now()) throw new Error('an expired SVID was served');
        latencies.push(performance.now() - t0);
        for (const path of ['/live', '/ready']) {
          const r = await fetch(`${health}${path}`, { signal: AbortSignal.timeout(5000) });
          if (r.status !== 200) throw new Error(`${path} ${r.status}`);
        }
        const jwt = await new Promise<void>((resolve, reject) => client['FetchJWTSVID']!({ audience: ['soak'], spiffe_id: '' }, workloadCallMetadata(), { deadline: Date.now() + 5000 }, (err: Error | null) => (err ? reject(err) : resolve())));
        void jwt;
      } catch (err) {
        failures++;
        if (failureNotes.length < 20) failureNotes.push(`${new Date().toISOString()} ${(err as Error).message}`);
      }
      checks++;
      if (Date.now() - lastReport >= 60_000) {
        lastReport = Date.now();
        rss.push(rssMb(agent.child.pid!));
        const metrics = await (await fetch(`${health}/metrics`)).text();
        const renewals = /meshid_agent_svid_renewals (\d+)/.exec(metrics)?.[1];
        process.stdout.write(`soak ${((Date.now() - startedAt) / 60_000).toFixed(0)} min: ${checks} checks, ${failures} failed, first answer p50 ${median(latencies).toFixed(1)} ms p99 ${percentile([...latencies].sort((x, y) => x - y), 99).toFixed(1)} ms, ` +
          `agent RSS ${rss[rss.length - 1]!.toFixed(0)} MB, server RSS ${servers.map((d) => { try { return rssMb(d.child.pid!).toFixed(0); } catch { return '-'; } }).join('/')} MB, renewals ${renewals}, live messages ${liveMessages}, expired seen ${expiredSeen}, slow readers reset ${resets}${SERVERS > 1 ? `, servers killed ${kills}` : ''}\n`);
      }
      await sleep(1000);
    }
    stopping = true;
    client.close();
    await Promise.all(restarting);
    process.stdout.write(`soak done: ${MINUTES} min, ${ENTRIES} entries at ${TTL}s TTL, ${SERVERS > 1 ? `${SERVERS} servers on PostgreSQL, ${kills} SIGKILLed and restarted, ` : ''}${checks} checks, ${failures} failed, expired SVIDs seen ${expiredSeen}, ` +
      `first answer p50 ${median(latencies).toFixed(1)} ms p99 ${percentile([...latencies].sort((x, y) => x - y), 99).toFixed(1)} ms max ${Math.max(...latencies).toFixed(1)} ms, ` +
      `agent RSS per minute ${rss.map((r) => r.toFixed(0)).join(' ')} MB, slow readers reset ${resets}\n`);
    for (const n of failureNotes) process.stdout.write(`  failure: ${n}\n`);
    await agent.stop();
    for (const d of servers) await d.stop();
    process.exitCode = failures === 0 && expiredSeen === 0 ? 0 : 1;
  } finally {
    await agent?.stop().catch(() => {});
    for (const d of servers) await d.stop().catch(() => {});
    await pg?.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => { process.stderr.write(`soak: ${(err as Error).stack}\n`); process.exit(1); });
