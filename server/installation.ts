/**
 * The data directory remembers that it was initialised, with which datastore
 * and trust domain (installation.json, 0600), and the datastore remembers the
 * same installation id. A server whose datastore went missing, was emptied,
 * or belongs to another installation refuses to start and says how to
 * recover, instead of starting fresh with a new CA that no agent trusts
 * (issue 14). A new installation over an initialised data dir needs
 * --init-fresh.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FailedPrecondition } from '../spiffe/index.js';
import type { Datastore } from './datastore/index.js';

export const INSTALLATION_FILE = 'installation.json';

export interface InstallationMarker { installation_id: string; trust_domain: string; datastore: string; created_at: string }

export interface InstallationOptions {
  dataDir: string;
  datastorePath: string;
  trustDomain: string;
  /** Where the CA keys live on disk, when they do (key_manager: disk). */
  keysDir?: string;
  /** The operator asked for a new installation even though one was here. */
  initFresh: boolean;
}

const RECOVER = (o: InstallationOptions): string =>
  `restore the datastore from a backup (stop the server, copy the file made by "meshid-server datastore backup" to ${o.datastorePath}, remove ${o.datastorePath}-wal and -shm, start again), ` +
  'or, to give up this installation and start a new one whose CA no agent trusts yet, start once with --init-fresh';

function readMarker(dataDir: string): InstallationMarker | undefined {
  const path = join(dataDir, INSTALLATION_FILE);
  if (!existsSync(path)) return undefined;
  try {
    const m = JSON.parse(readFileSync(path, 'utf8')) as InstallationMarker;
    if (typeof m.installation_id !== 'string' || typeof m.trust_domain !== 'string') throw new Error('installation_id or trust_domain is missing');
    return m;
  } catch (err) {
    throw new FailedPrecondition(`${path} is not readable installation data (${(err as Error).message}); it records which datastore this data dir belongs to: restore it or remove it`);
  }
}

function writeMarker(o: InstallationOptions, installationId: string): void {
  const path = join(o.dataDir, INSTALLATION_FILE);
  const marker: InstallationMarker = { installation_id: installationId, trust_domain: o.trustDomain, datastore: `sqlite:${o.datastorePath}`, created_at: new Date().toISOString() };
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(marker, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

const hasCaKeys = (keysDir: string | undefined): boolean =>
  !!keysDir && existsSync(keysDir) && readdirSync(keysDir).some((f) => f.endsWith('.pem'));

/** Before the datastore is opened (opening creates a missing file): refuses a missing or empty datastore where one is expected. */
export function checkBeforeOpen(o: InstallationOptions): void {
  const marker = readMarker(o.dataDir);
  if (marker && marker.trust_domain !== o.trustDomain && !o.initFresh) {
    throw new FailedPrecondition(`data dir ${o.dataDir} belongs to trust domain ${marker.trust_domain}, not ${o.trustDomain}: point --data-dir at this trust domain's directory`, 'trust_domain');
  }
  if (o.initFresh) return;
  const present = existsSync(o.datastorePath) && statSync(o.datastorePath).size > 0;
  if (present) return;
  const state = existsSync(o.datastorePath) ? 'empty (0 bytes)' : 'missing';
  if (marker) {
    throw new FailedPrecondition(`datastore ${o.datastorePath} is ${state}, but data dir ${o.dataDir} was initialised (installation ${marker.installation_id}, ${marker.created_at}): ${RECOVER(o)}`, 'datastore');
  }
  if (hasCaKeys(o.keysDir)) {
    throw new FailedPrecondition(`datastore ${o.datastorePath} is ${state}, but CA keys exist in ${o.keysDir}: this data dir held an installation; ${RECOVER(o)}`, 'datastore');
  }
}

/** After it is opened: binds the datastore and the data dir to one installation, or refuses a datastore that is not this one. */
export async function bindInstallation(store: Datastore, o: InstallationOptions): Promise<{ installationId: string; created: boolean }> {
  const marker = readMarker(o.dataDir);
  const record = await store.installation();
  if (record) {
    if (record.trustDomain !== o.trustDomain) {
      throw new FailedPrecondition(`datastore ${o.datastorePath} belongs to trust domain ${record.trustDomain}, not ${o.trustDomain}`, 'trust_domain');
    }
    if (marker && marker.installation_id !== record.installationId && !o.initFresh) {
      throw new FailedPrecondition(`datastore ${o.datastorePath} belongs to installation ${record.installationId}, but data dir ${o.dataDir} to ${marker.installation_id}: ` +
        'it was copied from another server; put this installation\'s datastore back, or start with --init-fresh to adopt it (this data dir\'s CA keys will not match its CA journal)', 'datastore');
    }
    if (!marker || marker.installation_id !== record.installationId) writeMarker(o, record.installationId);
    return { installationId: record.installationId, created: false };
  }
  // No record: a datastore from before installations were recorded, or a new one.
  const hadData = await store.hasData();
  if (!hadData && !o.initFresh) {
    if (marker) throw new FailedPrecondition(`datastore ${o.datastorePath} is empty, but data dir ${o.dataDir} was initialised (installation ${marker.installation_id}, ${marker.created_at}): ${RECOVER(o)}`, 'datastore');
    if (hasCaKeys(o.keysDir)) throw new FailedPrecondition(`datastore ${o.datastorePath} is empty, but CA keys exist in ${o.keysDir}: ${RECOVER(o)}`, 'datastore');
  }
  const id = hadData && marker ? marker.installation_id : randomUUID();
  // servers starting together on a new database: the first one's record is the installation
  const recorded = await store.recordInstallation(id);
  if (recorded.trustDomain !== o.trustDomain) {
    throw new FailedPrecondition(`datastore ${o.datastorePath} belongs to trust domain ${recorded.trustDomain}, not ${o.trustDomain}`, 'trust_domain');
  }
  writeMarker(o, recorded.installationId);
  return { installationId: recorded.installationId, created: !hadData && recorded.installationId === id };
}
