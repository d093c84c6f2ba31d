import t, { type Test } from 'tap';
import fc from 'fast-check';
import {
  agentId, InvalidSpiffeId, InvalidTrustDomain, isAgentId, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES, MeshidError,
  serverId, serviceAccountId, SpiffeId, TrustDomain,
} from '../../spiffe/index.js';

/** Parses `input` expecting a rejection; returns the error so a test can check the message names the rule. */
function rejection(input: string, field?: string): MeshidError {
  try {
    SpiffeId.parse(input, field);
  } catch (err) {
    if (err instanceof MeshidError) return err;
    throw new Error(`parse threw a non-MeshidError for ${JSON.stringify(input)}: ${String(err)}`);
  }
  throw new Error(`parse accepted ${JSON.stringify(input)}`);
}

function rejects(tt: Test, input: string, rule: RegExp, what: string): void {
  const err = rejection(input);
  tt.ok(err instanceof InvalidSpiffeId, `${what}: InvalidSpiffeId`);
  tt.equal(err.code, 'invalid_spiffe_id', `${what}: code`);
  tt.match(err.message, rule, `${what}: message names the rule`);
}

t.test('scheme must be "spiffe://" in lowercase', async (tt) => {
  tt.equal(SpiffeId.parse('spiffe://example.org/web').toString(), 'spiffe://example.org/web');
  rejects(tt, 'http://example.org/web', /scheme must be "spiffe"/, 'http scheme');
  rejects(tt, 'https://example.org/web', /scheme must be "spiffe"/, 'https scheme');
  rejects(tt, 'SPIFFE://example.org/web', /scheme must be "spiffe" in lowercase/, 'uppercase scheme');
  rejects(tt, 'Spiffe://example.org/web', /scheme must be "spiffe" in lowercase/, 'mixed-case scheme');
  rejects(tt, 'example.org/web', /scheme must be "spiffe"/, 'missing scheme');
  rejects(tt, '//example.org/web', /scheme must be "spiffe"/, 'scheme-relative');
  rejects(tt, 'spiffe:example.org/web', /scheme must be "spiffe"/, 'no "//" after the scheme');
  rejects(tt, 'spiffe:/example.org/web', /scheme must be "spiffe"/, 'one slash after the scheme');
});

t.test('an empty input is rejected as empty', async (tt) => {
  rejects(tt, '', /empty/, 'empty string');
});

t.test('trust domain allows lowercase letters, digits, ".", "-" and "_" only', async (tt) => {
  for (const ok of ['example.org', 'a', '0', 'my-td_1.example.org', 'x.y.z', '_', '-', '...']) {
    tt.equal(SpiffeId.parse(`spiffe://${ok}/w`).trustDomain.name, ok, `accepts ${ok}`);
  }
  rejects(tt, 'spiffe://Example.org/w', /uppercase/, 'uppercase letter');
  rejects(tt, 'spiffe://EXAMPLE.ORG', /uppercase/, 'all uppercase');
  rejects(tt, 'spiffe://ex%41mple.org/w', /character "%"/, 'percent-encoding in the trust domain');
  rejects(tt, 'spiffe://exa mple.org/w', /character " "/, 'space');
  rejects(tt, 'spiffe://exa+mple.org/w', /character "\+"/, 'plus');
  rejects(tt, 'spiffe://exämple.org/w', /character "ä"/, 'non-ASCII letter');
  rejects(tt, 'spiffe://[::1]/w', /character "\["/, 'IP literal');
  rejects(tt, 'spiffe:///w', /trust domain is missing/, 'empty trust domain with a path');
  rejects(tt, 'spiffe://', /trust domain is missing/, 'empty trust domain');
});

t.test('trust domain must not carry a port', async (tt) => {
  rejects(tt, 'spiffe://example.org:8443/w', /port/, 'port');
  rejects(tt, 'spiffe://example.org:/w', /port/, 'empty port');
});

