import type { Datastore, Endpoint } from '../datastore/index.js';
import type { EndpointRegistrationMsg } from '../../api/agentproto.js';

/** What the agent API needs to register a node's endpoints (implemented by server/identity). */
export interface EndpointRegistrar {
  /** Through `store`: the caller's transaction. */
  replaceNodeEndpoints(nodeId: number, regs: readonly EndpointRegistrationMsg[], store: Datastore): Promise<Endpoint[]>;
}
