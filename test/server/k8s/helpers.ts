/** Shared pieces of the server/k8s tests. */
import { KubeConfig } from '@kubernetes/client-node';
import { FakeKubeApiServer } from '../../helpers/fakek8s.js';

export interface Teardown { teardown(fn: () => unknown): void }

/** A started fake API server, stopped at teardown, and a KubeConfig that points at it. */
export async function startFake(t: Teardown, options: ConstructorParameters<typeof FakeKubeApiServer>[0] = {}): Promise<{ fake: FakeKubeApiServer; kc: KubeConfig }> {
  const fake = new FakeKubeApiServer(options);
  await fake.start();
  t.teardown(() => fake.stop());
  return { fake, kc: kubeConfigFor(fake) };
}

export function kubeConfigFor(fake: FakeKubeApiServer, token?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions(fake.kubeconfigOptions(token));
  return kc;
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!await cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
