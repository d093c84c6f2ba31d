/** Command-line flag parsers the binaries share. */

/**
 * A commander collector for repeatable `--label KEY=VALUE` flags. `fail` makes the
 * binary's own error from the message (each binary reports bad input its way).
 */
export function labelCollector(fail: (message: string) => Error): (v: string, acc: Record<string, string>) => Record<string, string> {
  return (v, acc) => {
    const i = v.indexOf('=');
    if (i <= 0) throw fail(`--label must be KEY=VALUE, not "${v}"`);
    return { ...acc, [v.slice(0, i)]: v.slice(i + 1) };
  };
}
