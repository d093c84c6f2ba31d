/**
 * The few Reflect metadata functions that tsyringe (a dependency of @peculiar/x509) checks for
 * at load time. The reflect-metadata package is not installed; this is enough for the
 * decorators in @peculiar/x509's build. Import it before @peculiar/x509 (see peculiar.ts).
 */
type Key = unknown;
type Prop = string | symbol | undefined;
interface ReflectMetadata {
  defineMetadata(key: Key, value: unknown, target: object, prop?: Prop): void;
  getOwnMetadata(key: Key, target: object, prop?: Prop): unknown;
  getMetadata(key: Key, target: object, prop?: Prop): unknown;
  hasOwnMetadata(key: Key, target: object, prop?: Prop): boolean;
  hasMetadata(key: Key, target: object, prop?: Prop): boolean;
  metadata(key: Key, value: unknown): (target: object, prop?: Prop) => void;
}

const R = Reflect as unknown as Partial<ReflectMetadata>;
if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<object, Map<Prop, Map<Key, unknown>>>();
  const table = (target: object, prop: Prop, create: boolean): Map<Key, unknown> | undefined => {
    let byProp = store.get(target);
    if (!byProp) { if (!create) return undefined; byProp = new Map(); store.set(target, byProp); }
    let byKey = byProp.get(prop);
    if (!byKey) { if (!create) return undefined; byKey = new Map(); byProp.set(prop, byKey); }
    return byKey;
  };
  const impl: ReflectMetadata = {
    defineMetadata: (key, value, target, prop) => { table(target, prop, true)!.set(key, value); },
    getOwnMetadata: (key, target, prop) => table(target, prop, false)?.get(key),
    hasOwnMetadata: (key, target, prop) => table(target, prop, false)?.has(key) ?? false,
    getMetadata: (key, target, prop) => {
      for (let o: object | null = target; o; o = Object.getPrototypeOf(o) as object | null) {
        const m = table(o, prop, false);
        if (m?.has(key)) return m.get(key);
      }
      return undefined;
    },
    hasMetadata: (key, target, prop) => {
      for (let o: object | null = target; o; o = Object.getPrototypeOf(o) as object | null) if (table(o, prop, false)?.has(key)) return true;
      return false;
    },
    metadata: (key, value) => (target, prop) => impl.defineMetadata(key, value, target, prop),
  };
  Object.assign(Reflect, impl);
}
export {};
