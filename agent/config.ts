/** meshid-agent's configuration: one schema, defaults in one place. */
import { z } from 'zod';
import { readConfigFile, validateConfig } from '../common/config.js';
import { TrustDomain } from '../spiffe/id.js';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]*):\d{1,5}$/, 'must be HOST:PORT');

export const agentConfigSchema = z.object({
  server: hostPort,
  trust_domain: z.string().default('example.org').transform((v, ctx) => {
    try { return TrustDomain.parse(v); } catch (err) { ctx.addIssue({ code: 'custom', message: (err as Error).message }); return z.NEVER; }
  }),
  /** The bootstrap bundle (PEM or SPIFFE JSON) that authenticates the server on first contact. */
  trust_bundle: z.string().optional(),
  join_token: z.string().optional(),
  socket: z.string().default('/run/meshid/agent.sock'),
  admin_socket: z.string().default('/run/meshid/admin.sock'),
  /** /live, /ready and /metrics. */
  health: hostPort.default('127.0.0.1:8082'),
  data_dir: z.string().default('/var/lib/meshid/agent'),
  /** This node's name in the mesh (node registry). Default: the host name. */
  node_name: z.string().optional(),
  max_svids: z.number().int().positive().default(10_000),
  /** Adds unix:sha256: selectors (hashes each caller's executable, cached). */
  workload_sha256: z.boolean().default(false),
  /** Serve bundles and ValidateJWTSVID to callers that match no entry. */
  allow_unauthenticated_verifiers: z.boolean().default(false),
  log_level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
}).strict();

export type AgentConfig = z.infer<typeof agentConfigSchema>;

export function loadAgentConfig(file: string | undefined, flags: Record<string, unknown>): AgentConfig {
  const fromFile = file ? readConfigFile(file) : {};
  const merged = { ...fromFile, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
  return validateConfig(agentConfigSchema, merged, file ? `file ${file} and flags` : 'flags');
}
