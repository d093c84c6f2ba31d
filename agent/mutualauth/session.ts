/**
 * One TLS 1.3 session between two agents, both presenting their agent
 * X509-SVIDs. Node's TLS checks possession of the peer's key (CertificateVerify)
 * but not its chain or URI SAN: callers validate `peerChain` themselves.
 */
import type { KeyObject } from 'node:crypto';
import type { Socket } from 'node:net';
import { connect, createSecureContext, TLSSocket, type PeerCertificate, type SecureContext } from 'node:tls';
import { pemFromDer, privateKeyPem } from '../../spiffe/index.js';
import { EKM_BYTES, EKM_LABEL, encodeFrame, FrameDecoder, MAX_CHAIN_CERTS } from './protocol.js';

export interface TlsCredentials { chain: readonly Buffer[]; key: KeyObject }

/** One SecureContext per agent SVID: rebuilt only when the SVID's leaf changes. */
export class SecureContextCache {
  private leaf: Buffer | undefined;
  private context: SecureContext | undefined;

  get(creds: TlsCredentials): SecureContext {
    const leaf = creds.chain[0];
    if (!leaf) throw new Error('agent SVID chain is empty');
    if (this.context && this.leaf && this.leaf.equals(leaf)) return this.context;
    this.context = createSecureContext({
      key: privateKeyPem(creds.key), cert: creds.chain.map((c) => pemFromDer(c)).join(''),
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
    });
    this.leaf = leaf;
    return this.context;
  }
}

/** The certificates the peer sent, leaf first, as DER. */
function peerChainOf(socket: TLSSocket): Buffer[] {
  const chain: Buffer[] = [];
  let cert: PeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert && cert.raw && chain.length < MAX_CHAIN_CERTS + 1) {
    chain.push(cert.raw);
    const next: PeerCertificate | undefined = (cert as { issuerCertificate?: PeerCertificate }).issuerCertificate;
    if (!next || next === cert || next.raw?.equals(cert.raw)) break;
    cert = next;
  }
  return chain;
}

export class Session {
  readonly ekm: Buffer;
  readonly peerChain: Buffer[];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  private closing = false;

  constructor(readonly socket: TLSSocket) {
    this.ekm = socket.exportKeyingMaterial(EKM_BYTES, EKM_LABEL, Buffer.alloc(0));
    this.peerChain = peerChainOf(socket);
    this.closed = new Promise((resolve) => {
      if (socket.destroyed && socket.closed) resolve();
      else socket.once('close', () => resolve());
    });
    // Errors end the session; whoever listens learns of it through `closed`.
    socket.on('error', () => {});
  }

  get isOpen(): boolean { return !this.closing && !this.socket.destroyed; }

  /** Starts reading; `onMessage` gets each decoded frame, `onBroken` a framing error (the session is then destroyed). */
  listen(onMessage: (msg: unknown) => void, onBroken: (err: Error) => void): void {
    this.socket.on('data', (chunk: Buffer) => {
      if (this.closing) return; // a session being closed answers nothing more
      let msgs: unknown[];
      try { msgs = this.decoder.push(chunk); } catch (err) { onBroken(err as Error); this.destroy(); return; }
      for (const m of msgs) {
        if (this.closing || this.socket.destroyed) return;
        onMessage(m);
      }
    });
  }

  send(msg: unknown): void {
    if (!this.isOpen) return;
    this.socket.write(encodeFrame(msg));
  }

  /** Sends `msg` if given, ends the stream, and resolves once the socket is closed (destroyed after `graceMs`). */
  async close(msg?: unknown, graceMs = 1000): Promise<void> {
    if (msg !== undefined) this.send(msg);
    if (!this.closing) {
      this.closing = true;
      // Read (and drop) whatever still arrives: a paused socket never sees the peer's end, and never closes.
      this.socket.resume();
      this.socket.end();
      const timer = setTimeout(() => this.socket.destroy(), graceMs);
      timer.unref();
      void this.closed.then(() => clearTimeout(timer));
    }
    await this.closed;
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }
}

export interface ConnectOptions { host: string; port: number; context: SecureContext; timeoutMs: number }

/** Opens a session to a peer agent; the peer's chain is not yet validated. */
export function connectSession(opts: ConnectOptions): Promise<Session> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: opts.host, port: opts.port, secureContext: opts.context, rejectUnauthorized: false,
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
    });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`TLS handshake with ${opts.host}:${opts.port} timed out`)); }, opts.timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setKeepAlive(true, 30_000);
      resolve(new Session(socket));
    });
    socket.once('error', (err) => { clearTimeout(timer); socket.destroy(); reject(err); });
  });
}

/** Runs the server side of the handshake on an accepted TCP socket; the client must present a certificate. */
export function acceptSession(raw: Socket, context: SecureContext, timeoutMs: number): Promise<Session> {
  return new Promise((resolve, reject) => {
    const socket = new TLSSocket(raw, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false });
    // The TLS socket takes over the TCP handle, but the listener counts the raw socket until it is destroyed.
    socket.once('close', () => raw.destroy());
    const timer = setTimeout(() => { socket.destroy(); raw.destroy(); reject(new Error('TLS handshake timed out')); }, timeoutMs);
    const fail = (err: Error): void => { clearTimeout(timer); socket.destroy(); raw.destroy(); reject(err); };
    socket.once('secure', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      if (socket.getProtocol() !== 'TLSv1.3') { fail(new Error(`peer negotiated ${socket.getProtocol()}`)); return; }
      if (!socket.getPeerCertificate()?.raw) { fail(new Error('peer presented no certificate')); return; }
      socket.setKeepAlive(true, 30_000);
      resolve(new Session(socket));
    });
    socket.once('error', fail);
    raw.once('error', fail);
  });
}
