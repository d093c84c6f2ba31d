// A Workload API client for tests, built from api/proto/workload.proto with @grpc/grpc-js.
import { credentials, Metadata, type Client, type ClientReadableStream, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadWorkloadProto, SECURITY_HEADER, type WorkloadProto } from '../../../agent/workloadapi/index.js';

type StreamMethod = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles';
type UnaryMethod = 'FetchJWTSVID' | 'ValidateJWTSVID';

/** Call metadata with the security header set to `value`, or without it for null. */
export function headerMetadata(value: string | null = 'true'): Metadata {
  const md = new Metadata();
  if (value !== null) md.set(SECURITY_HEADER, value);
  return md;
}

/** Records the messages and the final status of one server stream. */
export class StreamRecorder<T> {
  readonly messages: T[] = [];
  readonly status: Promise<StatusObject>;
  private waiters: (() => void)[] = [];

  constructor(readonly call: ClientReadableStream<T>) {
    call.on('data', (m: T) => { this.messages.push(m); for (const w of this.waiters.splice(0)) w(); });
    call.on('error', () => { /* the status event carries it */ });
    this.status = new Promise((resolve) => call.on('status', (s: StatusObject) => { resolve(s); for (const w of this.waiters.splice(0)) w(); }));
  }

  /** Resolves with message number `index` (0-based); rejects after `timeoutMs`. */
  async message(index: number, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length <= index) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`stream message ${index} did not arrive within ${timeoutMs} ms (got ${this.messages.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
    return this.messages[index]!;
  }

  cancel(): void { this.call.cancel(); }
}

export class TestClient {
  readonly proto: WorkloadProto;
  readonly client: Client;

  /** `ownConnection` gives this client its own HTTP/2 connection instead of sharing one with other clients. */
  constructor(socketPath: string, ownConnection = false, proto: WorkloadProto = loadWorkloadProto()) {
    this.proto = proto;
    this.client = new proto.Client(`unix:${socketPath}`, credentials.createInsecure(),
      ownConnection ? { 'grpc.use_local_subchannel_pool': 1 } : {});
  }

  stream<T>(method: StreamMethod, metadata: Metadata = headerMetadata()): StreamRecorder<T> {
    const fn = (this.client as unknown as Record<string, (req: object, md: Metadata) => ClientReadableStream<T>>)[method]!;
    return new StreamRecorder(fn.call(this.client, {}, metadata));
  }

  unary<Res>(method: UnaryMethod, request: object, metadata: Metadata = headerMetadata()): Promise<Res> {
    const fn = (this.client as unknown as Record<string, (req: object, md: Metadata, cb: (e: ServiceError | null, r: Res) => void) => void>)[method]!;
    return new Promise((resolve, reject) => fn.call(this.client, request, metadata, (err, res) => (err ? reject(err) : resolve(res))));
  }

  close(): void { this.client.close(); }
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
