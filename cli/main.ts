/**
 * The `meshid` binary. Exit codes: 0 done, 1 refused or failed (the message names
 * the bad field), 2 the command line itself is wrong.
 */
import { CommanderError } from 'commander';
import { ApiError, CliError, errorLine } from './errors.js';
import { buildProgram } from './program.js';

export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message (and the hint) already.
      // Help asked for (--help) is success; help shown because a command is missing is a usage error.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof ApiError) {
      process.stderr.write(`meshid: ${errorLine(err)}\n`);
      return err.exitCode;
    }
    if (err instanceof CliError) {
      process.stderr.write(`meshid: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`meshid: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

process.exitCode = await run(process.argv.slice(2));
