/** HTTP on a Unix socket (the agent's admin socket): one request on a connection of its own. */
import { request } from 'node:http';

/**
 * Sends one request (a JSON body when `body` is given) and resolves with the
 * status and the answer's text; rejects when the socket cannot be reached or
 * `timeoutMs` (0: none) passes. No keep-alive agent: the admin server closes
 * idle connections, and a pooled one reused at that moment fails with EPIPE.
 */
export function unixRequest(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 0): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({
      socketPath, path, method, agent: false,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      ...(timeoutMs > 0 ? { timeout: timeoutMs } : {}),
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(payload);
  });
}
