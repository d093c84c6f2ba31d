/** The Kubernetes API clients the server uses, made once from one KubeConfig. */
import {
  ApiException, AuthenticationV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, Watch,
} from '@kubernetes/client-node';

export interface KubeApis {
  config: KubeConfig;
  core: CoreV1Api;
  authentication: AuthenticationV1Api;
  coordination: CoordinationV1Api;
  custom: CustomObjectsApi;
  watch: Watch;
}

/**
 * `path` when given; else the pod's ServiceAccount when running in a cluster;
 * else $KUBECONFIG or ~/.kube/config (what kubectl would use).
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export function kubeApis(config: KubeConfig): KubeApis {
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    authentication: config.makeApiClient(AuthenticationV1Api),
    coordination: config.makeApiClient(CoordinationV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
    watch: new Watch(config),
  };
}

/** The HTTP status of a failed API call (typed API or watch), if it got that far. */
export function apiStatus(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const e = err as { statusCode?: unknown; code?: unknown } | null;
  if (e && typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** The API server's message for a failed call, without the request headers ApiException puts in its message. */
export function apiMessage(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: unknown } | string | undefined;
    if (body && typeof body === 'object' && typeof body.message === 'string') return `${err.code}: ${body.message}`;
    if (typeof body === 'string' && body) {
      try {
        const parsed = JSON.parse(body) as { message?: unknown };
        if (typeof parsed.message === 'string') return `${err.code}: ${parsed.message}`;
      } catch { /* not JSON */ }
    }
    return `HTTP ${err.code}`;
  }
  return (err as Error)?.message ?? String(err);
}
