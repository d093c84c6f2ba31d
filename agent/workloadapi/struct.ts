import type { StructMessage, ValueMessage } from './proto.js';

/** JSON-like claims to a google.protobuf.Struct message (ValidateJWTSVIDResponse.claims). */
export function toStruct(obj: Record<string, unknown>): StructMessage {
  const fields: Record<string, ValueMessage> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v !== undefined) fields[k] = toValue(v);
  }
  return { fields };
}

function toValue(v: unknown): ValueMessage {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof v) {
    case 'string': return { stringValue: v };
    case 'number': return { numberValue: v };
    case 'bigint': return { numberValue: Number(v) };
    case 'boolean': return { boolValue: v };
    case 'object':
      if (Array.isArray(v)) return { listValue: { values: v.map((x) => toValue(x === undefined ? null : x)) } };
      return { structValue: toStruct(v as Record<string, unknown>) };
    default:
      return { nullValue: 'NULL_VALUE' };
  }
}

/** A decoded google.protobuf.Struct back to plain JSON values (for clients). */
export function fromStruct(s: StructMessage | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = fromValue(v);
  return out;
}

function fromValue(v: ValueMessage): unknown {
  const kind = v.kind ?? Object.keys(v).find((k) => k !== 'kind' && (v as Record<string, unknown>)[k] !== undefined);
  switch (kind) {
    case 'stringValue': return v.stringValue;
    case 'numberValue': return v.numberValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return fromStruct(v.structValue);
    case 'listValue': return (v.listValue?.values ?? []).map(fromValue);
    default: return null;
  }
}
