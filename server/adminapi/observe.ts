/**
 * The cluster-wide view (what the agents relay): /v1/flows as Hubble Relay
 * answers GetFlows (history and follow, one GetFlowsResponse JSON a line, and a
 * node_status line naming the nodes that are missing), /v1/auth (every node's
 * authenticated pairs), /v1/explain (asked of the agents that host the pods)
 * and /v1/relay/nodes.
 */
import { filterFromQuery, FlowFilterError, type FlowFilter } from '../../api/flow.js';
import { FailedPrecondition, InvalidArgument, NotFound } from '../../spiffe/index.js';
import { noAnswer, RelayHub, type HeldFlow } from '../observe/index.js';
import { Query } from './input.js';
import type { Route, RouteContext, StreamOut } from './route.js';

/** As `hubble observe` without --last: the newest 20. */
const DEFAULT_LAST = 20;
const MAX_LAST = 1_000_000;
const FOLLOW_HEARTBEAT_MS = 15_000;
const FLOW_FILTERS = ['verdict', 'namespace', 'pod', 'from_pod', 'to_pod', 'identity', 'node', 'port', 'type', 'since'];

/** Hubble's GetFlowsResponse around the agent's line, written without parsing it again. */
function flowResponse(h: HeldFlow): string {
  return `{"flow":${h.line},"node_name":${JSON.stringify(h.node)},"time":${JSON.stringify(h.time)}}`;
}

function nodeStatus(state: 'NODE_CONNECTED' | 'NODE_UNAVAILABLE', nodes: string[], now: Date): string {
  const message = state === 'NODE_UNAVAILABLE' ? `no flows from ${nodes.join(', ')}: its agent's relay stream is not open` : `${nodes.join(', ')} connected`;
  return JSON.stringify({ node_status: { state_change: state, node_names: nodes, message }, time: now.toISOString() });
}

export function observeRoutes(ctx: RouteContext): Route[] {
  const hub = (): RelayHub => {
    if (!ctx.relay) throw new FailedPrecondition('this server keeps no relay (it runs no agent API)');
    return ctx.relay;
  };
  return [
    {
      method: 'get', path: '/v1/flows',
      handle(req) {
        const q = new Query(req.query, ['last', 'follow', ...FLOW_FILTERS]);
        const follow = q.bool('follow') ?? false;
        const last = q.wholeNumber('last') ?? (follow ? 0 : DEFAULT_LAST);
        if (last > MAX_LAST) throw new InvalidArgument(`last must be at most ${MAX_LAST}`, 'last');
        let filter: FlowFilter;
        try {
          const params = new URLSearchParams();
          for (const k of FLOW_FILTERS) { const v = q.one(k); if (v !== undefined) params.set(k, v); }
          filter = filterFromQuery(params, ctx.clock.now().getTime());
        } catch (err) {
          if (err instanceof FlowFilterError) throw new InvalidArgument(err.message, err.field);
          throw err;
        }
        const relay = hub();
        return {
          stream: (out: StreamOut) => {
            const unavailable = relay.unavailable();
            if (unavailable.length) out.write(nodeStatus('NODE_UNAVAILABLE', unavailable, ctx.clock.now()));
            for (const h of relay.history(filter, last)) out.write(flowResponse(h));
            if (!follow) { out.end(); return; }
            // one write per message from a node: a write per flow costs more than the flow
            const unsubscribe = relay.subscribe((flows) => {
              let chunk = '';
              for (const h of flows) if (RelayHub.matches(h, filter)) chunk += flowResponse(h) + '\n';
              if (chunk) out.write(chunk.slice(0, -1));
            });
            const unwatch = relay.onNodeChange((node, state) => {
              out.write(nodeStatus(state === 'connected' ? 'NODE_CONNECTED' : 'NODE_UNAVAILABLE', [node], ctx.clock.now()));
            });
            // an empty line now and then while nothing happens: clients (fetch gives up on a body silent
            // for 5 min) and proxies keep the answer open; NDJSON readers and jq pass over it
            const heartbeat = setInterval(() => out.write(''), FOLLOW_HEARTBEAT_MS);
            heartbeat.unref();
            out.onClose(() => { unsubscribe(); unwatch(); clearInterval(heartbeat); });
          },
        };
      },
    },
    {
      method: 'get', path: '/v1/auth',
      handle(req) {
        new Query(req.query, []);
        return { json: hub().auth() };
      },
    },
    {
      method: 'get', path: '/v1/relay/nodes',
      handle(req) {
        new Query(req.query, []);
        return { json: { nodes: hub().nodes() } };
      },
    },
    {
      method: 'get', path: '/v1/explain',
      async handle(req) {
        const q = new Query(req.query, ['from', 'to', 'port', 'protocol']);
        const from = q.one('from');
        const to = q.one('to');
        if (!from) throw new InvalidArgument('from is required: a pod (namespace/name or name) or an IP', 'from');
        if (!to) throw new InvalidArgument('to is required: a pod (namespace/name or name) or an IP', 'to');
        const port = q.wholeNumber('port') ?? 0;
        if (port > 65535) throw new InvalidArgument('port must be at most 65535', 'port');
        const protocol = (q.one('protocol') ?? 'TCP').toUpperCase();
        if (!['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPV6'].includes(protocol)) throw new InvalidArgument(`protocol must be TCP, UDP, SCTP, ICMP or ICMPv6, not "${protocol}"`, 'protocol');
        const answer = await hub().explain({ from, to, port: String(port), protocol });
        if (answer.explanations.length === 0) {
          if (answer.errors.length) throw new InvalidArgument(answer.errors.map((e) => `${e.node}: ${e.message}`).join('; '));
          if (answer.unavailable.length) throw noAnswer(answer.unavailable);
          throw new NotFound(`no agent hosts ${from} or ${to}`, 'from');
        }
        const text = answer.explanations.map((e) => `[${String(e['node'])}]\n${String(e['text'] ?? '')}`).join('\n');
        return { json: { explanations: answer.explanations, unavailable: answer.unavailable, text } };
      },
    },
  ];
}