t.test('trust domain must not carry userinfo', async (tt) => {
  rejects(tt, 'spiffe://user@example.org/w', /userinfo/, 'user');
  rejects(tt, 'spiffe://user:pw@example.org/w', /port|userinfo/, 'user and password');
  tt.match(rejection('spiffe://u@example.org').message, /userinfo/);
});

t.test('path segments allow letters of both cases, digits, ".", "-" and "_"', async (tt) => {
  const id = SpiffeId.parse('spiffe://example.org/Ns/Default-1/SA/web_App.v2');
  tt.equal(id.path, '/Ns/Default-1/SA/web_App.v2');
  tt.same(id.segments, ['Ns', 'Default-1', 'SA', 'web_App.v2']);
  tt.equal(SpiffeId.parse('spiffe://example.org/...').path, '/...', 'a segment of three dots is an ordinary name');
  tt.equal(SpiffeId.parse('spiffe://example.org/.a/..b').path, '/.a/..b', 'dots inside a name are fine');
  rejects(tt, 'spiffe://example.org/a b', /character " "/, 'space in path');
  rejects(tt, 'spiffe://example.org/a:b', /character ":"/, 'colon in path');
  rejects(tt, 'spiffe://example.org/a@b', /character "@"/, 'at in path');
  rejects(tt, 'spiffe://example.org/é', /character "é"/, 'non-ASCII in path');
  rejects(tt, 'spiffe://example.org/a\\b', /character "\\\\"/, 'backslash in path');
});

t.test('path must not contain an empty segment', async (tt) => {
  rejects(tt, 'spiffe://example.org//w', /empty segment/, 'leading double slash');
  rejects(tt, 'spiffe://example.org/a//b', /empty segment/, 'inner double slash');
});

t.test('path must not contain "." or ".." segments', async (tt) => {
  rejects(tt, 'spiffe://example.org/.', /"\." segment/, 'lone dot');
  rejects(tt, 'spiffe://example.org/a/./b', /"\." segment/, 'inner dot');
  rejects(tt, 'spiffe://example.org/..', /"\.\." segment/, 'lone dot-dot');
  rejects(tt, 'spiffe://example.org/a/../b', /"\.\." segment/, 'inner dot-dot');
  rejects(tt, 'spiffe://example.org/a/..', /"\.\." segment/, 'trailing dot-dot');
});

t.test('path must not end with a slash', async (tt) => {
  rejects(tt, 'spiffe://example.org/', /trailing slash/, 'trust domain with a slash');
  rejects(tt, 'spiffe://example.org/a/', /trailing slash/, 'path with a trailing slash');
});

t.test('a query is rejected', async (tt) => {
  rejects(tt, 'spiffe://example.org/w?x=1', /query/, 'query after path');
  rejects(tt, 'spiffe://example.org?x=1', /query/, 'query after trust domain');
  rejects(tt, 'spiffe://example.org/w?', /query/, 'empty query');
});

t.test('a fragment is rejected', async (tt) => {
  rejects(tt, 'spiffe://example.org/w#f', /fragment/, 'fragment after path');
  rejects(tt, 'spiffe://example.org#f', /fragment/, 'fragment after trust domain');
});

t.test('percent-encoding is rejected in the path', async (tt) => {
  rejects(tt, 'spiffe://example.org/a%20b', /percent-encoded/, 'encoded space');
  rejects(tt, 'spiffe://example.org/%61', /percent-encoded/, 'encoded letter that would be valid');
});

t.test('a SPIFFE ID is at most 2048 bytes', async (tt) => {
  const prefix = 'spiffe://example.org/';
  const at2048 = prefix + 'a'.repeat(MAX_SPIFFE_ID_BYTES - prefix.length);
  tt.equal(Buffer.byteLength(at2048), 2048);
  tt.equal(SpiffeId.parse(at2048).toString(), at2048, '2048 bytes are accepted');
  rejects(tt, at2048 + 'a', /longer than 2048 bytes/, '2049 bytes');
  const segs = Array.from({ length: 1100 }, () => 'ab');
  rejects(tt, prefix + segs.join('/'), /longer than 2048 bytes/, 'many short segments');
});

