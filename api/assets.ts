import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository (or installed package) root: the nearest folder above this
 * compiled file that holds package.json. Protos, migrations and BPF objects are
 * read from there, whichever dist folder the code was compiled into.
 */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('meshid: cannot find the package root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export const packageRoot = findRoot();
export const protoDir = join(packageRoot, 'api', 'proto');
export const migrationsDir = join(packageRoot, 'migrations');
/** Compiled eBPF objects (`make bpf`). */
export const bpfObjectDir = join(packageRoot, 'build', 'bpf');
