/** The admin API client every command uses: base URL, bearer token, JSON in and out, errors as ApiError. */
import { existsSync, readFileSync } from 'node:fs';
import { ApiError, CliError } from './errors.js';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';
export const DEFAULT_TOKEN_FILE = '/var/lib/meshid/server/admin.token';
/** Where `meshid demo up` keeps its server's token (deploy/devnet/demo.ts, default prefix). */
export const DEMO_TOKEN_FILE = '/var/lib/meshid/demo-md/server/admin.token';
const TIMEOUT_MS = 30_000;

export type Query = Record<string, string | number | boolean | readonly string[] | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  /** /ready needs no token; everything under /v1 does. */
  auth?: boolean;
}

export interface Response<T> { status: number; body: T; text: string }

/**
 * Where the bearer token comes from, first that applies: --token-file, then
 * MESHID_ADMIN_TOKEN (the token itself), then the file MESHID_TOKEN_FILE names,
 * then the server's default token file, and when that is absent the demo
 * server's (`meshid demo up`), so the demo's walkthrough needs no flags.
 */
export function readAdminToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (tokenFile === undefined && env.MESHID_ADMIN_TOKEN) return env.MESHID_ADMIN_TOKEN.trim();
  const file = tokenFile ?? (env.MESHID_TOKEN_FILE || (!existsSync(DEFAULT_TOKEN_FILE) && existsSync(DEMO_TOKEN_FILE) ? DEMO_TOKEN_FILE : DEFAULT_TOKEN_FILE));
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new CliError(`cannot read the admin token from ${file} (${why}); pass --token-file FILE or set MESHID_ADMIN_TOKEN`);
  }
  if (token === '') throw new CliError(`the admin token file ${file} is empty`);
  return token;
}

export class AdminClient {
  private token: string | undefined;

  /** `loadToken` runs once, on the first request that needs the token. */
  constructor(readonly server: string, private readonly loadToken: () => string) {}

  get<T>(path: string, query?: Query): Promise<T> { return this.call<T>('GET', path, { query }); }
  post<T>(path: string, body?: unknown): Promise<T> { return this.call<T>('POST', path, { body }); }
  put<T>(path: string, body: unknown): Promise<T> { return this.call<T>('PUT', path, { body }); }
  patch<T>(path: string, body: unknown): Promise<T> { return this.call<T>('PATCH', path, { body }); }
  delete<T>(path: string): Promise<T> { return this.call<T>('DELETE', path, {}); }

  /** The body of a 2xx answer; anything else throws ApiError with the API's code, message and field. */
  async call<T>(method: string, path: string, opts: RequestOptions): Promise<T> {
    const res = await this.request<T>(method, path, opts);
    if (res.status >= 200 && res.status < 300) return res.body;
    const err = (res.body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | undefined)?.error;
    if (err && typeof err.message === 'string') {
      throw new ApiError(res.status, String(err.code ?? 'unknown'), err.message, typeof err.field === 'string' ? err.field : undefined);
    }
    throw new ApiError(res.status, 'unknown', `HTTP ${res.status} from ${this.server}${path}`);
  }

  /**
   * An NDJSON answer, line by line, for as long as the server sends it (no
   * timeout: `observe --follow` runs until stopped). Resolves when the answer
   * ends or `signal` aborts; a refusal throws ApiError as call() does.
   */
  async stream(path: string, query: Query, onLine: (line: string) => void, signal?: AbortSignal): Promise<void> {
    const url = new URL(path, this.server.endsWith('/') ? this.server : this.server + '/');
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.append(key, String(value));
    this.token ??= this.loadToken();
    let res: globalThis.Response;
    try {
      res = await fetch(url, { headers: { accept: 'application/x-ndjson', authorization: `Bearer ${this.token}` }, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (signal?.aborted) return;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(`cannot reach meshid-server at ${this.server}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (res.status >= 300) {
      const text = await res.text();
      let err: { code?: unknown; message?: unknown; field?: unknown } | undefined;
      try { err = (JSON.parse(text) as { error?: typeof err }).error; } catch { err = undefined; }
      throw new ApiError(res.status, String(err?.code ?? 'unknown'), typeof err?.message === 'string' ? err.message : `HTTP ${res.status} from ${this.server}${path}`, typeof err?.field === 'string' ? err.field : undefined);
    }
    let buf = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) { const line = buf.slice(0, nl); buf = buf.slice(nl + 1); if (line) onLine(line); }
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw new CliError(`the answer of meshid-server at ${this.server} broke off: ${(err as Error).message}`);
    }
  }

  /** Any answer, with its status; throws only when the server cannot be reached. */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<Response<T>> {
    const url = new URL(path, this.server.endsWith('/') ? this.server : this.server + '/');
    for (const [key, value] of Object.entries(opts.query ?? {})) {
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
    }
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.auth !== false) {
      this.token ??= this.loadToken();
      headers.authorization = `Bearer ${this.token}`;
    }
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    let res: globalThis.Response;
    try {
      res = await fetch(url, {
        method, headers, signal: AbortSignal.timeout(TIMEOUT_MS),
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(`cannot reach meshid-server at ${this.server}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    const text = await res.text();
    let body: unknown = text;
    if ((res.headers.get('content-type') ?? '').includes('json')) {
      try { body = JSON.parse(text); } catch { body = text; }
    }
    return { status: res.status, body: body as T, text };
  }
}
