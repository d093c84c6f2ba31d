/** The meshid-server binary. */
import { Command, CommanderError } from 'commander';
import { systemClock } from '../common/clock.js';
import { JsonLogger } from '../common/log.js';
import { EventLoopWatchdog } from '../common/watchdog.js';
import { MeshidError, TrustDomain } from '../spiffe/index.js';
import { loadServerConfig } from './config.js';
import { MeshidServer } from './server.js';
import { backupDatastore, copyDatastore } from './datastore/index.js';
import { join } from 'node:path';

const program = new Command('meshid-server')
  .description('SPIFFE identity and mutual-authentication authority: signs SVIDs, keeps registration entries, attests agents')
  .exitOverride();

program.command('run')
  .description('run the server until SIGTERM or SIGINT')
  .option('--config <file>', 'YAML or JSON config file')
  .option('--data-dir <dir>', 'where the datastore, CA keys and admin token live')
  .option('--trust-domain <td>', 'trust domain, e.g. example.org')
  .option('--bind <host:port>', 'agent API (gRPC over TLS) address')
  .option('--admin <host:port>', 'admin HTTP API address')
  .option('--log-level <level>', 'debug, info, warn or error')
  .option('--datastore <url>', 'sqlite:PATH (default sqlite:<data-dir>/datastore.sqlite3) or postgres://user@host:port/db for several servers')
  .option('--init-fresh', 'start a new installation (new datastore and CA) in a data dir whose datastore is missing or empty; without it such a start is refused')
  .option('--replace-lost-ca-key', 'make a new CA key where the active one is missing from keys/; without it such a start is refused')
  .action(async (o: { config?: string; dataDir?: string; trustDomain?: string; bind?: string; admin?: string; logLevel?: string; datastore?: string; initFresh?: boolean; replaceLostCaKey?: boolean }) => {
    const config = loadServerConfig(o.config, { data_dir: o.dataDir, trust_domain: o.trustDomain, bind: o.bind, admin: o.admin, log_level: o.logLevel });
    if (o.datastore !== undefined) config.datastore.url = o.datastore;
    const logger = new JsonLogger(process.stderr, config.log_level, { service: 'meshid-server' });
    new EventLoopWatchdog({ stallLimitMs: config.watchdog.stall_limit * 1000, service: 'meshid-server' }).start();
    const server = new MeshidServer(config, { clock: systemClock, logger, startup: { initFresh: !!o.initFresh, replaceLostCaKey: !!o.replaceLostCaKey } });
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info('stopping', { signal });
      server.stop().then(() => process.exit(0), (err) => { logger.error('stop failed', { err }); process.exit(1); });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    try {
      await server.start();
    } catch (err) {
      await server.stop().catch(() => {});
      throw err;
    }
  });

const datastore = program.command('datastore').description('the server\'s datastore');
datastore.command('backup')
  .description('write a consistent copy of the datastore to FILE (SQLite online backup; safe while the server runs). CA keys (data dir keys/) are not in it: back them up as the secrets they are')
  .argument('<file>', 'the backup file to create (must not exist)')
  .option('--config <file>', 'YAML or JSON config file (for data_dir)')
  .option('--data-dir <dir>', 'the server\'s data dir')
  .action(async (file: string, o: { config?: string; dataDir?: string }) => {
    const config = loadServerConfig(o.config, { data_dir: o.dataDir });
    const s = await backupDatastore(join(config.data_dir, 'datastore.sqlite3'), file);
    process.stdout.write(`Wrote ${s.file}: installation ${s.installationId || '(not recorded)'}, schema ${s.schemaVersion}, revision ${s.revision}, ${s.entries} entries, ${s.agents} agents.\n` +
      `Restore: stop the server, copy it to ${join(config.data_dir, 'datastore.sqlite3')}, remove that file's -wal and -shm, start the server.\n`);
  });

datastore.command('migrate')
  .description('copy every table of one datastore into a new, empty one (e.g. sqlite:PATH to postgres://… to run several servers); stop the server first')
  .requiredOption('--from <url>', 'the datastore to copy: sqlite:PATH or postgres://…')
  .requiredOption('--to <url>', 'the empty datastore to copy into')
  .option('--trust-domain <td>', 'trust domain (default example.org)', 'example.org')
  .action(async (o: { from: string; to: string; trustDomain: string }) => {
    const s = await copyDatastore(o.from, o.to, TrustDomain.parse(o.trustDomain), (line) => process.stderr.write(line + '\n'));
    const total = Object.values(s.rows).reduce((a, b) => a + b, 0);
    process.stdout.write(`Copied ${total} rows from ${s.from} to ${s.to} at revision ${s.revision}: ` +
      `${s.rows['registered_entries']} entries, ${s.rows['attested_nodes']} agents, ${s.rows['servers']} servers.\n` +
      'Start the server with --datastore pointing at the copy and its data dir unchanged (server_id, keys/): agents carry on without attesting again.\n');
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const field = err instanceof MeshidError && err.field ? ` (${err.field})` : '';
  process.stderr.write(`meshid-server: ${(err as Error).message}${field}\n`);
  process.exit(err instanceof MeshidError ? 1 : 70);
});
