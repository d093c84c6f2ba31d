/** The `meshid` command tree: global options here, one file per command group. */
import { Command, Option } from 'commander';
import { registerAgentCommands } from './agent.js';
import { registerServerCommands } from './server.js';
import { registerBundleCommands } from './bundle.js';
import { DEFAULT_SERVER, DEFAULT_TOKEN_FILE } from './client.js';
import { registerEntryCommands } from './entry.js';
import { registerHealthcheckCommand } from './healthcheck.js';
import { registerIdentityCommands } from './identity.js';
import { registerJwtCommands } from './jwt.js';
import { registerTokenCommands } from './token.js';
import { registerX509Commands } from './x509.js';
import { registerPolicyCommands } from './policy.js';
import { registerAuthCommands } from './auth.js';
import { registerUiCommand } from './ui.js';
import { registerDemoCommands } from './demo.js';

export interface ProgramIo {
  writeOut(s: string): void;
  writeErr(s: string): void;
}

export function buildProgram(io: ProgramIo = { writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) }): Command {
  const program = new Command('meshid')
    .description('administer a meshid-server: registration entries, agents, join tokens, trust bundles and SVIDs')
    .option('--server <url>', `admin API URL (env MESHID_SERVER; default ${DEFAULT_SERVER})`)
    .option('--token-file <file>', `admin token file (env MESHID_ADMIN_TOKEN holds the token itself, MESHID_TOKEN_FILE names a file; default ${DEFAULT_TOKEN_FILE})`)
    .addOption(new Option('-o, --output <format>', 'table for people, json for scripts (observe: compact, dict, table, json, jsonpb)').choices(['table', 'json', 'jsonpb', 'compact', 'dict']).default('table'))
    .configureOutput({ writeOut: io.writeOut, writeErr: io.writeErr })
    .showHelpAfterError('(see meshid --help)')
    .exitOverride();
  // Subcommands copy the settings above when they are made, so these come after them.
  registerEntryCommands(program);
  registerAgentCommands(program);
  registerServerCommands(program);
  registerTokenCommands(program);
  registerBundleCommands(program);
  registerX509Commands(program);
  registerJwtCommands(program);
  registerIdentityCommands(program);
  registerPolicyCommands(program);
  registerAuthCommands(program);
  registerUiCommand(program);
  registerDemoCommands(program);
  registerHealthcheckCommand(program);
  return program;
}
