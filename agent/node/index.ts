/**
 * This node's membership of the mesh: publishes the node (underlay address,
 * pod CIDR, WireGuard public key) and its endpoints to the server, and keeps
 * one WireGuard peer per remote node from the node registry.
 */
export {
  NodeMembership, type LocalEndpoint, type NodeMembershipOptions,
} from './membership.js';
