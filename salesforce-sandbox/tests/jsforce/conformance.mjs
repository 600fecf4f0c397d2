// jsforce (an independent Salesforce client) against the local sandbox, unchanged.
// Run by tests/jsforce.rs with SANDBOX_URL, CLIENT_ID, CLIENT_SECRET, EXPIRED_TOKEN set;
// exits non-zero with the failing check's name on any mismatch.
import jsforce from 'jsforce';
import assert from 'node:assert/strict';

const url = process.env.SANDBOX_URL;
const clientId = process.env.CLIENT_ID;
const clientSecret = process.env.CLIENT_SECRET;
let refreshes = 0;

async function freshToken() {
  const res = await fetch(`${url}/services/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
  });
  assert.equal(res.status, 200, 'token endpoint');
  return (await res.json()).access_token;
}

const conn = new jsforce.Connection({
  instanceUrl: url,
  // An expired session: the first call gets 401 INVALID_SESSION_ID, jsforce refreshes
  // through refreshFn and retries.
  accessToken: process.env.EXPIRED_TOKEN,
  version: '62.0',
  refreshFn: (_conn, callback) => {
    refreshes += 1;
    freshToken().then((t) => callback(null, t), (e) => callback(e));
  },
});

async function check(name, f) {
  try {
    await f();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
}

await check('401 → refresh → retry', async () => {
  const limits = await conn.limits();
  assert.ok(limits.DailyApiRequests.Max > 0);
  assert.equal(refreshes, 1);
});

await check('query + queryMore', async () => {
  let res = await conn.query('SELECT Id, Name FROM Account ORDER BY Name');
  const total = res.totalSize;
  let seen = res.records.length;
  assert.equal(res.done, false, 'several pages');
  while (!res.done) {
    res = await conn.queryMore(res.nextRecordsUrl);
    seen += res.records.length;
  }
  assert.equal(seen, total);
  assert.equal(total, 120);
});

await check('query with autoFetch', async () => {
  const res = await conn.query('SELECT Id, Account.Name FROM Contact').run({ autoFetch: true, maxFetch: 100000 });
  assert.equal(res.records.length, 240);
  assert.ok(res.records[0].Account.Name);
});

let id;
await check('create / retrieve / update', async () => {
  const created = await conn.sobject('Account').create({ Name: "jsforce O'Brien" });
  assert.equal(created.success, true);
  id = created.id;
  const got = await conn.sobject('Account').retrieve(id);
  assert.equal(got.Name, "jsforce O'Brien");
  const updated = await conn.sobject('Account').update({ Id: id, Name: 'jsforce updated' });
  assert.equal(updated.success, true);
  assert.equal((await conn.sobject('Account').retrieve(id)).Name, 'jsforce updated');
});

await check('upsert by external id', async () => {
  const first = await conn.sobject('Account').upsert({ Name: 'Ext', External_Id__c: 'JS-1' }, 'External_Id__c');
  assert.equal(first.success, true);
  assert.equal(first.created, true);
  const second = await conn.sobject('Account').upsert({ Name: 'Ext 2', External_Id__c: 'JS-1' }, 'External_Id__c');
  assert.equal(second.success, true);
  assert.equal(second.created, false);
});

await check('delete and queryAll', async () => {
  const gone = await conn.sobject('Account').destroy(id);
  assert.equal(gone.success, true);
  const live = await conn.query(`SELECT Id FROM Account WHERE Id = '${id}'`);
  assert.equal(live.totalSize, 0);
  const all = await conn.query(`SELECT Id, IsDeleted FROM Account WHERE Id = '${id}'`, { scanAll: true });
  assert.equal(all.totalSize, 1);
  assert.equal(all.records[0].IsDeleted, true);
});

await check('describeGlobal / describe', async () => {
  const global = await conn.describeGlobal();
  assert.deepEqual(global.sobjects.map((o) => o.name), ['Account', 'Case', 'Contact', 'PushTopic']);
  const contact = await conn.sobject('Contact').describe();
  const accountId = contact.fields.find((f) => f.name === 'AccountId');
  assert.deepEqual(accountId.referenceTo, ['Account']);
});

await check('collections: create many, retrieve many', async () => {
  const results = await conn.sobject('Contact').create(
    [{ LastName: 'Many 1' }, { LastName: 'Many 2' }, { FirstName: 'no last name' }],
    { allOrNone: false },
  );
  assert.equal(results.length, 3);
  assert.deepEqual(results.map((r) => r.success), [true, true, false]);
  // jsforce hands over Salesforce's SaveResult as sent: its errors say `statusCode`
  // (the REST error array says `errorCode`; a record's result does not).
  assert.equal(results[2].errors[0].statusCode, 'REQUIRED_FIELD_MISSING');
  assert.deepEqual(results[2].errors[0].fields, ['LastName']);
  const ids = results.filter((r) => r.success).map((r) => r.id);
  const got = await conn.sobject('Contact').retrieve(ids, { fields: ['LastName'] });
  assert.deepEqual(got.map((r) => r.LastName), ['Many 1', 'Many 2']);
});

await check('composite with references', async () => {
  const res = await conn.requestPost('/services/data/v62.0/composite', {
    allOrNone: true,
    compositeRequest: [
      { method: 'POST', url: '/services/data/v62.0/sobjects/Account', referenceId: 'acct', body: { Name: 'Composite via jsforce' } },
      { method: 'POST', url: '/services/data/v62.0/sobjects/Contact', referenceId: 'ct', body: { LastName: 'Ref', AccountId: '@{acct.id}' } },
    ],
  });
  assert.deepEqual(res.compositeResponse.map((r) => r.httpStatusCode), [201, 201]);
});

await check('error format', async () => {
  await assert.rejects(conn.query('SELECT Nope FROM Account'), (e) => e.errorCode === 'INVALID_FIELD');
});

await check('web-server flow with PKCE, then refresh', async () => {
  const oauth2 = new jsforce.OAuth2({
    loginUrl: url,
    clientId,
    clientSecret,
    redirectUri: 'http://localhost:1717/OauthRedirect',
    useVerifier: true,
  });
  // The "browser": the sandbox's user consents at once and is redirected with a code.
  const res = await fetch(oauth2.getAuthorizationUrl({ scope: 'api refresh_token', state: 'st-1' }), { redirect: 'manual' });
  assert.equal(res.status, 302, 'authorize redirects');
  const back = new URL(res.headers.get('location'));
  assert.equal(back.origin + back.pathname, 'http://localhost:1717/OauthRedirect');
  assert.equal(back.searchParams.get('state'), 'st-1');
  const user = new jsforce.Connection({ oauth2, version: '62.0' });
  await user.authorize(back.searchParams.get('code'));
  assert.equal(user.instanceUrl, url);
  assert.ok(user.refreshToken, 'a refresh token');
  const got = await user.query('SELECT Id FROM Account LIMIT 3');
  assert.equal(got.records.length, 3);
  const refreshed = await oauth2.refreshToken(user.refreshToken);
  assert.ok(refreshed.access_token);
  // The code worked once.
  await assert.rejects(oauth2.requestToken(back.searchParams.get('code')), /invalid_grant|invalid authorization code/);
});

await check('bulk2 ingest: insert with a failing row, results matched', async () => {
  const res = await conn.bulk2.loadAndWaitForResults({
    object: 'Account',
    operation: 'insert',
    pollInterval: 50,
    pollTimeout: 30000,
    input: [
      { Name: 'Bulk "quoted", name', Industry: 'Legal' },
      { Name: 'Bulk two\nlines', Industry: null },
      { Name: '', Industry: 'Legal' },
    ],
  });
  assert.equal(res.successfulResults.length, 2, 'two inserted');
  assert.deepEqual(res.successfulResults.map((r) => r.Name).sort(), ['Bulk "quoted", name', 'Bulk two\nlines']);
  assert.ok(res.successfulResults.every((r) => r.sf__Id && r.sf__Created === 'true'));
  assert.equal(res.failedResults.length, 1, 'one failed');
  assert.match(res.failedResults[0].sf__Error, /REQUIRED_FIELD_MISSING/);
  assert.equal(res.unprocessedRecords.length, 0);
});

await check('bulk2 query (one page; multi-page crashes jsforce itself, see EMULATORS.md)', async () => {
  const records = await (await conn.bulk2.query("SELECT Id, Name FROM Account WHERE Name LIKE 'Bulk%'", { pollInterval: 50 })).toArray();
  assert.deepEqual(records.map((r) => r.Name).sort(), ['Bulk "quoted", name', 'Bulk two\nlines']);
});

console.log('jsforce conformance: all checks passed');
