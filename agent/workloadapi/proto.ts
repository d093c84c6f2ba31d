import { credentials, loadPackageDefinition, Metadata, type ChannelOptions, type Client, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { protoDir } from '../../api/assets.js';

/** Every Workload API call must carry this metadata with the value "true" (SPIFFE Workload Endpoint standard). */
export const SECURITY_HEADER = 'workload.spiffe.io';
export const DEFAULT_SOCKET_PATH = '/run/meshid/agent.sock';

// The messages of api/proto/workload.proto as @grpc/proto-loader presents them
// (keepCase, bytes as Buffer, defaults filled in).
export interface X509SVIDMessage { spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer; hint: string }
export interface X509SVIDResponseMessage { svids: X509SVIDMessage[]; crl: Buffer[]; federated_bundles: Record<string, Buffer> }
export interface X509BundlesResponseMessage { crl: Buffer[]; bundles: Record<string, Buffer> }
export interface JWTSVIDRequestMessage { audience: string[]; spiffe_id: string }
export interface JWTSVIDMessage { spiffe_id: string; svid: string; hint: string }
export interface JWTSVIDResponseMessage { svids: JWTSVIDMessage[] }
export interface JWTBundlesResponseMessage { bundles: Record<string, Buffer> }
export interface ValidateJWTSVIDRequestMessage { audience: string; svid: string }
export interface StructMessage { fields: Record<string, ValueMessage> }
export interface ValueMessage {
  nullValue?: 'NULL_VALUE' | 0;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: StructMessage;
  listValue?: { values: ValueMessage[] };
  /** which of the above is set, on decoded messages */
  kind?: string;
}
export interface ValidateJWTSVIDResponseMessage { spiffe_id: string; claims: StructMessage | null }

export interface WorkloadProto {
  packageDefinition: PackageDefinition;
  /** For grpc.Server#addService. */
  service: ServiceDefinition;
  /** For clients: `new proto.Client('unix:/run/meshid/agent.sock', credentials.createInsecure())`. */
  Client: ServiceClientConstructor;
}

/** Loads api/proto/workload.proto (google/protobuf/struct.proto comes with proto-loader's protobufjs). */
export function loadWorkloadProto(): WorkloadProto {
  const packageDefinition = loadSync('workload.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    defaults: true,
    oneofs: true,
    longs: String,
    enums: String,
  });
  const Client = loadPackageDefinition(packageDefinition)['SpiffeWorkloadAPI'] as ServiceClientConstructor;
  return { packageDefinition, service: Client.service, Client };
}

export interface WaitReadyRequestMessage { timeout_seconds: number }
export interface WaitReadyResponseMessage { ready: boolean; endpoints: string[]; waiting_for: string[] }
/** The path of meshid's readiness call on the Workload API socket (api/proto/readiness.proto). */
export const WAIT_READY_PATH = '/meshid.agent.v1.Readiness/WaitReady';

/** Loads api/proto/readiness.proto: meshid's Readiness service, served beside the Workload API. */
export function loadReadinessProto(): { service: ServiceDefinition; Client: ServiceClientConstructor } {
  const def = loadSync('readiness.proto', { includeDirs: [protoDir], keepCase: true, defaults: true, longs: Number });
  const Client = (loadPackageDefinition(def) as unknown as { meshid: { agent: { v1: { Readiness: ServiceClientConstructor } } } }).meshid.agent.v1.Readiness;
  return { service: Client.service, Client };
}

/** The metadata every Workload API call needs. */
export function workloadCallMetadata(): Metadata {
  const md = new Metadata();
  md.set(SECURITY_HEADER, 'true');
  return md;
}

/** A client of the Workload API on a Unix socket; the caller closes it (`client.close()`). */
export function newWorkloadClient(socketPath: string = DEFAULT_SOCKET_PATH, options: ChannelOptions = {}, proto: WorkloadProto = loadWorkloadProto()): Client {
  return new proto.Client(`unix:${socketPath}`, credentials.createInsecure(), options);
}
