/**
 * The agent's connection to the server's agent API: TLS with the trust bundle
 * as roots and the server's SPIFFE ID checked, the agent SVID (when it has
 * one) as client certificate. A new SVID or bundle makes a new channel.
 */
import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadAgentProto } from '../../api/agentproto.js';
import type { KeyObject } from 'node:crypto';
import { serverId, type TrustDomain } from '../../spiffe/id.js';
import { privateKeyPem } from '../../spiffe/keys.js';
import { parseCertificate, pemFromDer } from '../../spiffe/x509.js';

export interface ClientIdentity { chain: Buffer[]; key: KeyObject }

type AgentClient = Client & Record<string, Function>;

export class ServerConnection {
  private client: AgentClient | undefined;
  private readonly proto = loadAgentProto();

  constructor(private readonly address: string, private readonly trustDomain: TrustDomain) {}

  /** Replaces the channel: `roots` are the X.509 authorities of the agent's trust domain. */
  configure(roots: readonly Buffer[], identity: ClientIdentity | undefined): void {
    const expected = serverId(this.trustDomain).toString();
    const creds = credentials.createSsl(
      Buffer.from(roots.map((d) => pemFromDer(d)).join('')),
      identity ? Buffer.from(privateKeyPem(identity.key)) : null,
      identity ? Buffer.from(identity.chain.map((d) => pemFromDer(d)).join('')) : null,
      {
        checkServerIdentity: (_host, cert) => {
          const uris = parseCertificate(cert.raw).uris;
          return uris.length === 1 && uris[0] === expected ? undefined : new Error(`server presented ${uris.join(', ') || 'no URI SAN'}, not ${expected}`);
        },
      },
    );
    const old = this.client;
    this.client = new this.proto.Client(this.address, creds, {
      'grpc.ssl_target_name_override': 'meshid-server',
      'grpc.keepalive_time_ms': 30_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    }) as AgentClient;
    old?.close();
  }

  unary<Res>(method: string, req: unknown, timeoutMs = 15_000): Promise<Res> {
    const c = this.client;
    if (!c) return Promise.reject(new Error('server connection is not configured'));
    return new Promise((resolve, reject) => {
      c[method]!(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
    });
  }

  /** A server stream; the caller owns it (cancel()). */
  stream(method: string, req: unknown): NodeJS.EventEmitter & { cancel(): void } {
    if (!this.client) throw new Error('server connection is not configured');
    return (this.client[method] as Function)(req, new Metadata()) as NodeJS.EventEmitter & { cancel(): void };
  }

  close(): void { this.client?.close(); this.client = undefined; }
}
