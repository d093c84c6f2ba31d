/**
 * The agent's connection to the servers' agent API: TLS with the trust bundle
 * as roots and the server's SPIFFE ID checked, the agent SVID (when it has
 * one) as client certificate. A new SVID or bundle makes new channels.
 *
 * Several servers (`--server a:8081,b:8081`, or one DNS name with several
 * addresses): calls go to one of them; one that does not answer (UNAVAILABLE,
 * or a deadline passed) is set aside for a while, with back-off and jitter,
 * and the call is made again on the next. The Sync stream's owner reports a
 * failed stream the same way (failed()) and reconnects to whichever server is
 * current then.
 */
import { credentials, Metadata, status, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { KeyObject } from 'node:crypto';
import { loadAgentProto } from '../../api/agentproto.js';
import { matchId, matchUriSans, parseCertificate, pemFromDer, privateKeyPem, serverId, type TrustDomain } from '../../spiffe/index.js';

export interface ClientIdentity { chain: Buffer[]; key: KeyObject }

type AgentClient = Client & Record<string, Function>;

/** A client's bidirectional stream, as grpc-js gives it. */
export type DuplexStream = NodeJS.EventEmitter & {
  write(msg: unknown): boolean;
  end(): void;
  cancel(): void;
  address: string;
};

interface Target { address: string; client: AgentClient | undefined; failures: number; asideUntil: number }

/** `host:port[,host:port…]` → the addresses, checked. */
export function parseServerList(list: string): string[] {
  const out = list.split(',').map((s) => s.trim()).filter(Boolean);
  if (out.length === 0) throw new Error('no server address: give HOST:PORT[,HOST:PORT…]');
  for (const a of out) if (!/^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]+):\d{1,5}$/.test(a)) throw new Error(`server address "${a}" is not HOST:PORT`);
  return [...new Set(out)];
}

function splitHostPort(address: string): { host: string; port: string } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: address.slice(i + 1) };
}

/** Whether a failed call may be made again on another server: it never reached this one (or got no answer in time). */
export function isServerDown(err: unknown): boolean {
  const code = (err as { code?: number } | null)?.code;
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED;
}

export class ServerConnection {
  private targets: Target[];
  private current = 0;
  private creds: ChannelCredentials | undefined;
  private readonly proto = loadAgentProto();
  private readonly names: string[];
  private resolving: Promise<void> | undefined;
  /** Times a server was set aside (for metrics and tests). */
  failovers = 0;

  constructor(servers: string, private readonly trustDomain: TrustDomain, private readonly opts: { random?: () => number; now?: () => number } = {}) {
    this.names = parseServerList(servers);
    this.targets = this.names.map((address) => ({ address, client: undefined, failures: 0, asideUntil: 0 }));
  }

  /** The server calls go to now. */
  get address(): string { return this.targets[this.current]!.address; }
  /** Every server address known (after DNS names were resolved). */
  get addresses(): string[] { return this.targets.map((t) => t.address); }

  /** Replaces the channels: `roots` are the X.509 authorities of the agent's trust domain. */
  configure(roots: readonly Buffer[], identity: ClientIdentity | undefined): void {
    const isServer = matchId(serverId(this.trustDomain));
    this.creds = credentials.createSsl(
      Buffer.from(roots.map((d) => pemFromDer(d)).join('')),
      identity ? Buffer.from(privateKeyPem(identity.key)) : null,
      identity ? Buffer.from(identity.chain.map((d) => pemFromDer(d)).join('')) : null,
      {
        checkServerIdentity: (_host, cert) => {
          const refused = matchUriSans(parseCertificate(cert.raw).uris, isServer);
          return refused === undefined ? undefined : new Error(`server refused: ${refused}`);
        },
      },
    );
    for (const t of this.targets) { t.client?.close(); t.client = undefined; }
    this.resolving ??= this.resolve().finally(() => { this.resolving = undefined; });
  }

