/** The agent's calls to meshid-server: one connection over every server address, with failover. */
export { isServerDown, parseServerList, ServerConnection, type ClientIdentity, type DuplexStream } from './connection.js';
