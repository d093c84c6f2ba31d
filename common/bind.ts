import { InvalidArgument } from '../spiffe/index.js';

/** "127.0.0.1:8080", "[::1]:8080", ":8080" (all addresses) → host and port. */
export function parseBind(bind: string, field = 'admin'): { host: string | undefined; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(bind);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new InvalidArgument(`${field} bind address "${bind}" must be HOST:PORT`, field);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port };
}
