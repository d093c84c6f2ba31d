import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkloadApiServer, type WorkloadApiServerOptions } from '../../../agent/workloadapi/index.js';
import { NetnsAttestor, UnixAttestor } from '../../../agent/workloadattestor/index.js';
import { TestClient } from './client.js';
import type { FakeWorkloadSource } from './fake-source.js';

interface Teardown { teardown(fn: () => unknown): void }

/** A temp folder removed at teardown; names carry the pid so concurrent runs never collide. */
export function tempDir(t: Teardown, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `meshid-wl-${label}-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A started Workload API server on a fresh socket with the real unix and netns attestors; stopped at teardown. */
export async function startServer(t: Teardown, source: FakeWorkloadSource, options: Partial<WorkloadApiServerOptions> = {}): Promise<WorkloadApiServer> {
  const dir = tempDir(t, 'sock');
  chmodSync(dir, 0o755); // mkdtemp makes it 0700; callers running as other uids must reach the socket
  const socketPath = join(dir, 'run', 'agent.sock');
  const server = new WorkloadApiServer({
    socketPath,
    source,
    attestors: [new UnixAttestor(), new NetnsAttestor()],
    stopGraceMs: 500,
    ...options,
  });
  await server.start();
  t.teardown(() => server.stop());
  return server;
}

export function newClient(t: Teardown, server: WorkloadApiServer, ownConnection = false): TestClient {
  const client = new TestClient(server.socketPath, ownConnection);
  t.teardown(() => client.close());
  return client;
}
