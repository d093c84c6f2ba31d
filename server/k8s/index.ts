/** meshid-server's Kubernetes integration: what server.ts and config.ts need. */
export { kubernetesConfigSchema, type KubernetesConfig } from './config.js';
export { KubernetesIntegration, type KubernetesIntegrationOptions, type KubernetesStatus } from './integration.js';
export { AUTO_REGISTER_KEY, POLICY_RESOURCES, nodeAliasId, serviceAccountEntryId } from './controller.js';
export { K8sPsatAttestor, K8S_PSAT, serviceAccountOfUser, type K8sPsatPayload } from './psat.js';
export { apiMessage, apiStatus } from './client.js';
