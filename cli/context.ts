/** What every command gets from the global options: the API client and the output format. */
import type { Command } from 'commander';
import { AdminClient, DEFAULT_SERVER, readAdminToken } from './client.js';
import { CliError, UsageError } from './errors.js';
import { Output, type OutputFormat } from './output.js';

export interface GlobalOptions {
  server?: string;
  tokenFile?: string;
  output: OutputFormat;
}

export interface CliContext {
  client: AdminClient;
  out: Output;
}

/** The server URL: --server, then MESHID_SERVER, then the default; only http and https. */
export function serverUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = flag ?? (env.MESHID_SERVER || DEFAULT_SERVER);
  let url: URL;
  try { url = new URL(raw); } catch { throw new UsageError(`--server "${raw}" is not a URL like ${DEFAULT_SERVER}`); }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--server "${raw}" must be an http:// or https:// URL`);
  return raw;
}

export function cliContext(cmd: Command): CliContext {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const server = serverUrl(opts.server);
  return { client: new AdminClient(server, () => readAdminToken(opts.tokenFile)), out: new Output(opts.output) };
}

/** Commander's collector for repeatable flags (--selector a --selector b). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * A TTL flag's value: "90s", "15m", "1h", "2d" or plain seconds, as whole seconds.
 * The error names the flag and the API field it sets. (common/config.js, which
 * parses durations, loads the YAML parser: it is imported only when a TTL is given.)
 */
export async function ttlSeconds(value: string | undefined, flag: string, field: string): Promise<number | undefined> {
  if (value === undefined) return undefined;
  const { parseDuration } = await import('../common/config.js');
  let seconds: number;
  try { seconds = parseDuration(value, field); } catch (err) { throw new CliError(`invalid ${field} (${flag}): ${(err as Error).message}`); }
  if (!Number.isInteger(seconds)) throw new CliError(`invalid ${field} (${flag}): "${value}" is not a whole number of seconds`);
  return seconds;
}

/** A flag that takes a whole number. */
export function wholeNumberFlag(flag: string, field: string) {
  return (value: string): number => {
    if (!/^\d{1,10}$/.test(value)) throw new CliError(`invalid ${field} (${flag}): "${value}" is not a whole number`);
    return Number(value);
  };
}
