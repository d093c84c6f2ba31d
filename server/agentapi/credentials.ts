import { ServerCredentials } from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';

/**
 * TLS for the agent API: the server asks every client for a certificate but
 * lets the handshake finish without one, because AttestAgent is called before
 * the agent has an SVID. Every other call checks the certificate itself
 * (AgentAuthenticator). update() swaps the server's own SVID on rotation.
 */
export class AgentApiCredentials extends ServerCredentials {
  constructor(context: SecureContextOptions) {
    super({ requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, context);
  }
  update(context: SecureContextOptions): void { this.updateSecureContextOptions(context); }
  override _equals(other: ServerCredentials): boolean { return other === this; }
}
