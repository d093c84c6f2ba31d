import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { packageRoot } from '../../../api/assets.js';
import { startAdminApi } from './fixtures/adminapi.js';

type Doc = {
  openapi: string;
  security: unknown[];
  paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
  components: { securitySchemes: Record<string, { type: string; scheme: string }> };
};

const doc = parse(readFileSync(join(packageRoot, 'api', 'openapi.yaml'), 'utf8')) as Doc;
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

t.test('api/openapi.yaml is OpenAPI 3.1 with bearer auth', async (t) => {
  t.equal(doc.openapi, '3.1.0');
  t.same(doc.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: doc.components.securitySchemes.bearer!['description' as never] });
  t.same(doc.security, [{ bearer: [] }]);
});

t.test('every route the server registers is documented, and every documented operation is served', async (t) => {
  const f = await startAdminApi(t, 'openapi');
  const served = f.api.routeList();
  t.ok(served.length >= 25);
  for (const r of served) {
    const op = doc.paths[r.path]?.[r.method];
    t.ok(op, `${r.method.toUpperCase()} ${r.path} is documented`);
    if (!op) continue;
    if (r.public) t.same(op.security, [], `${r.path} is documented as needing no token`);
    else {
      t.equal(op.security, undefined, `${r.method} ${r.path} uses the document's bearer security`);
      t.ok(op.responses['401'], `${r.method} ${r.path} documents 401`);
    }
  }
  const servedKeys = new Set(served.map((r) => `${r.method} ${r.path}`));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item).filter((m) => METHODS.includes(m))) {
      t.ok(servedKeys.has(`${method} ${path}`), `documented ${method.toUpperCase()} ${path} is served`);
    }
  }
});

t.test('the documented error codes are the ones the server can send', async (t) => {
  const errorSchema = (doc as unknown as { components: { schemas: { Error: { properties: { error: { properties: { code: { enum: string[] } } } } } } } })
    .components.schemas.Error.properties.error.properties.code.enum;
  const { httpStatus } = await import('../../../common/httpstatus.js');
  for (const code of errorSchema) t.type(httpStatus(code as never), 'number', code);
  t.equal(errorSchema.length, 19);
});
