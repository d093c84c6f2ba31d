import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { agentConfigSchema } from '../../agent/config.js';
import { serverConfigSchema } from '../../server/config.js';

const child = fileURLToPath(new URL('./watchdog-child.js', import.meta.url));

function runChild(mode: 'stall' | 'healthy', limitMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const p = spawn(process.execPath, [child, mode, String(limitMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d; });
    p.stderr.on('data', (d: Buffer) => { stderr += d; });
    const guard = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.once('exit', (code, signal) => { clearTimeout(guard); resolve({ code, signal, stdout, stderr, ms: Date.now() - started }); });
  });
}

t.test('a main thread that stops turning is killed by the watchdog, which says why on stderr', async (tt) => {
  const r = await runChild('stall', 500);
  tt.match(r.stdout, /stalling/, 'the child got to its stall');
  tt.equal(r.signal, 'SIGKILL', 'killed, so a supervisor sees a failure and restarts it');
  const line = JSON.parse(r.stderr.trim().split('\n').pop()!) as Record<string, unknown>;
  tt.equal(line['level'], 'error');
  tt.match(line['msg'], /event loop stalled/);
  tt.equal(line['service'], 'watchdog-test');
  tt.ok((line['stalled_ms'] as number) > 500, `stalled_ms ${line['stalled_ms']} is past the 500 ms limit`);
  tt.ok(r.ms < 30_000, `killed ${r.ms} ms after start, not left hanging`);
});

t.test('a turning event loop is left alone and the watchdog does not keep the process alive', async (tt) => {
  const r = await runChild('healthy', 2000);
  tt.equal(r.signal, null);
  tt.equal(r.code, 0);
  tt.match(r.stdout, /finished/);
  tt.equal(r.stderr, '', 'nothing logged');
});

t.test('both binaries take watchdog.stall_limit, default 30 s, 0 turns it off, bad values are named', async (tt) => {
  const agent = agentConfigSchema.parse({ server: '127.0.0.1:8081' });
  tt.equal(agent.watchdog.stall_limit, 30);
  tt.equal(agentConfigSchema.parse({ server: '127.0.0.1:8081', watchdog: { stall_limit: '0s' } }).watchdog.stall_limit, 0);
  tt.equal(serverConfigSchema.parse({}).watchdog.stall_limit, 30);
  tt.equal(serverConfigSchema.parse({ watchdog: { stall_limit: '2m' } }).watchdog.stall_limit, 120);
  const bad = serverConfigSchema.safeParse({ watchdog: { stall_limit: 'soon' } });
  tt.notOk(bad.success);
  tt.match(bad.error?.issues[0]?.message, /watchdog.stall_limit "soon" is not a duration/);
});
