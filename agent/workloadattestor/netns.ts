import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Selector } from '../../spiffe/index.js';
import type { WorkloadAttestor } from './attestor.js';

export interface NetnsAttestorOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Where `ip netns` bind-mounts named namespaces. Default /run/netns. */
  netnsDir?: string;
}

/**
 * Selectors of a process's network namespace: `netns:inode:<inode>` of
 * /proc/<pid>/ns/net, and `netns:name:<name>` for each /run/netns/<name> bind
 * mount of the same namespace (same nsfs device and inode), which is how
 * `ip netns` names namespaces. Devnet pods are namespaces, so this is their identity.
 */
export class NetnsAttestor implements WorkloadAttestor {
  private readonly procRoot: string;
  private readonly netnsDir: string;

  constructor(options: NetnsAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? '/proc';
    this.netnsDir = options.netnsDir ?? '/run/netns';
  }

  async attest(pid: number): Promise<Selector[]> {
    const ns = await stat(join(this.procRoot, String(pid), 'ns', 'net'), { bigint: true });
    const out = [Selector.of('netns', `inode:${ns.ino}`)];
    let names: string[];
    try { names = await readdir(this.netnsDir); } catch { names = []; }
    const matches = await Promise.all(names.map(async (name) => {
      try {
        const st = await stat(join(this.netnsDir, name), { bigint: true });
        return st.ino === ns.ino && st.dev === ns.dev ? name : undefined;
      } catch {
        return undefined; // deleted meanwhile, or a name whose mount is gone
      }
    }));
    for (const name of matches.sort()) if (name) out.push(Selector.of('netns', `name:${name}`));
    return out;
  }
}
