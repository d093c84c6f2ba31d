/** meshid-agent's configuration: one schema, defaults in one place. */
import { isIP } from 'node:net';
import { z } from 'zod';
import { durationField, readConfigFile, validateConfig } from '../common/config.js';
import { parseServerList } from './serverapi/index.js';
import { TrustDomain } from '../spiffe/index.js';
import { kubernetesAgentConfigSchema } from './workloadattestor/index.js';

const ipAddress = z.string().refine((v) => isIP(v) !== 0, 'must be an IP address');
const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]*):\d{1,5}$/, 'must be HOST:PORT');

/** One endpoint this node hosts: in the config (the devnet), or added at run time through the admin socket (a CNI's ADD). */
export const endpointSchema = z.object({
  name: z.string().min(1),
  namespace: z.string().min(1).default('default'),
  service_account: z.string().min(1).default('default'),
  labels: z.record(z.string(), z.string()).default({}),
  ip: ipAddress,
  /** The node-side interface of the endpoint (its veth's node end): where the tc programs go. */
  interface: z.string().min(1).max(15),
}).strict();
export type EndpointConfig = z.infer<typeof endpointSchema>;

export const agentConfigSchema = z.object({
  /** HOST:PORT of the server, or several (a,b,c) or a DNS name with several addresses: one Sync stream, failover to the next. */
  server: z.string().superRefine((v, ctx) => {
    try { parseServerList(v); } catch (err) { ctx.addIssue({ code: 'custom', message: (err as Error).message }); }
  }),
  /**
   * SPIRE's availability_target: X509-SVIDs are renewed once their remaining lifetime
   * falls below it, so an outage of every server this long expires none. 0: half life.
   */
  availability_target: durationField('availability_target', '0s'),
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
  /** A Workload API stream whose client reads nothing for this long is reset (RESOURCE_EXHAUSTED); meanwhile only its newest answer waits. */
  slow_reader_deadline: durationField('slow_reader_deadline', '30s', { positive: true }),
  /** Adds unix:sha256: selectors (hashes each caller's executable, cached). */
  workload_sha256: z.boolean().default(false),
  /** Serve bundles and ValidateJWTSVID to callers that match no entry. */
  allow_unauthenticated_verifiers: z.boolean().default(false),
  log_level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** A main event loop that gets no turn for this long kills the process (SIGKILL) for its supervisor to restart; 0 turns it off. */
  watchdog: z.object({ stall_limit: durationField('watchdog.stall_limit', '30s') }).strict().prefault({}),
  /** The node in the mesh: underlay address (mutual auth listens there) and pod CIDR. */
  node: z.object({
    address: ipAddress.optional(),
    pod_cidr: z.string().regex(/^[0-9a-fA-F.:]+\/\d{1,3}$/, 'must be a CIDR like 10.201.1.0/24').optional(),
  }).strict().default({}),
  /** Endpoints (pods) this node hosts, where no orchestrator reports them (the devnet). */
  endpoints: z.array(endpointSchema).default([]),
  datapath: z.object({
    enabled: z.boolean().default(false),
    pin_dir: z.string().default('/sys/fs/bpf/meshid'),
    /** Local endpoints without a configured interface (Kubernetes pods) get the programs on the device their IP is routed to. */
    discover_interfaces: z.boolean().default(true),
  }).strict().default({ enabled: false, pin_dir: '/sys/fs/bpf/meshid', discover_interfaces: true }),
  /** The node's flows: its history, and their relay to the server (the cluster-wide view). */
  observe: z.object({
    /** Flows kept (the newest), as Hubble keeps 4,095 per node. */
    flow_history: z.number().int().min(16).max(1_048_576).default(4096),
    /** Report every new forwarded flow too, not only drops (the identity map's edges). */
    trace_forwarded: z.boolean().default(true),
    /** Relay flows, the auth map and counters to the server over the agent API. */
    relay: z.boolean().default(true),
  }).strict().prefault({}),
  wireguard: z.object({
    enabled: z.boolean().default(false),
    device: z.string().min(1).max(15).default('meshid-wg'),
    port: z.number().int().min(1).max(65535).default(51871),
    /** This node's address on the device (e.g. its pod gateway, 10.201.1.1/32). */
    address: z.string().optional(),
    implementation: z.enum(['auto', 'kernel', 'wireguard-go']).default('auto'),
  }).strict().default({ enabled: false, device: 'meshid-wg', port: 51871, implementation: 'auto' }),
  /** PSAT node attestation and the k8s workload attestor. */
  kubernetes: kubernetesAgentConfigSchema.prefault({}),
  mutual_auth: z.object({
    enabled: z.boolean().default(false),
    port: z.number().int().min(1).max(65535).default(4250),
    /**
     * How long a flow that a policy allowed without authentication keeps passing
     * after the policy starts requiring it, while its pair is authenticated
     * (make-before-break); enforced at once when the pair is authenticated sooner.
     */
    upgrade_grace: durationField('mutual_auth.upgrade_grace', '2s'),
  }).strict().prefault({}),
}).strict();

export type AgentConfig = z.infer<typeof agentConfigSchema>;

export function loadAgentConfig(file: string | undefined, flags: Record<string, unknown>): AgentConfig {
  const fromFile = file ? readConfigFile(file) : {};
  const merged = { ...fromFile, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
  return validateConfig(agentConfigSchema, merged, file ? `file ${file} and flags` : 'flags');
}
