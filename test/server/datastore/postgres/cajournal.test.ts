// The datastore contract suite's cajournal.test.ts again, unchanged, on PostgreSQL
// (a throwaway cluster started by test/helpers/postgres.ts).
process.env.MESHID_TEST_DATASTORE = 'postgres';
await import('../cajournal.test.js');
