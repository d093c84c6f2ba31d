/** `meshid x509 mint`: an X509-SVID signed by the server for a key made here (like `spire-server x509 mint`). */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { createCsr, generateKeyPair, privateKeyPem } from '../spiffe/index.js';
import { cliContext, collect, ttlSeconds } from './context.js';
import { CliError } from './errors.js';
import { formatTime } from './output.js';

interface MintedX509 { spiffe_id: string; cert_chain: string; expires_at: number; bundle: string }

/** Writes svid.pem, key.pem (0600, even when it existed) and bundle.pem into `dir`. */
function writeSvidFiles(dir: string, svid: MintedX509, keyPem: string): { svid: string; key: string; bundle: string } {
  const files = { svid: join(dir, 'svid.pem'), key: join(dir, 'key.pem'), bundle: join(dir, 'bundle.pem') };
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(files.key, keyPem, { mode: 0o600 });
    chmodSync(files.key, 0o600);
    writeFileSync(files.svid, svid.cert_chain, { mode: 0o644 });
    writeFileSync(files.bundle, svid.bundle, { mode: 0o644 });
  } catch (err) {
    throw new CliError(`cannot write the SVID to ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return files;
}

export function registerX509Commands(program: Command): void {
  const x509 = program.command('x509').description('X509-SVIDs');
  x509.command('mint')
    .description('mint an X509-SVID: the key pair (EC P-256) is made here and only a CSR is sent')
    .requiredOption('--spiffe-id <id>', 'the SPIFFE ID of the SVID')
    .option('--ttl <duration>', 'lifetime, e.g. 1h (default: the server default)')
    .option('--dns <name>', 'a DNS SAN (repeatable)', collect)
    .option('--write <dir>', 'write svid.pem, key.pem (0600) and bundle.pem into DIR instead of printing them')
    .action(async (flags: { spiffeId: string; ttl?: string; dns?: string[]; write?: string }, cmd: Command) => {
      const ctx = cliContext(cmd);
      const keys = generateKeyPair('ec-p256');
      const body: Record<string, unknown> = { spiffe_id: flags.spiffeId, csr: createCsr(keys.privateKey, keys.publicKey).toString('base64') };
      const ttl = await ttlSeconds(flags.ttl, '--ttl', 'ttl');
      if (ttl !== undefined) body.ttl = ttl;
      if (flags.dns !== undefined) body.dns_names = flags.dns;
      const svid = await ctx.client.post<MintedX509>('/v1/svids/x509', body);
      const keyPem = privateKeyPem(keys.privateKey);
      if (flags.write !== undefined) {
        const files = writeSvidFiles(flags.write, svid, keyPem);
        ctx.out.result({ spiffe_id: svid.spiffe_id, expires_at: svid.expires_at, files },
          () => `wrote the X509-SVID of ${svid.spiffe_id} (expires ${formatTime(svid.expires_at)}) to ${files.svid}, ${files.key} and ${files.bundle}\n`);
        return;
      }
      ctx.out.result({ ...svid, private_key: keyPem },
        () => `X509-SVID:\n${svid.cert_chain}\nPrivate key:\n${keyPem}\nRoot CAs:\n${svid.bundle}`);
    });
}
