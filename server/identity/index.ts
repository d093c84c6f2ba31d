/**
 * Security identities: one number per distinct set of security-relevant labels
 * of an endpoint (namespace, ServiceAccount, pod labels without the volatile
 * ones), allocated once and kept while an endpoint uses it.
 */
export {
  IdentityAllocator, NAMESPACE_LABEL, SERVICEACCOUNT_LABEL, labelsKey, securityLabels,
} from './allocator.js';
