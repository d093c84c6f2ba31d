/**
 * Runs inside a pod's network namespace (spawned by PodShell in netns.ts) and
 * does socket work on request: one JSON request per stdin line, one JSON reply
 * per stdout line, matched by `seq`.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

interface Request {
  seq: number;
  op: 'listen' | 'connect' | 'echo' | 'close';
  id?: string;
  host?: string;
  port?: number;
  timeoutMs?: number;
  data?: string;
}

const servers: Server[] = [];
const sockets = new Map<string, Socket>();

function reply(seq: number, body: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ seq, ...body }) + '\n');
}

function listen(req: Request): void {
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  server.on('error', (err) => reply(req.seq, { ok: false, error: err.message }));
  server.listen(req.port, '::', () => reply(req.seq, { ok: true }));
  servers.push(server);
}

function open(req: Request): void {
  const socket = connect({ host: req.host!, port: req.port! });
  const timer = setTimeout(() => {
    socket.destroy();
    reply(req.seq, { ok: false, error: 'timeout' });
  }, req.timeoutMs ?? 1000);
  socket.once('connect', () => {
    clearTimeout(timer);
    sockets.set(req.id!, socket);
    reply(req.seq, { ok: true, localPort: socket.localPort });
  });
  socket.once('error', (err) => {
    clearTimeout(timer);
    socket.destroy();
    reply(req.seq, { ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message });
  });
}

function echo(req: Request): void {
  const socket = sockets.get(req.id!);
  if (!socket) return reply(req.seq, { ok: false, error: 'no such connection' });
  let got = '';
  const onData = (chunk: Buffer): void => {
    got += chunk.toString();
    if (got.length >= req.data!.length) done({ ok: got === req.data, data: got });
  };
  const timer = setTimeout(() => done({ ok: false, error: 'timeout', data: got }), req.timeoutMs ?? 1000);
  function done(body: Record<string, unknown>): void {
    clearTimeout(timer);
    socket!.off('data', onData);
    reply(req.seq, body);
  }
  socket.on('data', onData);
  socket.write(req.data!);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line) as Request;
  switch (req.op) {
    case 'listen': return listen(req);
    case 'connect': return open(req);
    case 'echo': return echo(req);
    case 'close':
      sockets.get(req.id!)?.destroy();
      sockets.delete(req.id!);
      return reply(req.seq, { ok: true });
  }
}).on('close', () => {
  for (const s of sockets.values()) s.destroy();
  for (const s of servers) s.close();
  process.exit(0);
});
