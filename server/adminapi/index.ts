export { AdminApi, type AdminApiOptions } from './server.js';
