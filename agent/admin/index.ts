/**
 * The agent's admin API: HTTP on a Unix socket (root-only, mode 0600), read by
 * `meshid auth list`, `meshid observe` and `meshid explain`.
 *   GET /v1/status     node, identity, sync state
 *   GET /v1/auth       the auth map, with the SPIFFE IDs of each pair
 *   GET /v1/observe    this node's flows as NDJSON (api/flow.ts): ?last=N from its history, live (follow=true,
 *                      or no last); filtered as the server's /v1/flows (verdict, namespace, pod, identity, port, ...)
 *   GET /v1/explain    ?from=POD|IP&to=POD|IP&port=N&protocol=TCP
 *   GET    /v1/endpoints              this node's endpoints and their readiness
 *   POST   /v1/endpoints[?wait=S]     add one (a CNI's ADD): {name, namespace, service_account, labels, ip, interface};
 *                                     with wait, answers when it is ready (200) or after S seconds (504)
 *   DELETE /v1/endpoints/IP           remove one (a CNI's DEL)
 *   GET    /v1/endpoints/IP[?wait=S]  its readiness (200 ready, 503 not yet), waiting up to S seconds
 */
export {
  AgentAdminServer, type AgentAdminView,
} from './server.js';
