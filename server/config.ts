/** meshid-server's configuration: one schema, defaults in one place. */
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { durationField, readConfigFile, validateConfig } from '../common/config.js';
import { TrustDomain } from '../spiffe/index.js';
import { kubernetesConfigSchema } from './k8s/index.js';

const duration = (field: string, dflt: string) => durationField(field, dflt);

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]*):\d{1,5}$/, 'must be HOST:PORT');

const issuerUrl = z.string().refine((v) => {
  try { const u = new URL(v); return (u.protocol === 'https:' || u.protocol === 'http:') && !u.search && !u.hash && !u.username; } catch { return false; }
}, 'must be an http(s) URL without query, fragment or credentials');

export const serverConfigSchema = z.object({
  trust_domain: z.string().default('example.org').transform((v, ctx) => {
    try { return TrustDomain.parse(v); } catch (err) { ctx.addIssue({ code: 'custom', message: (err as Error).message }); return z.NEVER; }
  }),
  data_dir: z.string().default('/var/lib/meshid/server'),
  /** This server's id among those sharing a datastore; default: made once and kept in <data_dir>/server_id. */
  server_id: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'must be 1-128 letters, digits, ".", "_" or "-"').optional(),
  bind: hostPort.default('0.0.0.0:8081'),
  admin: hostPort.default('127.0.0.1:8080'),
  ca_ttl: duration('ca_ttl', '24h'),
  x509_svid_ttl: duration('x509_svid_ttl', '1h'),
  jwt_svid_ttl: duration('jwt_svid_ttl', '5m'),
  agent_svid_ttl: duration('agent_svid_ttl', '1h'),
  ca_key_type: z.enum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-4096']).default('ec-p256'),
  ca_subject: z.object({ country: z.string().default('US'), organization: z.string().default('meshid'), common_name: z.string().optional() }).strict().default({ country: 'US', organization: 'meshid' }),
  /** "disk": CA keys in <data_dir>/keys (0600); "memory": never written. */
  key_manager: z.enum(['disk', 'memory']).default('disk'),
  upstream_authority: z.object({ cert_file: z.string(), key_file: z.string(), bundle_file: z.string().optional() }).strict().optional(),
  /** The `iss` claim of every JWT-SVID (an http(s) URL; cloud OIDC federation wants https); absent: no iss. */
  jwt_issuer: issuerUrl.optional(),
  /** Serve OIDC discovery (/.well-known/openid-configuration, /keys) for the JWT-SVID keys, like SPIRE's oidc-discovery-provider. */
  oidc_discovery: z.object({
    bind: hostPort,
    /** Host names it answers for; empty: any. */
    domains: z.array(z.string().min(1)).default([]),
    /** Default: /keys at the requested host. */
    jwks_uri: issuerUrl.optional(),
    /** http:// in the document when asked over plain HTTP; labs and tests only. */
    allow_insecure_scheme: z.boolean().default(false),
  }).strict().optional(),
  log_level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** Limits of the agent API listener, per source address (SPIRE limits attestation per IP). */
  agent_api_limits: z.object({
    attest_per_source_per_minute: z.number().int().positive().default(60),
    connections_per_source: z.number().int().positive().default(32),
    connections: z.number().int().positive().default(20_000),
  }).strict().prefault({}),
  /**
   * Where registration entries and everything else live: `sqlite:PATH` (default
   * sqlite:<data_dir>/datastore.sqlite3) or `postgres://user@host:port/db` for
   * several servers on one database. The password comes from the URL, from
   * password_file (mode 0600), or from PG* environment variables; it is never logged.
   */
  datastore: z.object({
    url: z.string().min(1).optional(),
    password_file: z.string().min(1).optional(),
    /** PostgreSQL connections per server. */
    pool_size: z.number().int().positive().max(1000).default(10),
  }).strict().prefault({}),
  /** How long start-up waits for SQLite's integrity check of the datastore; 0 skips it. */
  datastore_check_timeout: durationField('datastore_check_timeout', '30s'),
  /** The cluster-wide view the agents relay. */
  observe: z.object({
    /** Flows kept per node, the newest (as each agent keeps its own). */
    flow_history_per_node: z.number().int().min(16).max(1_048_576).default(4096),
  }).strict().prefault({}),
  /**
   * Worker threads that sign batches of X509-SVIDs (CSR check, encoding,
   * signature), so the event loop stays free for streams; default: one per
   * core. 0 signs on the event loop.
   */
  signing: z.object({ workers: z.number().int().min(0).max(256).default(availableParallelism()) }).strict().prefault({}),
  /** A main event loop that gets no turn for this long kills the process (SIGKILL) for its supervisor to restart; 0 turns it off. */
  watchdog: z.object({ stall_limit: durationField('watchdog.stall_limit', '30s') }).strict().prefault({}),
  /** Bearer token file for the admin API; created (0600) under data_dir when absent. */
  admin_token_file: z.string().optional(),
  /** PSAT node attestation and the controller (ServiceAccounts → entries, Pods, Nodes, policy CRDs). */
  kubernetes: kubernetesConfigSchema.prefault({}),
}).strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;

/** Config = defaults < file < flags; flags use the file's key names. */
export function loadServerConfig(file: string | undefined, flags: Record<string, unknown>): ServerConfig {
  const fromFile = file ? readConfigFile(file) : {};
  const merged = { ...fromFile, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
  return validateConfig(serverConfigSchema, merged, file ? `file ${file} and flags` : 'flags');
}
