/** The meshid-agent binary: run, api fetch, api watch, healthcheck. */
import { Command, CommanderError, Option } from 'commander';
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { systemClock } from '../common/clock.js';
import { JsonLogger } from '../common/log.js';
import { labelCollector } from '../common/flags.js';
import { EventLoopWatchdog } from '../common/watchdog.js';
import { unixRequest } from '../common/unixhttp.js';
import { MeshidError, parseCertificate, pemFromDer, splitConcatenatedDer, TrustDomain } from '../spiffe/index.js';
import { MeshidAgent } from './agent.js';
import { loadAgentConfig } from './config.js';
import { kubernetesAgentParts } from './workloadattestor/index.js';
import { hostname } from 'node:os';
import {
  DEFAULT_SOCKET_PATH, fromStruct, loadReadinessProto, statusName, loadWorkloadProto, workloadCallMetadata,
  type ValidateJWTSVIDResponseMessage, type WaitReadyResponseMessage,
  type JWTSVIDResponseMessage, type X509BundlesResponseMessage, type X509SVIDResponseMessage,
} from './workloadapi/index.js';
import { credentials } from '@grpc/grpc-js';

const program = new Command('meshid-agent').description('meshid node agent: SPIFFE Workload API, SVID cache, mutual authentication').exitOverride();

program.command('run')
  .description('run the agent until SIGTERM or SIGINT')
  .option('--config <file>', 'YAML or JSON config file')
  .option('--server <host:port[,host:port…]>', 'meshid-server agent API address; several (or a DNS name with several addresses) for failover')
  .option('--join-token <token>', 'one-time join token for node attestation')
  .option('--trust-bundle <file>', 'bootstrap trust bundle (PEM or SPIFFE JSON)')
  .option('--trust-domain <td>', 'trust domain (default example.org)')
  .option('--socket <path>', `Workload API socket (default ${DEFAULT_SOCKET_PATH})`)
  .option('--data-dir <dir>', 'where the agent SVID, key and bundle are kept')
  .option('--node-name <name>', 'this node\'s name in the mesh')
  .option('--health <host:port>', '/live, /ready, /metrics address')
  .option('--log-level <level>', 'debug, info, warn or error')
  .action(async (o: Record<string, string | undefined>) => {
    const config = loadAgentConfig(o['config'], {
      server: o['server'], join_token: o['joinToken'], trust_bundle: o['trustBundle'], trust_domain: o['trustDomain'], socket: o['socket'],
      data_dir: o['dataDir'], node_name: o['nodeName'], health: o['health'], log_level: o['logLevel'],
    });
    const logger = new JsonLogger(process.stderr, config.log_level, { service: 'meshid-agent' });
    new EventLoopWatchdog({ stallLimitMs: config.watchdog.stall_limit * 1000, service: 'meshid-agent' }).start();
    const k8s = config.kubernetes.enabled ? await kubernetesAgentParts(config.kubernetes, config.node_name ?? hostname()) : undefined;
    const agent = new MeshidAgent(config, {
      clock: systemClock, logger,
      ...(k8s && !config.join_token ? { attestor: k8s.attestor } : {}),
      ...(k8s ? { workloadAttestors: [k8s.workloadAttestor] } : {}),
      onFatal: (err) => { process.stderr.write(`meshid-agent: ${err.message}\n`); agent.stop().finally(() => process.exit(1)); },
    });
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info('stopping', { signal });
      agent.stop().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    try { await agent.start(); } catch (err) { await agent.stop().catch(() => {}); throw err; }
  });