t.test('a trust domain is at most 255 bytes', async (tt) => {
  const name255 = 'a'.repeat(MAX_TRUST_DOMAIN_BYTES);
  tt.equal(SpiffeId.parse(`spiffe://${name255}/w`).trustDomain.name, name255, '255 bytes accepted in an ID');
  tt.equal(TrustDomain.parse(name255).name, name255, '255 bytes accepted bare');
  rejects(tt, `spiffe://${name255}a/w`, /longer than 255 bytes/, '256 bytes in an ID');
  tt.throws(() => TrustDomain.parse(name255 + 'a'), { code: 'invalid_trust_domain', message: /longer than 255 bytes/ });
});

t.test('the trust domain ID spiffe://example.org is valid and has no path', async (tt) => {
  const id = SpiffeId.parse('spiffe://example.org');
  tt.equal(id.path, '');
  tt.same(id.segments, []);
  tt.equal(id.toString(), 'spiffe://example.org');
  tt.ok(id.equals(TrustDomain.parse('example.org').id()));
});

t.test('errors carry the field they were given', async (tt) => {
  const err = rejection('http://x', 'spiffe_id');
  tt.equal(err.field, 'spiffe_id');
  tt.equal(err.name, 'InvalidSpiffeId');
  const tdErr = rejection('spiffe://Upper/x', 'parent_id');
  tt.equal(tdErr.field, 'parent_id', 'a trust domain error inside an ID keeps the field');
  tt.equal(tdErr.code, 'invalid_spiffe_id', 'and is reported as an invalid SPIFFE ID');
});

t.test('TrustDomain.parse takes a bare name or a SPIFFE ID URI', async (tt) => {
  tt.equal(TrustDomain.parse('example.org').name, 'example.org');
  tt.equal(TrustDomain.parse('spiffe://example.org').name, 'example.org');
  tt.equal(TrustDomain.parse('spiffe://example.org/ns/a/sa/b').name, 'example.org');
  tt.equal(String(TrustDomain.parse('example.org')), 'example.org');
  tt.equal(JSON.stringify({ td: TrustDomain.parse('example.org') }), '{"td":"example.org"}');
  tt.throws(() => TrustDomain.parse(''), { code: 'invalid_trust_domain', message: /empty/ });
  tt.throws(() => TrustDomain.parse('Example.org'), { code: 'invalid_trust_domain', message: /uppercase/ });
  tt.throws(() => TrustDomain.parse('example.org:80'), { code: 'invalid_trust_domain', message: /port/ });
  tt.throws(() => TrustDomain.parse('me@example.org'), { code: 'invalid_trust_domain', message: /userinfo/ });
  tt.throws(() => TrustDomain.parse('example.org/x'), { code: 'invalid_trust_domain', message: /character "\/"/ });
  tt.throws(() => TrustDomain.parse('http://example.org'), { code: 'invalid_spiffe_id', message: /scheme/ });
  tt.throws(() => TrustDomain.parse('spiffe://example.org/a//b'), { code: 'invalid_spiffe_id', message: /empty segment/ });
  const err = (() => { try { TrustDomain.parse('a b', 'trust_domain'); } catch (e) { return e as MeshidError; } return undefined; })();
  tt.ok(err instanceof InvalidTrustDomain);
  tt.equal(err?.field, 'trust_domain');
});

t.test('trust domains compare by name', async (tt) => {
  tt.ok(TrustDomain.parse('example.org').equals(TrustDomain.parse('spiffe://example.org/x')));
  tt.notOk(TrustDomain.parse('example.org').equals(TrustDomain.parse('example.com')));
});

