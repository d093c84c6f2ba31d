/** Child of watchdog.test.ts: starts the watchdog, then stalls its own event loop (or not) as argv says. */
import { EventLoopWatchdog } from '../../common/watchdog.js';

const [mode, limit] = [process.argv[2], Number(process.argv[3])];
new EventLoopWatchdog({ stallLimitMs: limit, service: 'watchdog-test' }).start();
setTimeout(() => {
  process.stdout.write('stalling\n');
  if (mode === 'stall') { for (;;) { /* the event loop gets no turn again */ } }
  // healthy: keep turning for a while, then leave
  const timer = setInterval(() => {}, 50);
  setTimeout(() => { clearInterval(timer); process.stdout.write('finished\n'); }, 3 * limit);
}, 200);