function workloadClient(socket: string) {
  const proto = loadWorkloadProto();
  return new proto.Client(`unix:${socket}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void };
}

/** The first message of a Workload API stream. */
function firstMessage<T>(client: Record<string, Function>, method: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const stream = client[method]!({}, workloadCallMetadata(), { deadline: Date.now() + timeoutMs }) as NodeJS.EventEmitter & { cancel(): void };
    stream.once('data', (m: T) => { stream.removeAllListeners('error'); stream.on('error', () => {}); stream.cancel(); resolve(m); });
    stream.once('error', reject);
  });
}

/**
 * The file name part for a bundle: the Workload API keys bundles by trust domain ID
 * ("spiffe://example.org"); the file takes the trust domain's name, which has no "/"
 * (a key that is no trust domain ID is refused rather than written as a path).
 */
function trustDomainFileName(key: string): string {
  return TrustDomain.parse(key.replace(/^spiffe:\/\//, ''), 'bundle trust domain').name;
}

/** Writes a file whole or not at all: a temporary file in the same directory, then rename (readers never see half a key). */
function writeOut(dir: string, name: string, content: string, mode = 0o644): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
  return path;
}

/** Prints each SVID of an X509-SVID response and, with `dir`, writes svid.pem, svid.key and bundle.pem (svid.1.pem … for more), as spire-agent does. */
function showX509(res: X509SVIDResponseMessage, dir: string | undefined): void {
  res.svids.forEach((s, i) => {
    const chain = splitConcatenatedDer(s.x509_svid);
    const leaf = parseCertificate(chain[0]!);
    const bundle = splitConcatenatedDer(s.bundle);
    process.stdout.write(`SPIFFE ID:\t${s.spiffe_id}\nExpires:\t${leaf.notAfter.toISOString()}\nSerial:\t\t${leaf.serialHex}\nChain:\t\t${chain.length} certificate(s)\nBundle:\t\t${bundle.length} authorit${bundle.length === 1 ? 'y' : 'ies'}\n${s.hint ? `Hint:\t\t${s.hint}\n` : ''}\n`);
    if (dir) {
      const suffix = i === 0 ? '' : `.${i}`;
      const keyPem = `-----BEGIN PRIVATE KEY-----\n${s.x509_svid_key.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
      // the key first: a reader that sees the new certificate finds its key already there
      writeOut(dir, `svid${suffix}.key`, keyPem, 0o600);
      writeOut(dir, `svid${suffix}.pem`, chain.map((d) => pemFromDer(d)).join(''));
      writeOut(dir, `bundle${suffix}.pem`, bundle.map((d) => pemFromDer(d)).join(''));
    }
  });
  for (const [td, der] of Object.entries(res.federated_bundles ?? {})) {
    if (dir) writeOut(dir, `federated_bundle.${trustDomainFileName(td)}.pem`, splitConcatenatedDer(der).map((d) => pemFromDer(d)).join(''));
  }
  if (dir) process.stdout.write(`Wrote ${res.svids.length} SVID(s) to ${dir}\n`);
}

const api = program.command('api').description('call the Workload API like any workload would');
const fetch = api.command('fetch').description('fetch SVIDs or bundles from the Workload API');
const socketOpt = (): Option => new Option('--socket <path>', 'Workload API socket').default(DEFAULT_SOCKET_PATH);
const timeoutOpt = (): Option => new Option('--timeout <seconds>', 'give up after this long').default('10');
const waitSeconds = (flag: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 300) throw new MeshidError('invalid_argument', `${flag} must be seconds from 0 to 300, not "${v}"`, 'wait');
  return n;
};

fetch.command('x509')
  .description('fetch X509-SVIDs; --write DIR writes svid.pem, svid.key and bundle.pem')
  .addOption(socketOpt()).addOption(timeoutOpt())
  .option('--write <dir>', 'write the SVID, key and bundle as PEM files')
  .action(async (o: { socket: string; write?: string; timeout: string }) => {
    const c = workloadClient(o.socket);
    try {
      const res = await firstMessage<X509SVIDResponseMessage>(c, 'FetchX509SVID', Number(o.timeout) * 1000);
      showX509(res, o.write);
    } finally { c.close(); }
  });

