/**
 * Leader election through a coordination.k8s.io/v1 Lease, with client-go's
 * semantics: a candidate takes the lease when it is free or when its holder
 * has not renewed it for leaseDuration (measured on the candidate's own clock
 * from when it last saw the record change, so clock skew does not matter);
 * the leader renews every retryPeriod and stops leading when it could not
 * renew for renewDeadline (before anyone else may take over); writes use the
 * Lease's resourceVersion, so of two racing candidates one gets 409 Conflict.
 * stop() releases a held lease so that a successor need not wait.
 */
import { hostname } from 'node:os';
import { V1MicroTime, type CoordinationV1Api, type V1Lease } from '@kubernetes/client-node';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import { apiMessage, apiStatus } from './client.js';

export interface LeaderElectorOptions {
  coordination: CoordinationV1Api;
  namespace: string;
  name: string;
  /** Unique among candidates; default the host name. */
  identity?: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  clock: Clock;
  logger: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

export class LeaderElector {
  readonly identity: string;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  /** The Lease's resourceVersion when we last saw it change, and when (our clock). */
  private observedVersion = '';
  private observedAt = 0;
  private lastRenewAt = 0;
  /** Lease transitions counted by this elector: acquisitions of a lease another candidate held. */
  transitions = 0;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.identity = opts.identity ?? hostname();
  }

  get isLeader(): boolean { return this.leading; }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.tick();
  }

  /** Stops campaigning; a leader stops leading and releases the lease. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    if (this.leading) {
      this.setLeading(false);
      await this.release();
    }
  }

  private tick(): void {
    if (this.stopped) return;
    this.running = this.round().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      this.timer = setTimeout(() => this.tick(), this.opts.retryPeriodMs * (this.leading ? 1 : 1 + Math.random() * 0.2));
    });
  }

  private async round(): Promise<void> {
    let held: boolean;
    try {
      held = await this.tryAcquireOrRenew();
    } catch (err) {
      this.opts.logger.warn('leader election: lease request failed', { lease: this.leaseName, error: apiMessage(err) });
      held = false;
    }
    if (this.stopped) return;
    const now = this.now();
    if (held) {
      this.lastRenewAt = now;
      if (!this.leading) this.setLeading(true);
    } else if (this.leading && now - this.lastRenewAt >= this.opts.renewDeadlineMs) {
      this.opts.logger.warn('leader election: could not renew the lease within the renew deadline; stepping down', { lease: this.leaseName });
      this.setLeading(false);
    }
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.opts.logger.info(leading ? 'leader election: leading' : 'leader election: no longer leading', { lease: this.leaseName, identity: this.identity });
    try {
      if (leading) this.opts.onStartedLeading();
      else this.opts.onStoppedLeading();
    } catch (err) {
      this.opts.logger.error('leader election callback failed', { error: err });
    }
  }

  private get leaseName(): string { return `${this.opts.namespace}/${this.opts.name}`; }

  private now(): number { return this.opts.clock.now().getTime(); }

  /** True when this candidate holds the lease after the call. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { coordination, namespace, name } = this.opts;
    const now = this.now();
    let lease: V1Lease;
    try {
      lease = await coordination.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (apiStatus(err) !== 404) throw err;
      try {
        const created = await coordination.createNamespacedLease({ namespace, body: this.leaseBody(undefined, now) });
        this.observe(created, now);
        this.transitions += 1;
        return true;
      } catch (err2) {
        if (apiStatus(err2) === 409) return false; // another candidate created it first
        throw err2;
      }
    }
    const version = lease.metadata?.resourceVersion ?? '';
    if (version !== this.observedVersion) this.observe(lease, now);
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== '' && holder !== this.identity && this.observedAt + durationMs > now) return false;
    try {
      const updated = await coordination.replaceNamespacedLease({ name, namespace, body: this.leaseBody(lease, now) });
      this.observe(updated, now);
      if (holder !== this.identity) this.transitions += 1;
      return true;
    } catch (err) {
      if (apiStatus(err) === 409) return false; // someone wrote the lease since we read it
      throw err;
    }
  }

  private observe(lease: V1Lease, now: number): void {
    this.observedVersion = lease.metadata?.resourceVersion ?? '';
    this.observedAt = now;
  }

  private leaseBody(current: V1Lease | undefined, now: number): V1Lease {
    const spec = current?.spec ?? {};
    const keep = spec.holderIdentity === this.identity;
    const at = new V1MicroTime(now);
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: this.opts.name, namespace: this.opts.namespace,
        ...(current?.metadata?.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      spec: {
        holderIdentity: this.identity,
        leaseDurationSeconds: Math.max(1, Math.ceil(this.opts.leaseDurationMs / 1000)),
        acquireTime: keep && spec.acquireTime ? new V1MicroTime(spec.acquireTime) : at,
        renewTime: at,
        leaseTransitions: current ? (spec.leaseTransitions ?? 0) + (keep ? 0 : 1) : 0,
      },
    };
  }

  /** Gives the lease up (holder "" and a 1 s duration, as client-go does) if we still hold it. */
  private async release(): Promise<void> {
    const { coordination, namespace, name } = this.opts;
    try {
      const lease = await coordination.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.identity) return;
      const at = new V1MicroTime(this.now());
      await coordination.replaceNamespacedLease({
        name, namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
          metadata: { name, namespace, resourceVersion: lease.metadata?.resourceVersion ?? '' },
          spec: { holderIdentity: '', leaseDurationSeconds: 1, acquireTime: at, renewTime: at, leaseTransitions: lease.spec?.leaseTransitions ?? 0 },
        },
      });
      this.opts.logger.info('leader election: lease released', { lease: this.leaseName });
    } catch (err) {
      this.opts.logger.warn('leader election: could not release the lease', { lease: this.leaseName, error: apiMessage(err) });
    }
  }
}