t.test('serviceAccountId is spiffe://<td>/ns/<namespace>/sa/<name>', async (tt) => {
  const td = TrustDomain.parse('cluster.local');
  const id = serviceAccountId(td, 'default', 'web');
  tt.equal(id.toString(), 'spiffe://cluster.local/ns/default/sa/web');
  tt.same(id.segments, ['ns', 'default', 'sa', 'web']);
  tt.ok(id.memberOf(td));
  tt.throws(() => serviceAccountId(td, 'bad ns', 'web'), { code: 'invalid_spiffe_id' });
  tt.throws(() => serviceAccountId(td, '', 'web'), { code: 'invalid_spiffe_id', message: /empty segment/ });
  tt.throws(() => serviceAccountId(td, 'default', '..'), { code: 'invalid_spiffe_id', message: /dot segments/ });
});

t.test('a segment given to child() cannot smuggle a "/" and forge another identity', async (tt) => {
  const td = TrustDomain.parse('example.org');
  // Without the check, ('a/sa/b', 'c') and ('a', 'b/sa/c') both give /ns/a/sa/b/sa/c.
  tt.throws(() => serviceAccountId(td, 'a/sa/b', 'c'), { code: 'invalid_spiffe_id', message: /"\/"/ });
  tt.throws(() => serviceAccountId(td, 'a', 'b/sa/c'), { code: 'invalid_spiffe_id', message: /"\/"/ });
  tt.throws(() => td.child('x/y'), { code: 'invalid_spiffe_id' });
  tt.throws(() => agentId(td, 'join_token', 'node/../x'), { code: 'invalid_spiffe_id' });
});

t.test('agentId is spiffe://<td>/meshid/agent/<attestor>/<node...> and isAgentId recognises it', async (tt) => {
  const td = TrustDomain.parse('example.org');
  const id = agentId(td, 'join_token', 'node-1');
  tt.equal(id.toString(), 'spiffe://example.org/meshid/agent/join_token/node-1');
  tt.ok(isAgentId(id));
  tt.equal(agentId(td, 'k8s_psat', 'cluster1', 'node-a').toString(), 'spiffe://example.org/meshid/agent/k8s_psat/cluster1/node-a');
  tt.notOk(isAgentId(serviceAccountId(td, 'default', 'web')), 'a workload ID is not an agent ID');
  tt.notOk(isAgentId(SpiffeId.parse('spiffe://example.org/meshid/agent/x')), 'an attestor without a node is not an agent ID');
  tt.notOk(isAgentId(serverId(td)));
  tt.equal(serverId(td).toString(), 'spiffe://example.org/meshid/server');
});

t.test('IDs compare by trust domain and path', async (tt) => {
  const a = SpiffeId.parse('spiffe://example.org/a/b');
  tt.ok(a.equals(SpiffeId.parse('spiffe://example.org/a/b')));
  tt.notOk(a.equals(SpiffeId.parse('spiffe://example.org/a/B')), 'path is case-sensitive');
  tt.notOk(a.equals(SpiffeId.parse('spiffe://example.com/a/b')));
  tt.notOk(a.equals(SpiffeId.parse('spiffe://example.org/a')));
  tt.ok(a.memberOf(TrustDomain.parse('example.org')));
  tt.notOk(a.memberOf(TrustDomain.parse('example.com')));
});

t.test('toString round-trips and values are immutable', async (tt) => {
  for (const s of ['spiffe://example.org', 'spiffe://example.org/a', 'spiffe://td/ns/default/sa/web', 'spiffe://a.b-c_d/X/y.Z']) {
    const id = SpiffeId.parse(s);
    tt.equal(id.toString(), s);
    tt.ok(SpiffeId.parse(id.toString()).equals(id));
    tt.equal(JSON.stringify(id), JSON.stringify(s));
    tt.ok(Object.isFrozen(id) && Object.isFrozen(id.trustDomain));
  }
  const id = SpiffeId.parse('spiffe://example.org/a');
  tt.throws(() => { (id as unknown as { path: string }).path = '/b'; }, TypeError);
  tt.equal(id.path, '/a');
});

t.test('tryParse returns undefined instead of throwing', async (tt) => {
  tt.equal(SpiffeId.tryParse('nope'), undefined);
  tt.equal(SpiffeId.tryParse('spiffe://example.org/x')?.path, '/x');
});

