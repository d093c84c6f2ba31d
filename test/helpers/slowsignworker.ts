/**
 * A signing worker that is slow on purpose (the pool's balancing test): the
 * thread stalls for `workerData.stallMs` before each chunk, then the real worker
 * (server/ca/signworker.ts) signs it.
 */
import './slowsignworker-stall.js'; // its listener is registered first, so it runs first for each message
import '../../server/ca/signworker.js';
