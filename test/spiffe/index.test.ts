import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as core from '../../spiffe/index.js';

const coreDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'spiffe');

t.test('index exports the public surface of the core', async (tt) => {
  const names = [
    'SpiffeId', 'TrustDomain', 'serviceAccountId', 'agentId', 'serverId', 'isAgentId', 'Selector', 'SelectorSet',
    'generateKeyPair', 'signatureAlgorithmFor', 'publicKeyFromSpki', 'encodeName', 'mintCertificate', 'parseCertificate', 'issuerFromKey',
    'keyIdentifier', 'randomSerial', 'signedBy', 'pemFromDer', 'derFromPem', 'splitConcatenatedDer', 'KeyUsage', 'mintX509Svid',
    'verifyX509Svid', 'checkLeafRules', 'SVID_SUBJECT', 'parseCsr', 'createCsr', 'MAX_CSR_BYTES', 'mintJwtSvid', 'verifyJwtSvid', 'peekJwt',
    'Bundle', 'BundleSet', 'MeshidError', 'InvalidSpiffeId',
  ];
  const table = core as unknown as Record<string, unknown>;
  for (const n of names) tt.ok(table[n] !== undefined, `${n} is exported`);
  tt.equal(table['readTlv'], undefined, 'the DER reader stays private to the core');
  tt.equal(table['tlv'], undefined, 'the DER encoder stays private to the core');
});

t.test('the core imports nothing but itself and node built-ins (no transport, no storage)', async (tt) => {
  const files = readdirSync(coreDir).filter((f) => f.endsWith('.js'));
  tt.ok(files.length >= 10, `found the compiled core (${files.length} files)`);
  const foreign: string[] = [];
  let seen = 0;
  for (const f of files) {
    const src = readFileSync(join(coreDir, f), 'utf8');
    for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1] ?? m[2]!;
      seen++;
      if (!/^\.\/[a-z0-9]+\.js$/.test(spec) && !spec.startsWith('node:')) foreign.push(`${f}: ${spec}`);
    }
  }
  tt.ok(seen >= 20, `the scan sees the imports (${seen})`);
  tt.same(foreign, [], 'every import is ./<core file>.js or node:*');
});