t.test('fromParts checks the path and the total length', async (tt) => {
  const td = TrustDomain.parse('example.org');
  tt.equal(SpiffeId.fromParts(td, '/a/b').toString(), 'spiffe://example.org/a/b');
  tt.throws(() => SpiffeId.fromParts(td, 'a'), { message: /must start with "\/"/ });
  tt.throws(() => SpiffeId.fromParts(td, '/a/'), { message: /trailing slash/ });
  tt.throws(() => SpiffeId.fromParts(td, '/' + 'a'.repeat(2048)), { message: /longer than 2048 bytes/ });
});

// ---- property tests ----

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789.-_'.split('');
const PATH_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_'.split('');
const tdArb = fc.string({ unit: fc.constantFrom(...TD_CHARS), minLength: 1, maxLength: 40 });
const segmentArb = fc.string({ unit: fc.constantFrom(...PATH_CHARS), minLength: 1, maxLength: 20 }).filter((s) => s !== '.' && s !== '..');

/** An independent statement of the SPIFFE ID rules, for checking what the parser accepts. */
const SPIFFE_ID_RE = /^spiffe:\/\/[a-z0-9._-]{1,255}(?:\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._-]+)*$/;
const satisfiesEveryRule = (s: string): boolean => SPIFFE_ID_RE.test(s) && Buffer.byteLength(s) <= 2048;

t.test('any ID built from valid parts parses and round-trips', async (tt) => {
  fc.assert(fc.property(tdArb, fc.array(segmentArb, { maxLength: 8 }), (td, segs) => {
    const s = `spiffe://${td}${segs.map((x) => '/' + x).join('')}`;
    const id = SpiffeId.parse(s);
    if (id.toString() !== s) throw new Error(`round-trip changed ${s} into ${id.toString()}`);
    if (id.trustDomain.name !== td) throw new Error('trust domain differs');
    if (id.segments.join('/') !== segs.join('/')) throw new Error('segments differ');
    const viaParts = TrustDomain.parse(td).child(...segs);
    if (!viaParts.equals(id)) throw new Error('child() builds a different ID');
  }), { numRuns: 2000 });
  tt.pass('2000 generated IDs round-tripped');
});

function checkParserOn(s: string): void {
  let id: SpiffeId | undefined;
  try {
    id = SpiffeId.parse(s);
  } catch (err) {
    if (!(err instanceof InvalidSpiffeId)) throw new Error(`non-InvalidSpiffeId thrown for ${JSON.stringify(s)}: ${String(err)}`);
    if (err.message.length === 0) throw new Error(`empty message for ${JSON.stringify(s)}`);
    if (satisfiesEveryRule(s)) throw new Error(`rejected a valid ID ${JSON.stringify(s)}: ${err.message}`);
    return;
  }
  if (!satisfiesEveryRule(s)) throw new Error(`accepted an invalid ID ${JSON.stringify(s)}`);
  if (id.toString() !== s) throw new Error(`accepted ${JSON.stringify(s)} but prints ${id.toString()}`);
}

t.test('random strings never crash the parser, and anything accepted satisfies every rule', async (tt) => {
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 80 }), checkParserOn), { numRuns: 3000 });
  // Strings that start right, over an alphabet that contains every interesting character.
  const tricky = fc.string({ unit: fc.constantFrom(...'aZ09.-_/:@%?#+ A\u00e9\u0000'.split('')), maxLength: 40 });
  fc.assert(fc.property(fc.constantFrom('spiffe://', 'spiffe://a', 'SPIFFE://', 'spiffe:/', ''), tricky, (p, rest) => checkParserOn(p + rest)), { numRuns: 3000 });
  fc.assert(fc.property(fc.integer({ min: 2000, max: 2100 }), (n) => checkParserOn('spiffe://t/' + 'x'.repeat(n - 11))), { numRuns: 200 });
  tt.pass('6200 random inputs were either rejected with a message or accepted and valid');
});
