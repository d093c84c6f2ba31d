/** The server's own X509-SVID (spiffe://<td>/meshid/server) for the agent API's TLS, renewed at half life. */
import type { SecureContextOptions } from 'node:tls';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { generateKeyPair, pemFromDer, privateKeyPem, serverId, spkiDer } from '../../spiffe/index.js';
import type { CertificateAuthority } from '../ca/index.js';

export class ServerIdentity {
  private timer: NodeJS.Timeout | undefined;
  private listeners: ((ctx: SecureContextOptions) => void)[] = [];
  private current: Buffer[] = [];
  private context: SecureContextOptions | undefined;

  /**
   * `roots`: the authorities client certificates are checked against in the
   * handshake (gRPC hands a handler the peer certificate only when TLS verified
   * it): every server's when several share the datastore. Default: this CA's.
   */
  constructor(private readonly ca: CertificateAuthority, private readonly clock: Clock, private readonly logger: Logger,
    private readonly roots: () => string = () => ca.bundle().x509Pem()) {}

  /** The roots changed (another server's CA joined or left the bundle): the same SVID, new roots. */
  refreshRoots(): void {
    if (!this.context) return;
    this.context = { ...this.context, ca: this.roots() };
    for (const l of this.listeners) l(this.context);
  }

  /** Mints the first SVID and schedules renewals; returns the TLS context for it. */
  start(): SecureContextOptions { return this.renew(); }

  stop(): void { if (this.timer) clearTimeout(this.timer); this.timer = undefined; this.listeners = []; }

  onRotate(fn: (ctx: SecureContextOptions) => void): void { this.listeners.push(fn); }

  chain(): Buffer[] { return this.current; }

  private renew(): SecureContextOptions {
    const { privateKey, publicKey } = generateKeyPair();
    const id = serverId(this.ca.bundle().trustDomain);
    const svid = this.ca.signX509Svid(id, spkiDer(publicKey));
    this.current = svid.certChainDer;
    const ctx: SecureContextOptions = {
      key: privateKeyPem(privateKey),
      cert: svid.certChainDer.map((d) => pemFromDer(d)).join(''),
      ca: this.roots(),
    };
    this.context = ctx;
    const halfLife = Math.max(1000, (svid.expiresAt.getTime() - this.clock.now().getTime()) / 2);
    this.timer = setTimeout(() => {
      try {
        const next = this.renew();
        for (const l of this.listeners) l(next);
        this.logger.info('server SVID renewed', { spiffe_id: id.toString() });
      } catch (err) {
        this.logger.error('server SVID renewal failed', { err });
      }
    }, halfLife);
    this.timer.unref();
    return ctx;
  }
}
