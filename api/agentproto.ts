/** The server <-> agent API (api/proto/agent.proto) as @grpc/proto-loader presents it. */
import { loadPackageDefinition, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoDir } from './assets.js';

export interface AttestationDataMsg { type: string; payload: Buffer }
export interface X509SvidMsg { spiffe_id: string; cert_chain: Buffer[]; expires_at: string | number }
export interface AttestAgentRequestMsg { attestation: AttestationDataMsg | null; csr: Buffer }
export interface AttestAgentResponseMsg { svid: X509SvidMsg | null; bundle: Buffer }
export interface RenewAgentRequestMsg { csr: Buffer }
export interface RenewAgentResponseMsg { svid: X509SvidMsg | null }
export interface StatusMsg { code: number; message: string }
export interface NewX509SvidParamsMsg { entry_id: string; csr: Buffer }
export interface BatchNewX509SvidRequestMsg { params: NewX509SvidParamsMsg[] }
export interface BatchNewX509SvidResultMsg { status: StatusMsg | null; svid: X509SvidMsg | null; entry_id: string }
export interface BatchNewX509SvidResponseMsg { results: BatchNewX509SvidResultMsg[] }
export interface NewJwtSvidRequestMsg { entry_id: string; audience: string[] }
export interface JwtSvidMsg { token: string; spiffe_id: string; expires_at: string | number; issued_at: string | number }
export interface NewJwtSvidResponseMsg { svid: JwtSvidMsg | null }
export interface EntryMsg {
  id: string; spiffe_id: string; parent_id: string; selectors: string[]; x509_svid_ttl: number; jwt_svid_ttl: number;
  dns_names: string[]; hint: string; admin: boolean; downstream: boolean; federates_with: string[]; revision: string | number;
}
export interface BundleMsg { trust_domain: string; document: Buffer }
export interface IdentityMsg { id: number; labels: Record<string, string>; namespace: string; service_account: string; spiffe_id: string }
export interface EndpointMsg { ip: string; identity: number; node_id: number; namespace: string; name: string; labels: Record<string, string> }
export interface NodeMsg { id: number; name: string; address: string; wireguard_public_key: string; pod_cidr: string; agent_id: string }
export interface PolicyMsg { namespace: string; name: string; kind: string; spec_json: string }
export interface SyncUpdateMsg {
  revision: string | number;
  snapshot: boolean;
  entries: EntryMsg[];
  removed_entries: string[];
  bundles: BundleMsg[];
  identities: IdentityMsg[];
  removed_identities: number[];
  endpoints: EndpointMsg[];
  removed_endpoints: string[];
  nodes: NodeMsg[];
  removed_nodes: number[];
  policies: PolicyMsg[];
  removed_policies: string[];
  local_node_id: number;
}
export interface PublishNodeRequestMsg { name: string; address: string; wireguard_public_key: string; pod_cidr: string }
export interface PublishNodeResponseMsg { node: NodeMsg | null }
export interface EndpointRegistrationMsg { ip: string; namespace: string; name: string; service_account: string; labels: Record<string, string> }
export interface RegisterEndpointsRequestMsg { endpoints: EndpointRegistrationMsg[] }
export interface RegisterEndpointsResponseMsg { endpoints: EndpointMsg[] }
export interface FlowBatchMsg { flows: string[]; lost: string | number; replay: boolean }
export interface ReasonCounterMsg { reason: string; direction: string; packets: string | number; bytes: string | number }
export interface NodeObservationMsg { auth_entries_json: string; counters: ReasonCounterMsg[]; lost_in_ring: string | number; lost_in_relay: string | number }
export interface ExplainAnswerMsg { id: string | number; error: StatusMsg | null; json: string }
export interface RelayUpMsg { flows?: FlowBatchMsg | null; observation?: NodeObservationMsg | null; explain?: ExplainAnswerMsg | null; message?: string }
export interface ExplainRequestMsg { id: string | number; query: Record<string, string> }
export interface RelayDownMsg { explain?: ExplainRequestMsg | null; message?: string }

export interface AgentProto { service: ServiceDefinition; Client: ServiceClientConstructor }

export function loadAgentProto(): AgentProto {
  const def = loadSync('agent.proto', { includeDirs: [protoDir], keepCase: true, defaults: true, oneofs: true, longs: Number, enums: String });
  const pkg = loadPackageDefinition(def) as unknown as { meshid: { agent: { v1: { Agent: ServiceClientConstructor } } } };
  const Client = pkg.meshid.agent.v1.Agent;
  return { service: Client.service, Client };
}
