/**
 * Publishes the trust domain's bundle into a ConfigMap (SPIRE's k8sbundle
 * notifier), so that agents can mount it as their bootstrap trust bundle:
 * `bundle.spiffe` (SPIFFE bundle JSON) and `bundle.crt` (the X.509
 * authorities as PEM). Written by the leader only, whenever the bundle
 * changes; failed writes are retried.
 */
import type { CoreV1Api, V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import type { Datastore } from '../datastore/index.js';
import { Bundle, NotFound, type TrustDomain } from '../../spiffe/index.js';
import { apiMessage, apiStatus } from './client.js';

export interface BundlePublisherOptions {
  core: Pick<CoreV1Api, 'readNamespacedConfigMap' | 'createNamespacedConfigMap' | 'replaceNamespacedConfigMap'>;
  store: Datastore;
  trustDomain: TrustDomain;
  namespace: string;
  name: string;
  logger: Logger;
  /** Delay before retrying a failed write. Default 5 s. */
  retryMs?: number;
  /** Where bundle changes are heard: the change feed (every server's), default the datastore's own commits. */
  changes?: Pick<Datastore, 'onChange'>;
}

export class BundlePublisher {
  private active = false;
  private unsubscribe: (() => void) | undefined;
  private retry: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  /** Successful ConfigMap writes (creates and replaces). */
  writes = 0;

  constructor(private readonly opts: BundlePublisherOptions) {}

  start(): void {
    this.unsubscribe ??= (this.opts.changes ?? this.opts.store).onChange((changes) => {
      if (changes.some((c) => c.kind === 'bundle' && c.id === this.opts.trustDomain.name)) this.kick();
    });
  }

  async stop(): Promise<void> {
    this.active = false;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
    await this.running;
  }

  /** Only the leader writes; becoming leader publishes at once. */
  setActive(active: boolean): void {
    this.active = active;
    if (active) this.kick();
  }

  /** Publishes now (or right after a write in progress). */
  kick(): void {
    if (!this.active) return;
    if (this.running) { this.again = true; return; }
    this.running = this.publish().finally(() => {
      this.running = undefined;
      if (this.again) { this.again = false; this.kick(); }
    });
  }

  /** Resolves when no write is in progress. */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  private async publish(): Promise<void> {
    const { core, store, trustDomain, namespace, name, logger } = this.opts;
    let data: Record<string, string>;
    try {
      const doc = (await store.getBundle(trustDomain)).document;
      data = { 'bundle.spiffe': JSON.stringify(doc, null, 2) + '\n', 'bundle.crt': Bundle.fromJwks(trustDomain, doc).x509Pem() };
    } catch (err) {
      if (err instanceof NotFound) return; // the CA has not published a bundle yet; its change will call again
      throw err;
    }
    try {
      let current: V1ConfigMap | undefined;
      try {
        current = await core.readNamespacedConfigMap({ name, namespace });
      } catch (err) {
        if (apiStatus(err) !== 404) throw err;
      }
      if (!this.active) return;
      const same = current?.data?.['bundle.spiffe'] === data['bundle.spiffe'] && current?.data?.['bundle.crt'] === data['bundle.crt'];
      if (same) return;
      const body: V1ConfigMap = {
        apiVersion: 'v1', kind: 'ConfigMap',
        metadata: {
          name, namespace, labels: { ...(current?.metadata?.labels ?? {}), 'app.kubernetes.io/part-of': 'meshid', 'app.kubernetes.io/component': 'trust-bundle' },
          ...(current?.metadata?.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
        },
        data,
      };
      if (current) await core.replaceNamespacedConfigMap({ name, namespace, body });
      else await core.createNamespacedConfigMap({ namespace, body });
      this.writes += 1;
      logger.info('trust bundle published to ConfigMap', { configmap: `${namespace}/${name}` });
    } catch (err) {
      logger.warn('publishing the trust bundle to its ConfigMap failed; will retry', { configmap: `${namespace}/${name}`, error: apiMessage(err), status: apiStatus(err) });
      if (this.active) {
        this.retry = setTimeout(() => { this.retry = undefined; this.kick(); }, this.opts.retryMs ?? 5000);
      }
    }
  }
}
