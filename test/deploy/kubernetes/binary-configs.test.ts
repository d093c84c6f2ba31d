import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../../../api/assets.js';
import { serverConfigSchema } from '../../../server/config.js';
import { agentConfigSchema } from '../../../agent/config.js';

const dir = join(packageRoot, 'deploy', 'kubernetes');

for (const variant of ['base/config', 'overlays/dev', 'overlays/production', 'overlays/ha']) {
  t.test(`the ${variant} server and agent configs are accepted by the binaries' own schemas, with Kubernetes on`, async (t) => {
    const server = serverConfigSchema.safeParse(parse(readFileSync(join(dir, variant, 'server.yaml'), 'utf8')));
    t.ok(server.success, server.success ? 'server config parses' : JSON.stringify(server.error.issues));
    if (server.success) t.equal(server.data.kubernetes.enabled, true, 'server: kubernetes enabled');
    const agent = agentConfigSchema.safeParse(parse(readFileSync(join(dir, variant, 'agent.yaml'), 'utf8')));
    t.ok(agent.success, agent.success ? 'agent config parses' : JSON.stringify(agent.error.issues));
    if (agent.success) t.equal(agent.data.kubernetes.enabled, true, 'agent: kubernetes enabled');
  });
}

t.test('an unknown key in the server config is refused, naming it', async (t) => {
  const r = serverConfigSchema.safeParse({ kubernetes: { enabled: true, clustr: 'x' } });
  t.notOk(r.success);
  t.match(JSON.stringify(r.error?.issues), /clustr/);
});
