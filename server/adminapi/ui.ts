/**
 * The web UI on the admin listener: its files under /ui/, and the sessions a
 * browser holds them with. `meshid ui` asks (with the admin token) for a login
 * code that lives a minute and works once; /ui/login exchanges it for a session
 * cookie (HttpOnly, SameSite=Strict, 8 h). A session reads: with it the admin
 * API answers GET requests only, so a browser tab can never change the mesh.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Request, Response, Router } from 'express';
import express from 'express';
import type { Clock } from '../../common/clock.js';
import type { Route } from './route.js';

const CODE_TTL_MS = 60_000;
const SESSION_TTL_MS = 8 * 3600_000;
export const SESSION_COOKIE = 'meshid_session';
const MAX_SESSIONS = 1000;

const digest = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Login codes and sessions, kept in memory (a restarted server asks for a new `meshid ui`). */
export class UiSessions {
  readonly #codes = new Map<string, number>();
  readonly #sessions = new Map<string, number>();

  constructor(private readonly clock: Clock) {}

  /** A one-time login code, valid for a minute. */
  newCode(): { code: string; expiresAt: Date } {
    this.#sweep();
    const code = randomBytes(24).toString('base64url');
    const expires = this.clock.now().getTime() + CODE_TTL_MS;
    this.#codes.set(digest(code), expires);
    return { code, expiresAt: new Date(expires) };
  }

  /** A session for a valid code (the code is spent); undefined for any other. */
  exchange(code: string): { session: string; maxAgeMs: number } | undefined {
    const key = digest(code);
    const expires = this.#codes.get(key);
    this.#codes.delete(key);
    if (expires === undefined || expires <= this.clock.now().getTime()) return undefined;
    this.#sweep();
    if (this.#sessions.size >= MAX_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value!);
    const session = randomBytes(32).toString('base64url');
    this.#sessions.set(digest(session), this.clock.now().getTime() + SESSION_TTL_MS);
    return { session, maxAgeMs: SESSION_TTL_MS };
  }

  /** Whether the request carries a live session cookie. */
  holds(req: Request): boolean {
    const cookie = req.get('cookie') ?? '';
    const m = new RegExp(`(?:^|;\\s*)${SESSION_COOKIE}=([A-Za-z0-9_-]{20,100})`).exec(cookie);
    if (!m) return false;
    const key = digest(m[1]!);
    for (const [k, expires] of this.#sessions) {
      // constant-time on the digest, so the lookup tells nothing of other sessions
      if (timingSafeEqual(Buffer.from(k, 'hex'), Buffer.from(key, 'hex'))) return expires > this.clock.now().getTime();
    }
    return false;
  }

  #sweep(): void {
    const now = this.clock.now().getTime();
    for (const [k, e] of this.#codes) if (e <= now) this.#codes.delete(k);
    for (const [k, e] of this.#sessions) if (e <= now) this.#sessions.delete(k);
  }
}

/** The UI's files (bundled by `npm run build` into dist/ui). */
export function uiRouter(dir: string, sessions: UiSessions): Router {
  const router = express.Router();
  const files: Record<string, string> = { 'app.js': 'text/javascript', 'app.css': 'text/css' };
  const page = (res: Response, status: number, title: string, text: string): void => {
    res.status(status).type('text/html').send(`<!doctype html><meta charset="utf-8"><title>meshid — ${title}</title>` +
      `<body style="font:15px system-ui;margin:3em"><h1>meshid</h1><p>${text}</p></body>`);
  };
  router.get('/login', (req, res) => {
    const code = typeof req.query['code'] === 'string' ? req.query['code'] : '';
    const granted = code ? sessions.exchange(code) : undefined;
    if (!granted) { page(res, 401, 'login', 'This login link is not valid (each works once, for a minute). Run <code>meshid ui</code> again.'); return; }
    res.cookie(SESSION_COOKIE, granted.session, { httpOnly: true, sameSite: 'strict', maxAge: granted.maxAgeMs, path: '/' });
    res.redirect(303, '/ui/');
  });
  router.use((req, res, next) => {
    if (sessions.holds(req)) { next(); return; }
    page(res, 401, 'sign in', 'Open the link that <code>meshid ui</code> prints to sign in.');
  });
  router.get('/', (_req, res) => {
    const index = join(dir, 'index.html');
    if (!existsSync(index)) { page(res, 503, 'not built', 'The UI is not built: run <code>npm run build</code>.'); return; }
    res.type('text/html').set('cache-control', 'no-store').send(readFileSync(index));
  });
  for (const [name, type] of Object.entries(files)) {
    router.get(`/${name}`, (_req, res) => {
      const file = join(dir, name);
      if (!existsSync(file)) { res.status(404).end(); return; }
      res.type(type).set('cache-control', 'no-store').send(readFileSync(file));
    });
  }
  return router;
}

/** POST /v1/ui/sessions: a login code for the web UI (what `meshid ui` asks for). */
export function uiRoutes(sessions: UiSessions): Route[] {
  return [{
    method: 'post', path: '/v1/ui/sessions', action: 'ui.login_code', target: () => 'ui',
    handle() {
      const { code, expiresAt } = sessions.newCode();
      return { status: 201, json: { login_path: `/ui/login?code=${code}`, expires_at: expiresAt.toISOString() }, audit: [{ target: 'ui' }] };
    },
  }];
}
