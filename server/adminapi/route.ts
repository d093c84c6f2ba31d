/** What one admin API route is: the table that AdminApi registers and the OpenAPI test reads. */
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/log.js';
import type { Bundle, TrustDomain } from '../../spiffe/index.js';
import type { CertificateAuthority } from '../ca/index.js';
import type { Datastore } from '../datastore/index.js';
import type { ServerMetrics } from '../metrics.js';
import type { Registration } from '../registration/index.js';
import type { RelayHub } from '../observe/index.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** What a handler sees of a request: already authenticated, body already parsed. */
export interface AdminRequest {
  params: Record<string, string>;
  query: Record<string, unknown>;
  body: unknown;
}

/** The object each audit line names, and the error if that part of the change failed. */
export interface AuditOutcome {
  target: string;
  error?: unknown;
}

/** Where a streaming reply writes its lines (NDJSON), and hears that the caller went away. */
export interface StreamOut {
  write(line: string): void;
  end(): void;
  onClose(fn: () => void): void;
}

export interface Reply {
  status?: number;
  /** A streaming answer (application/x-ndjson): called once the headers are out. */
  stream?: (out: StreamOut) => void;
  /** A JSON body; or `text` with its content type. */
  json?: unknown;
  text?: string;
  contentType?: string;
  /** For routes with an `action`: one audit line per outcome (batches have one per item). */
  audit?: AuditOutcome[];
}

export interface Route {
  method: Method;
  /** The OpenAPI path template: `/v1/entries/{id}`, `/v1/agents/{id}:ban`. */
  path: string;
  /** /live, /ready and /metrics answer without the bearer token. */
  public?: boolean;
  /** Routes that change state name their audit action (`entry.create`). */
  action?: string;
  /** The audit target when the handler throws before it knows one. */
  target?: (req: AdminRequest) => string;
  handle(req: AdminRequest): Reply | Promise<Reply>;
}

/** The server parts that handlers use. */
export interface RouteContext {
  trustDomain: TrustDomain;
  store: Datastore;
  ca: CertificateAuthority;
  registration: Registration;
  metrics: ServerMetrics;
  clock: Clock;
  logger: Logger;
  ready: () => boolean;
  /** The trust domain's bundle: every server's authorities (default: this CA's). */
  trustBundle: () => Bundle;
  /** This server's id among those sharing the datastore ('' in tests that run no MeshidServer). */
  serverId: string;
  /** What the agents relay (flows, auth maps, explain); absent where no agent API runs. */
  relay?: RelayHub;
}

/** Best-effort target for a failed change: a string member of the body, if it has one. */
export function bodyString(req: AdminRequest, key: string): string {
  const body = req.body as Record<string, unknown> | undefined;
  const v = body && typeof body === 'object' ? body[key] : undefined;
  return typeof v === 'string' ? v : '';
}
