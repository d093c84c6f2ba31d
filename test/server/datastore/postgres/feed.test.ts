// The change feed tests (feed.test.ts) again, unchanged, on PostgreSQL.
process.env.MESHID_TEST_DATASTORE = 'postgres';
await import('../feed.test.js');
