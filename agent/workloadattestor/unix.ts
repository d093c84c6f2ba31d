import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Selector } from '../../spiffe/index.js';
import type { WorkloadAttestor } from './attestor.js';

export interface UnixAttestorOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Default /etc/passwd and /etc/group: names for `unix:user:` and `unix:group:`. */
  passwdPath?: string;
  groupPath?: string;
  /** Emit `unix:sha256:<hex>` of the executable (spire-agent's unix attestor does the same). Default false. */
  workloadSha256?: boolean;
  /** Executables larger than this are not hashed (no `unix:sha256:` selector). Default 256 MiB. */
  sha256SizeLimit?: number;
}

/** name by id, re-read when the file's mtime or size changes */
interface NameTable { mtimeMs: number; size: number; names: Map<number, string> }

/**
 * Selectors of a process's Unix identity: `unix:uid:`, `unix:user:`, `unix:gid:`,
 * `unix:group:` (from the connection's credentials, names from /etc/passwd and
 * /etc/group), `unix:supplementary_gid:` / `unix:supplementary_group:`
 * (/proc/<pid>/status), `unix:path:` (/proc/<pid>/exe) and optionally
 * `unix:sha256:` of the executable.
 */
export class UnixAttestor implements WorkloadAttestor {
  private readonly procRoot: string;
  private readonly passwdPath: string;
  private readonly groupPath: string;
  private readonly workloadSha256: boolean;
  private readonly sha256SizeLimit: number;
  private readonly tables = new Map<string, NameTable>();
  /** sha256 by executable (path, device, inode, mtime, size); bounded */
  private readonly hashes = new Map<string, string>();

  constructor(options: UnixAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? '/proc';
    this.passwdPath = options.passwdPath ?? '/etc/passwd';
    this.groupPath = options.groupPath ?? '/etc/group';
    this.workloadSha256 = options.workloadSha256 ?? false;
    this.sha256SizeLimit = options.sha256SizeLimit ?? 256 * 1024 * 1024;
  }

  async attest(pid: number, uid: number, gid: number): Promise<Selector[]> {
    const procDir = join(this.procRoot, String(pid));
    const [users, groups, supplementary, exePath] = await Promise.all([
      this.nameTable(this.passwdPath, 2),
      this.nameTable(this.groupPath, 2),
      supplementaryGids(procDir),
      readlink(join(procDir, 'exe')),
    ]);
    const out: Selector[] = [Selector.of('unix', `uid:${uid}`), Selector.of('unix', `gid:${gid}`)];
    const user = users.get(uid);
    if (user) out.push(Selector.of('unix', `user:${user}`));
    const group = groups.get(gid);
    if (group) out.push(Selector.of('unix', `group:${group}`));
    for (const g of supplementary) {
      out.push(Selector.of('unix', `supplementary_gid:${g}`));
      const name = groups.get(g);
      if (name) out.push(Selector.of('unix', `supplementary_group:${name}`));
    }
    out.push(Selector.of('unix', `path:${exePath}`));
    if (this.workloadSha256) {
      const digest = await this.executableSha256(join(procDir, 'exe'), exePath);
      if (digest) out.push(Selector.of('unix', `sha256:${digest}`));
    }
    return out;
  }

  /** /etc/passwd and /etc/group: `name:x:id:…`, the id in field `idField` (0-based). */
  private async nameTable(path: string, idField: number): Promise<Map<number, string>> {
    let st;
    try { st = await stat(path); } catch { return new Map(); }
    const cached = this.tables.get(path);
    if (cached && cached.mtimeMs === st.mtimeMs && cached.size === st.size) return cached.names;
    const names = new Map<number, string>();
    for (const line of (await readFile(path, 'utf8')).split('\n')) {
      if (line.startsWith('#')) continue;
      const fields = line.split(':');
      const id = Number(fields[idField]);
      const name = fields[0];
      // the first line wins for a duplicated id, as getpwuid(3) does
      if (name && fields[idField] !== '' && Number.isInteger(id) && !names.has(id)) names.set(id, name);
    }
    this.tables.set(path, { mtimeMs: st.mtimeMs, size: st.size, names });
    return names;
  }

  /**
   * Hashes the executable through /proc/<pid>/exe, which opens the very file the
   * process runs even from another mount namespace or after it was unlinked.
   */
  private async executableSha256(exeLink: string, exePath: string): Promise<string | undefined> {
    const st = await stat(exeLink, { bigint: true });
    if (st.size > BigInt(this.sha256SizeLimit)) return undefined;
    const key = `${exePath}\0${st.dev}\0${st.ino}\0${st.mtimeNs}\0${st.size}`;
    const cached = this.hashes.get(key);
    if (cached) return cached;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(exeLink)) hash.update(chunk as Buffer);
    const digest = hash.digest('hex');
    if (this.hashes.size >= 1024) this.hashes.delete(this.hashes.keys().next().value!);
    this.hashes.set(key, digest);
    return digest;
  }
}

async function supplementaryGids(procDir: string): Promise<number[]> {
  const status = await readFile(join(procDir, 'status'), 'latin1');
  const line = status.split('\n').find((l) => l.startsWith('Groups:'));
  if (!line) return [];
  return line.slice('Groups:'.length).trim().split(/\s+/).filter((s) => s !== '').map(Number);
}
