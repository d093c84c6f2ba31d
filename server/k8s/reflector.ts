/**
 * A list+watch loop (client-go's Reflector) for one kind of object: lists,
 * then watches from the list's resourceVersion; when a watch ends it resumes
 * from the last resourceVersion it saw (objects or bookmarks), and when the
 * API server answers 410 Gone (as an HTTP status or an ERROR event) it lists
 * again and reports what vanished meanwhile as deletions. Other failures are
 * retried with exponential backoff. It keeps the current objects in `cache`.
 */
import type { Watch } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import { apiMessage, apiStatus } from './client.js';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: unknown;
}

/** The part of every Kubernetes object that the reflector reads. */
export interface KubeObject { metadata?: ObjectMeta }

export interface ObjectList<T> { items: T[]; metadata?: { resourceVersion?: string } }

export interface ReflectorHandler<T> {
  /** An object appeared or changed (also for each object of a (re)list that is new or changed). */
  upsert(obj: T): void;
  /** An object went away (also for each object that a relist no longer holds). */
  remove(obj: T): void;
  /** After each complete list. */
  listed?(): void;
}

export interface ReflectorOptions<T> {
  /** For logs: "pods", "ciliumnetworkpolicies". */
  name: string;
  /** The collection's URL path, e.g. /api/v1/pods. */
  path: string;
  list: () => Promise<ObjectList<T>>;
  watch: Watch;
  handler: ReflectorHandler<T>;
  logger: Logger;
  fieldSelector?: string;
  labelSelector?: string;
  /** First retry delay after a failure; doubles up to maxBackoffMs. Default 250 ms. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Asked of the server per watch; default a random 5-10 minutes, as client-go does. */
  watchTimeoutSeconds?: () => number;
}

export interface ReflectorStats {
  lists: number;
  watches: number;
  /** Lists after a 410 Gone. */
  relistsAfterGone: number;
  /** Watches started again from the last resourceVersion. */
  resumes: number;
  failures: number;
}

type WatchEnd = 'gone' | 'closed';

export const objectKey = (o: KubeObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export class Reflector<T extends KubeObject> {
  readonly cache = new Map<string, T>();
  readonly stats: ReflectorStats = { lists: 0, watches: 0, relistsAfterGone: 0, resumes: 0, failures: 0 };
  resourceVersion = '';
  private stopped = true;
  private loop: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private hasListed = false;
  private listedWaiters: (() => void)[] = [];

  constructor(private readonly opts: ReflectorOptions<T>) {}

  get synced(): boolean { return this.hasListed; }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Ends the watch and waits for the loop to finish; nothing runs after it resolves. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.wake?.();
    await this.loop;
    this.loop = undefined;
  }

  /** Resolves after the first complete list. */
  whenSynced(): Promise<void> {
    if (this.hasListed) return Promise.resolve();
    return new Promise((resolve) => this.listedWaiters.push(resolve));
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.relist();
        if (this.stopped) break;
        const started = Date.now();
        const end = await this.watchOnce();
        failures = 0;
        if (end === 'gone') {
          this.goneSeen();
          continue;
        }
        this.stats.resumes += 1;
        // a server that closes watches at once would otherwise be asked again in a tight loop
        if (Date.now() - started < 1000) await this.sleep(this.opts.initialBackoffMs ?? 250);
      } catch (err) {
        if (this.stopped) break;
        if (apiStatus(err) === 410) {
          this.goneSeen();
          continue;
        }
        failures += 1;
        this.stats.failures += 1;
        const delay = Math.min((this.opts.initialBackoffMs ?? 250) * 2 ** (failures - 1), this.opts.maxBackoffMs ?? 30_000);
        this.opts.logger.warn('kubernetes list/watch failed; retrying', { resource: this.opts.name, error: apiMessage(err), retry_ms: delay });
        await this.sleep(delay * (0.8 + Math.random() * 0.4));
      }
    }
  }

  private goneSeen(): void {
    this.opts.logger.info('kubernetes watch expired (410 Gone); listing again', { resource: this.opts.name, resource_version: this.resourceVersion });
    this.resourceVersion = '';
    this.stats.relistsAfterGone += 1;
  }

  private async relist(): Promise<void> {
    const list = await this.opts.list();
    if (this.stopped) return;
    this.stats.lists += 1;
    const fresh = new Map<string, T>();
    for (const item of list.items ?? []) fresh.set(objectKey(item), item);
    for (const [key, old] of this.cache) {
      if (!fresh.has(key)) {
        this.cache.delete(key);
        this.deliver(() => this.opts.handler.remove(old));
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (!old || old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.deliver(() => this.opts.handler.upsert(obj));
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    this.deliver(() => this.opts.handler.listed?.());
    if (!this.hasListed) {
      this.hasListed = true;
      for (const w of this.listedWaiters.splice(0)) w();
    }
  }

  /** One watch request; resolves when the server ends it, rejects on a failure. */
  private watchOnce(): Promise<WatchEnd> {
    this.stats.watches += 1;
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: this.opts.watchTimeoutSeconds?.() ?? 300 + Math.floor(Math.random() * 300),
    };
    if (this.opts.fieldSelector) params.fieldSelector = this.opts.fieldSelector;
    if (this.opts.labelSelector) params.labelSelector = this.opts.labelSelector;
    return new Promise<WatchEnd>((resolve, reject) => {
      let gone = false;
      let failure: Error | undefined;
      const onEvent = (type: string, obj: unknown): void => {
        if (this.stopped) return;
        if (type === 'ERROR') {
          const status = obj as { code?: number; message?: string } | undefined;
          if (status?.code === 410) gone = true;
          else failure = Object.assign(new Error(`watch error: ${status?.message ?? 'unknown'}`), { statusCode: status?.code });
          return;
        }
        const o = obj as T;
        const rv = o?.metadata?.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED') {
          this.cache.set(objectKey(o), o);
          this.deliver(() => this.opts.handler.upsert(o));
        } else if (type === 'DELETED') {
          const key = objectKey(o);
          const known = this.cache.get(key);
          this.cache.delete(key);
          this.deliver(() => this.opts.handler.remove(known ?? o));
        }
        // BOOKMARK carries only a resourceVersion: the point to resume from
        if (rv) this.resourceVersion = rv;
      };
      const onDone = (err: unknown): void => {
        this.abort = undefined;
        if (this.stopped) return resolve('closed');
        if (gone) return resolve('gone');
        if (failure) return reject(failure);
        if (err && (err as Error).name !== 'AbortError') return reject(err);
        resolve('closed');
      };
      this.opts.watch.watch(this.opts.path, params, onEvent, onDone).then((controller) => {
        this.abort = controller;
        if (this.stopped) controller.abort();
      }, reject);
    });
  }

  private deliver(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.opts.logger.error('kubernetes event handler failed', { resource: this.opts.name, error: err });
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void { clearTimeout(timer); resolve(); }
      this.wake = () => { this.wake = undefined; done(); };
    });
  }
}