fetch.command('jwt')
  .description('fetch JWT-SVIDs for an audience')
  .addOption(socketOpt()).addOption(timeoutOpt())
  .requiredOption('--audience <aud...>', 'audience(s) of the token')
  .option('--spiffe-id <id>', 'only this identity')
  .action(async (o: { socket: string; audience: string[]; spiffeId?: string; timeout: string }) => {
    const c = workloadClient(o.socket);
    try {
      const res = await new Promise<JWTSVIDResponseMessage>((resolve, reject) => c['FetchJWTSVID']!({ audience: o.audience, spiffe_id: o.spiffeId ?? '' }, workloadCallMetadata(), { deadline: Date.now() + Number(o.timeout) * 1000 }, (err: Error | null, r: JWTSVIDResponseMessage) => (err ? reject(err) : resolve(r))));
      for (const s of res.svids) process.stdout.write(`token(${s.spiffe_id}):\n${s.svid}\n`);
    } finally { c.close(); }
  });

api.command('validate')
  .description('validate a JWT-SVID through the Workload API (ValidateJWTSVID); exit 0 and print its SPIFFE ID and claims when it is valid for --audience')
  .argument('<kind>', 'jwt')
  .addOption(socketOpt()).addOption(timeoutOpt())
  .requiredOption('--audience <aud>', 'the audience it must carry')
  .requiredOption('--svid <token>', 'the JWT-SVID')
  .action(async (kind: string, o: { socket: string; audience: string; svid: string; timeout: string }) => {
    if (kind !== 'jwt') throw new MeshidError('invalid_argument', `only jwt SVIDs are validated this way, not "${kind}"`, 'kind');
    const c = workloadClient(o.socket);
    try {
      const res = await new Promise<ValidateJWTSVIDResponseMessage>((resolve, reject) => c['ValidateJWTSVID']!({ audience: o.audience, svid: o.svid }, workloadCallMetadata(), { deadline: Date.now() + Number(o.timeout) * 1000 }, (err: Error | null, r: ValidateJWTSVIDResponseMessage) => (err ? reject(err) : resolve(r))));
      process.stdout.write(`SVID is valid.\nSPIFFE ID:\t${res.spiffe_id}\nClaims:\t\t${JSON.stringify(res.claims ? fromStruct(res.claims) : {})}\n`);
    } finally { c.close(); }
  });

fetch.command('bundles')
  .description('fetch the X.509 bundles; --write DIR writes <trust domain>.pem')
  .addOption(socketOpt()).addOption(timeoutOpt())
  .option('--write <dir>', 'write each bundle as PEM')
  .action(async (o: { socket: string; write?: string; timeout: string }) => {
    const c = workloadClient(o.socket);
    try {
      const res = await firstMessage<X509BundlesResponseMessage>(c, 'FetchX509Bundles', Number(o.timeout) * 1000);
      for (const [td, der] of Object.entries(res.bundles)) {
        const pem = splitConcatenatedDer(der).map((d) => pemFromDer(d)).join('');
        if (o.write) writeOut(o.write, `${trustDomainFileName(td)}.pem`, pem);
        else process.stdout.write(`# ${td}\n${pem}`);
      }
    } finally { c.close(); }
  });

api.command('wait-ready')
  .description('wait until this process\'s pod is ready in the mesh: its endpoint known, policed, and every pair a policy requires for it authenticated (run it as the pod\'s init container); exit 1 if not ready after --timeout')
  .addOption(socketOpt())
  .option('--timeout <seconds>', 'how long to wait', waitSeconds('--timeout'), 60)
  .action(async (o: { socket: string; timeout: number }) => {
    const { Client } = loadReadinessProto();
    const c = new Client(`unix:${o.socket}`, credentials.createInsecure());
    try {
      const res = await new Promise<WaitReadyResponseMessage>((resolve, reject) => {
        (c as unknown as Record<string, Function>)['WaitReady']!({ timeout_seconds: o.timeout }, workloadCallMetadata(), { deadline: Date.now() + (o.timeout + 10) * 1000 },
          (err: Error | null, r: WaitReadyResponseMessage) => (err ? reject(err) : resolve(r)));
      });
      process.stdout.write(`${res.ready ? 'ready' : 'not ready'}: endpoint(s) ${res.endpoints.join(', ') || 'none'}\n`);
      for (const w of res.waiting_for) process.stdout.write(`  waiting for: ${w}\n`);
      if (!res.ready) process.exit(1);
    } finally { c.close(); }
  });