  /**
   * One DNS name given: every address it resolves to is a server (a headless
   * Service). Resolved on configure and again when every server was set aside.
   */
  private async resolve(): Promise<void> {
    if (this.names.length !== 1) return;
    const { host, port } = splitHostPort(this.names[0]!);
    if (isIP(host) !== 0 || host === 'localhost') return;
    let found: string[];
    try {
      found = [...new Set((await lookup(host, { all: true })).map((a) => (a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`)))];
    } catch {
      return; // the name itself stays the one target; gRPC resolves it per connection
    }
    if (found.length <= 1) return;
    const keep = new Map(this.targets.map((t) => [t.address, t]));
    const was = this.address;
    this.targets = found.map((address) => keep.get(address) ?? { address, client: undefined, failures: 0, asideUntil: 0 });
    const i = this.targets.findIndex((t) => t.address === was);
    this.current = i >= 0 ? i : Math.floor((this.opts.random ?? Math.random)() * this.targets.length);
  }

  private client(t: Target): AgentClient {
    if (!this.creds) throw new Error('server connection is not configured');
    t.client ??= new this.proto.Client(t.address, this.creds, {
      'grpc.ssl_target_name_override': 'meshid-server',
      'grpc.keepalive_time_ms': 30_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // fail fast to the next server instead of waiting out gRPC's reconnect back-off
      'grpc.initial_reconnect_backoff_ms': 500,
      'grpc.max_reconnect_backoff_ms': 5000,
    }) as AgentClient;
    return t.client;
  }

  /** The server to use: the current one unless it is set aside, else the next that is not (else the current). */
  private pick(): Target {
    const now = (this.opts.now ?? Date.now)();
    for (let i = 0; i < this.targets.length; i++) {
      const idx = (this.current + i) % this.targets.length;
      if (this.targets[idx]!.asideUntil <= now) { this.current = idx; return this.targets[idx]!; }
    }
    if (!this.resolving) this.resolving = this.resolve().finally(() => { this.resolving = undefined; });
    return this.targets[this.current]!;
  }

  /** The current server did not answer: set it aside (1 s, doubling to 30 s, ±20 %) and move on to the next. */
  failed(address = this.address): void {
    const t = this.targets.find((x) => x.address === address);
    if (!t) return;
    t.failures += 1;
    const base = Math.min(30_000, 1000 * 2 ** (t.failures - 1));
    t.asideUntil = (this.opts.now ?? Date.now)() + Math.round(base * (0.8 + (this.opts.random ?? Math.random)() * 0.4));
    this.failovers += 1;
    if (this.targets.length > 1 && this.targets[this.current] === t) this.current = (this.current + 1) % this.targets.length;
  }

  private succeeded(t: Target): void { t.failures = 0; t.asideUntil = 0; }

  /**
   * A unary call; on a server that is down it is made again on the next one
   * (`failover: false` for calls that must not be repeated elsewhere).
   */
  async unary<Res>(method: string, req: unknown, timeoutMs = 15_000, opts: { failover?: boolean } = {}): Promise<Res> {
    let lastErr: unknown;
    const tries = opts.failover === false ? 1 : this.targets.length;
    for (let attempt = 0; attempt < tries; attempt++) {
      const t = this.pick();
      const c = this.client(t);
      try {
        const res = await new Promise<Res>((resolve, reject) => {
          c[method]!(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, r: Res) => (err ? reject(err) : resolve(r)));
        });
        this.succeeded(t);
        return res;
      } catch (err) {
        lastErr = err;
        if (!isServerDown(err)) throw err;
        this.failed(t.address);
      }
    }
    throw lastErr;
  }

  /** A server stream on the current server; the caller owns it (cancel()) and reports a failed one (failed()). */
  stream(method: string, req: unknown): NodeJS.EventEmitter & { cancel(): void; address: string } {
    const t = this.pick();
    const s = (this.client(t)[method] as Function)(req, new Metadata()) as NodeJS.EventEmitter & { cancel(): void; address: string };
    s.address = t.address;
    s.once('data', () => this.succeeded(t));
    return s;
  }

  /** A bidirectional stream on the current server; the caller owns it (end() or cancel()) and reports a failed one (failed()). */
  duplex(method: string): DuplexStream {
    const t = this.pick();
    const s = (this.client(t)[method] as Function)(new Metadata()) as DuplexStream;
    s.address = t.address;
    s.once('data', () => this.succeeded(t));
    return s;
  }

  /**
   * A bidirectional stream on the server at `address` (one of `addresses`),
   * whichever is current: for what every server must hear (the relay).
   */
  duplexTo(address: string, method: string): DuplexStream {
    const t = this.targets.find((x) => x.address === address);
    if (!t) throw new Error(`no server ${address} (known: ${this.addresses.join(', ')})`);
    const s = (this.client(t)[method] as Function)(new Metadata()) as DuplexStream;
    s.address = t.address;
    return s;
  }

  close(): void {
    for (const t of this.targets) { t.client?.close(); t.client = undefined; }
  }
}
