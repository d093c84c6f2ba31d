/**
 * k8s_psat node attestation, agent side: sends the projected ServiceAccount
 * token that the kubelet writes (and rotates) for the agent's pod, with the
 * cluster name, as JSON {"cluster": ..., "token": ...}. The file is read on
 * every attestation, so a re-attestation uses the current token.
 */
import { readFile } from 'node:fs/promises';
import { FailedPrecondition } from '../../spiffe/index.js';
import type { NodeAttestorPlugin } from './attestor.js';

export const DEFAULT_PSAT_TOKEN_PATH = '/var/run/secrets/tokens/meshid-agent';

export interface K8sPsatPluginOptions {
  cluster: string;
  /** Default /var/run/secrets/tokens/meshid-agent (a projected volume with audience meshid-server). */
  tokenPath?: string;
}

export class K8sPsatPlugin implements NodeAttestorPlugin {
  readonly type = 'k8s_psat';
  readonly tokenPath: string;

  constructor(private readonly opts: K8sPsatPluginOptions) {
    if (!opts.cluster) throw new FailedPrecondition('k8s_psat needs the cluster name', 'k8s.cluster');
    this.tokenPath = opts.tokenPath ?? DEFAULT_PSAT_TOKEN_PATH;
  }

  async payload(): Promise<Buffer> {
    let token: string;
    try {
      token = (await readFile(this.tokenPath, 'utf8')).trim();
    } catch (err) {
      throw new FailedPrecondition(`cannot read the projected ServiceAccount token ${this.tokenPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'k8s.token_path');
    }
    if (!token) throw new FailedPrecondition(`the projected ServiceAccount token file ${this.tokenPath} is empty`, 'k8s.token_path');
    return Buffer.from(JSON.stringify({ cluster: this.opts.cluster, token }));
  }
}