api.command('watch')
  .description('follow X509-SVID updates (rotation, entry and bundle changes) until SIGINT or SIGTERM; --write DIR rewrites svid.pem, svid.key and bundle.pem on each, atomically')
  .addOption(socketOpt())
  .option('--write <dir>', 'write the SVID, key and bundle as PEM files on every update')
  .action((o: { socket: string; write?: string }) => new Promise<void>((resolve) => {
    const c = workloadClient(o.socket);
    let stream: (NodeJS.EventEmitter & { cancel(): void }) | undefined;
    let retryMs = 1000;
    let retry: NodeJS.Timeout | undefined;
    let stopped = false;
    const open = (): void => {
      const s = c['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
      stream = s;
      s.on('data', (res: X509SVIDResponseMessage) => {
        retryMs = 1000;
        process.stdout.write(`Received ${res.svids.length} SVID(s) at ${new Date().toISOString()}\n`);
        showX509(res, o.write);
      });
      // the agent restarting, or not there yet: keep trying, as a workload would
      s.on('error', (err: ServiceError) => {
        if (stopped) return;
        process.stderr.write(`meshid-agent: the Workload API stream ended (${err.details || err.message}); again in ${retryMs / 1000}s\n`);
        retry = setTimeout(open, retryMs);
        retryMs = Math.min(retryMs * 2, 30_000);
      });
    };
    const stop = (): void => {
      stopped = true;
      clearTimeout(retry);
      stream?.cancel();
      c.close();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    open();
  }));

/** One request to the agent's admin socket; the JSON answer and its status. */
async function adminCall(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  let r: { status: number; text: string };
  try { r = await unixRequest(socketPath, method, path, body); } catch (err) {
    throw new Error(`cannot reach the agent's admin socket ${socketPath}: ${(err as Error).message}`);
  }
  try { return { status: r.status, json: JSON.parse(r.text) as Record<string, unknown> }; } catch {
    throw new Error(`the agent answered ${r.status} with no JSON`);
  }
}

interface EndpointStatusJson { ip: string; name: string; namespace: string; interface: string; identity: number | null; ready: boolean; waiting_for: string[]; auth_entries: { needed: number; present: number } }

function printEndpoint(e: EndpointStatusJson): void {
  process.stdout.write(`${e.namespace}/${e.name}\t${e.ip}\t${e.interface}\tidentity ${e.identity ?? '-'}\t${e.ready ? 'ready' : 'not ready'}\tauth entries ${e.auth_entries.present}/${e.auth_entries.needed}\n`);
  for (const w of e.waiting_for) process.stdout.write(`  waiting for: ${w}\n`);
}

/** Prints an error answer the way the other commands do, and exits 1. */
function failWith(r: { status: number; json: Record<string, unknown> }): never {
  const err = r.json['error'] as { message?: string; field?: string } | undefined;
  if (err) {
    process.stderr.write(`meshid-agent: ${err.message}${err.field ? ` (${err.field})` : ''}\n`);
  } else {
    printEndpoint(r.json as unknown as EndpointStatusJson);
    process.stderr.write('meshid-agent: the endpoint is not ready yet\n');
  }
  process.exit(1);
}

const adminSocketOpt = (): Option => new Option('--admin-socket <path>', 'the agent\'s admin socket').default('/run/meshid/admin.sock');
const collectLabel = labelCollector((message) => new MeshidError('invalid_argument', message, 'labels'));

const endpoint = program.command('endpoint').description('endpoints of this node added at run time (what a CNI plugin does on ADD and DEL), and their readiness');
endpoint.command('add')
  .description('add an endpoint; --wait S returns once its identity is registered, the datapath polices it and every pair a policy requires for it is authenticated')
  .addOption(adminSocketOpt())
  .requiredOption('--name <name>', 'the pod\'s name')
  .option('--namespace <ns>', 'the pod\'s namespace', 'default')
  .option('--service-account <sa>', 'its ServiceAccount (which SPIFFE ID it gets)', 'default')
  .option('--label <key=value>', 'a label (repeatable)', collectLabel, {})
  .requiredOption('--ip <ip>', 'its IP')
  .requiredOption('--interface <ifname>', 'the node end of its veth, where the tc programs go')
  .option('--wait <seconds>', 'wait up to this long for readiness (exit 1 if not ready by then)', waitSeconds('--wait'), 0)
  .action(async (o: { adminSocket: string; name: string; namespace: string; serviceAccount: string; label: Record<string, string>; ip: string; interface: string; wait: number }) => {
    const r = await adminCall(o.adminSocket, 'POST', `/v1/endpoints${o.wait > 0 ? `?wait=${o.wait}` : ''}`, {
      name: o.name, namespace: o.namespace, service_account: o.serviceAccount, labels: o.label, ip: o.ip, interface: o.interface,
    });
    if (r.status !== 200 && r.status !== 201) failWith(r);
    printEndpoint(r.json as unknown as EndpointStatusJson);
  });
endpoint.command('remove')
  .description('remove an endpoint (its interface loses the tc programs)')
  .addOption(adminSocketOpt())
  .requiredOption('--ip <ip>', 'its IP')
  .action(async (o: { adminSocket: string; ip: string }) => {
    const r = await adminCall(o.adminSocket, 'DELETE', `/v1/endpoints/${encodeURIComponent(o.ip)}`);
    if (r.status !== 200) failWith(r);
    process.stdout.write(`removed ${o.ip}\n`);
  });
endpoint.command('list')
  .description('this node\'s endpoints and whether each is ready')
  .addOption(adminSocketOpt())
  .action(async (o: { adminSocket: string }) => {
    const r = await adminCall(o.adminSocket, 'GET', '/v1/endpoints');
    if (r.status !== 200) failWith(r);
    for (const e of r.json['endpoints'] as EndpointStatusJson[]) printEndpoint(e);
  });
endpoint.command('wait')
  .description('exit 0 once the endpoint is ready, 1 if it is not after --timeout')
  .addOption(adminSocketOpt())
  .requiredOption('--ip <ip>', 'its IP')
  .option('--timeout <seconds>', 'how long to wait', waitSeconds('--timeout'), 30)
  .action(async (o: { adminSocket: string; ip: string; timeout: number }) => {
    const r = await adminCall(o.adminSocket, 'GET', `/v1/endpoints/${encodeURIComponent(o.ip)}?wait=${o.timeout}`);
    if (r.status !== 200) failWith(r);
    printEndpoint(r.json as unknown as EndpointStatusJson);
  });

program.command('healthcheck')
  .description('exit 0 when the agent is ready (GET /ready)')
  .option('--health <host:port>', 'the agent\'s health address', '127.0.0.1:8082')
  .action(async (o: { health: string }) => {
    let res: Response;
    try { res = await fetch_(`http://${o.health}/ready`); } catch (err) {
      process.stderr.write(`meshid-agent: agent is not reachable at ${o.health}: ${(err as Error).message}\n`);
      process.exit(1);
    }
    const body = (await res.text()).trim();
    process.stdout.write(`${body}\n`);
    process.exit(res.ok ? 0 : 1);
  });

const fetch_ = globalThis.fetch;

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const se = err as ServiceError;
  if (typeof se.code === 'number' && se.details !== undefined) {
    process.stderr.write(`meshid-agent: the Workload API answered ${statusName(se.code)}: ${se.details}\n`);
    process.exit(1);
  }
  const field = err instanceof MeshidError && err.field ? ` (${err.field})` : '';
  process.stderr.write(`meshid-agent: ${(err as Error).message}${field}\n`);
  process.exit(err instanceof MeshidError ? 1 : 70);
});
