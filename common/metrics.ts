/** A small Prometheus registry: counters, gauges and histograms rendered in the text exposition format. */
type Labels = Record<string, string | number>;

const labelKey = (labels: Labels): string =>
  Object.keys(labels).sort().map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
const fmt = (name: string, key: string, v: number): string => `${name}${key ? `{${key}}` : ''} ${Number.isFinite(v) ? v : v > 0 ? '+Inf' : '-Inf'}`;

interface Metric { render(): string[] }

export class Counter implements Metric {
  private readonly values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels = {}, by = 1): void { const k = labelKey(labels); this.values.set(k, (this.values.get(k) ?? 0) + by); }
  get(labels: Labels = {}): number { return this.values.get(labelKey(labels)) ?? 0; }
  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`, ...[...this.values].map(([k, v]) => fmt(this.name, k, v))];
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();
  private collector: (() => void) | undefined;
  constructor(readonly name: string, readonly help: string) {}
  set(v: number, labels: Labels = {}): void { this.values.set(labelKey(labels), v); }
  get(labels: Labels = {}): number { return this.values.get(labelKey(labels)) ?? 0; }
  /** Called before each render, to read the value from its owner. */
  collect(fn: () => void): this { this.collector = fn; return this; }
  reset(): void { this.values.clear(); }
  render(): string[] {
    const head = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    // a source that cannot be read (a damaged datastore) leaves its gauge without samples, not /metrics without an answer
    try { this.collector?.(); } catch { return head; }
    return [...head, ...[...this.values].map(([k, v]) => fmt(this.name, k, v))];
  }
}

export class Histogram implements Metric {
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, readonly buckets: number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]) {}
  observe(v: number, labels: Labels = {}): void {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) { s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 }; this.series.set(k, s); }
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }
  count(labels: Labels = {}): number { return this.series.get(labelKey(labels))?.count ?? 0; }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.series) {
      const sep = k ? ',' : '';
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{${k}${sep}le="${b}"} ${s.counts[i]}`));
      out.push(`${this.name}_bucket{${k}${sep}le="+Inf"} ${s.count}`, fmt(`${this.name}_sum`, k, s.sum), fmt(`${this.name}_count`, k, s.count));
    }
    return out;
  }
}

export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();
  private add<M extends Metric & { name: string }>(m: M): M {
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string): Counter { return this.add(new Counter(name, help)); }
  gauge(name: string, help: string): Gauge { return this.add(new Gauge(name, help)); }
  histogram(name: string, help: string, buckets?: number[]): Histogram { return this.add(new Histogram(name, help, buckets)); }
  render(): string { return [...this.metrics.values()].flatMap((m) => m.render()).join('\n') + '\n'; }
}
