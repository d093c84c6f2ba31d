/**
 * meshid-server in Kubernetes, as one part with start()/stop(): the k8s_psat
 * node attestor (for the agent API's AttestorRegistry), and the controller
 * that keeps entries, nodes, endpoints, identities and policies in line with
 * the cluster, writing only while this server holds the leader Lease.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { K8sPsatAttestor } from './psat.js';
import type { Datastore } from '../datastore/index.js';
import type { TrustDomain } from '../../spiffe/index.js';
import { BundlePublisher } from './bundle.js';
import { kubeApis, loadKubeConfig, type KubeApis } from './client.js';
import type { KubernetesConfig } from './config.js';
import { KubernetesController, type KubernetesControllerOptions } from './controller.js';
import { LeaderElector } from './leader.js';

export interface KubernetesIntegrationOptions {
  config: KubernetesConfig;
  store: Datastore;
  trustDomain: TrustDomain;
  clock: Clock;
  logger: Logger;
  /** Default: from config.kubeconfig, the in-cluster ServiceAccount, or $KUBECONFIG. */
  kubeConfig?: KubeConfig;
  /** The change feed (every server's writes); default the datastore's own commits. */
  changes?: Pick<Datastore, 'onChange'>;
  /** Reflector timing (tests shorten it). */
  reflectorTiming?: KubernetesControllerOptions['reflectorTiming'];
}

export interface KubernetesStatus {
  leader: boolean;
  /** Every watch has listed once. */
  synced: boolean;
  /** Leader and caught up: events are being written. */
  writing: boolean;
}

export class KubernetesIntegration {
  readonly apis: KubeApis;
  readonly attestor: K8sPsatAttestor;
  /** Absent when auto_register, endpoints and policies are all off. */
  readonly controller: KubernetesController | undefined;
  readonly leaderElector: LeaderElector | undefined;
  /** Absent when bundle_configmap is off. */
  readonly bundlePublisher: BundlePublisher | undefined;
  private started = false;

  constructor(private readonly opts: KubernetesIntegrationOptions) {
    const { config, logger } = opts;
    this.apis = kubeApis(opts.kubeConfig ?? loadKubeConfig(config.kubeconfig));
    this.attestor = new K8sPsatAttestor({
      trustDomain: opts.trustDomain, cluster: config.cluster, audience: config.psat_audience,
      allowedServiceAccounts: config.allowed_agent_service_accounts, authentication: this.apis.authentication, core: this.apis.core,
    });
    if (config.bundle_configmap.enabled) {
      this.bundlePublisher = new BundlePublisher({
        core: this.apis.core, store: opts.store, trustDomain: opts.trustDomain, namespace: config.bundle_configmap.namespace,
        name: config.bundle_configmap.name, logger: logger.child({ component: 'k8s-bundle' }),
        ...(opts.changes ? { changes: opts.changes } : {}),
      });
    }
    const leading = (leader: boolean): void => {
      this.controller?.setLeader(leader);
      this.bundlePublisher?.setActive(leader);
    };
    if (config.auto_register || config.endpoints || config.policies) {
      this.controller = new KubernetesController({
        core: this.apis.core, custom: this.apis.custom, watch: this.apis.watch, store: opts.store, trustDomain: opts.trustDomain,
        cluster: config.cluster, logger: logger.child({ component: 'k8s-controller' }), autoRegister: config.auto_register,
        endpoints: config.endpoints, policies: config.policies, crdDiscoveryIntervalMs: config.crd_discovery_interval * 1000,
        ...(opts.reflectorTiming ? { reflectorTiming: opts.reflectorTiming } : {}),
      });
    }
    const le = config.leader_election;
    if (le.enabled && (this.controller || this.bundlePublisher)) {
      this.leaderElector = new LeaderElector({
        coordination: this.apis.coordination, namespace: le.namespace, name: le.lease_name,
        ...(le.identity ? { identity: le.identity } : {}),
        leaseDurationMs: le.lease_duration * 1000, renewDeadlineMs: le.renew_deadline * 1000, retryPeriodMs: le.retry_period * 1000,
        clock: opts.clock, logger: logger.child({ component: 'k8s-leader' }),
        onStartedLeading: () => leading(true),
        onStoppedLeading: () => leading(false),
      });
    }
    this.leading = leading;
  }

  /** Leadership to the parts that write only while leading. */
  private readonly leading: (leader: boolean) => void;

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.bundlePublisher?.start();
    await this.controller?.start();
    if (this.leaderElector) this.leaderElector.start();
    else this.leading(true);
    this.opts.logger.info('kubernetes integration started', {
      cluster: this.opts.config.cluster, controller: this.controller !== undefined, leader_election: this.leaderElector !== undefined,
    });
  }

  /** Stops writing (releasing the Lease if held), then the watches. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.leaderElector?.stop();
    this.leading(false);
    await this.bundlePublisher?.stop();
    await this.controller?.stop();
  }

  status(): KubernetesStatus {
    const leader = this.leaderElector ? this.leaderElector.isLeader : this.started;
    const writing = this.controller?.isActive ?? false;
    return { leader, synced: writing || this.controllerSynced(), writing };
  }

  private controllerSynced(): boolean {
    const c = this.controller;
    if (!c) return true;
    const reflectors = [c.namespaces, c.serviceAccounts, c.nodes, c.pods, ...[...c.policyReflectors.values()].map((p) => p.reflector)];
    return reflectors.every((r) => r === undefined || r.synced);
  }
}
