/** The agent's /live, /ready and /metrics on a local port. */
export {
  HealthServer, type HealthServerOptions,
} from './server.js';
