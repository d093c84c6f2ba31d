/** A raw node:http2 client of the Workload API socket: every header, frame and trailer as a client receives it. */
import { connect, constants as h2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';

export interface Teardown { teardown(fn: () => unknown): void }

export interface RawAnswer {
  headers: IncomingHttpHeaders;
  /** the length-prefixed messages received, unframed */
  messages: Buffer[];
  /** the trailers, or the headers of a Trailers-Only response */
  status: IncomingHttpHeaders;
}

export function rawSession(t: Teardown, socketPath: string): ClientHttp2Session {
  const session = connect('http://localhost', { createConnection: () => netConnect(socketPath) });
  session.on('error', () => { /* the test's assertions report what went wrong */ });
  t.teardown(() => session.destroy());
  return session;
}

/** Sends one request with `body` and collects the answer until the stream closes. */
export function rawCall(session: ClientHttp2Session, path: string, body: Buffer | null, headers: Record<string, string | string[]> = {}, readFor?: number): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'workload.spiffe.io': 'true',
      ...headers,
    });
    let responseHeaders: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => { responseHeaders = h; });
    stream.on('trailers', (h) => { trailers = h; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    const done = (): void => {
      const data = Buffer.concat(chunks);
      const messages: Buffer[] = [];
      for (let off = 0; off + 5 <= data.length;) {
        const len = data.readUInt32BE(off + 1);
        messages.push(data.subarray(off + 5, off + 5 + len));
        off += 5 + len;
      }
      resolve({ headers: responseHeaders, messages, status: trailers ?? responseHeaders });
    };
    stream.on('close', done);
    if (readFor !== undefined) setTimeout(() => stream.close(h2.NGHTTP2_CANCEL), readFor);
    if (body) stream.end(body);
    else stream.end();
  });
}

