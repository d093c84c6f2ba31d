import t from 'tap';
import { Gate } from '../../common/gate.js';

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

t.test('a gate runs at most its slots at once, the rest in arrival order, and a failure frees its slot', async (t) => {
  const gate = new Gate(2);
  let running = 0, most = 0;
  const order: number[] = [];
  const job = (i: number, fail = false) => gate.run(async () => {
    running++;
    most = Math.max(most, running);
    await tick();
    running--;
    order.push(i);
    if (fail) throw new Error(`job ${i} failed`);
    return i;
  });
  const results = await Promise.allSettled([job(1), job(2, true), job(3), job(4), job(5)]);
  t.equal(most, 2, 'never more than two at once');
  t.same(order, [1, 2, 3, 4, 5], 'first come first served');
  t.same(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'], 'a failure is its caller\'s, and the queue goes on');
  t.equal(gate.queued, 0);
  t.throws(() => new Gate(0), /at least one slot/);
});
