/** Node attestation: turns an agent's attestation data into its agent SPIFFE ID and node selectors. */
export {
  AttestorRegistry, JoinTokenAttestor, tokenDigest, type AttestationResult, type NodeAttestor,
} from './registry.js';
