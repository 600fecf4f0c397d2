// The npm Pub/Sub API client (salesforce-pubsub-api-client), unchanged, against the
// sandbox's Pub/Sub service: it connects with a token the sandbox issued, subscribes
// from the earliest event and after a replay id, decodes the Avro payloads with the
// schemas it fetches, expands the change event header's bitmap fields with its own
// parser, and sees an unknown topic refused. Run by salesforce-sandbox/tests/pubsub_node.rs.
//
// The client reads its trusted roots from a file inside its package and offers
// `rejectUnauthorizedSsl: false` for servers with other certificates; the sandbox's is a
// throwaway self-signed one, so that setting is used.
import PubSubApiClient from 'salesforce-pubsub-api-client';

const quiet = process.env.PUBSUB_DEBUG ? console : { debug() {}, info() {}, warn() {}, error: (...a) => console.error(...a) };
const failures = [];
function check(ok, what) {
    if (!ok) failures.push(what);
}

// A client keeps one subscription per topic: each phase connects a client of its own.
async function connected() {
    const client = new PubSubApiClient(
        {
            authType: 'user-supplied',
            accessToken: process.env.ACCESS_TOKEN,
            instanceUrl: process.env.SANDBOX_URL,
            organizationId: process.env.ORG_ID,
            pubSubEndpoint: process.env.PUBSUB_ENDPOINT,
            rejectUnauthorizedSsl: false
        },
        quiet
    );
    await client.connect();
    return client;
}

// Collect `count` events of a subscription, then its last-event callback.
function collect(start) {
    return new Promise((resolve, reject) => {
        const events = [];
        const timer = setTimeout(() => reject(new Error(`timed out with ${events.length} events`)), 15000);
        start((subscription, callbackType, data) => {
            if (callbackType === 'event') {
                events.push(data);
            } else if (callbackType === 'lastEvent') {
                clearTimeout(timer);
                resolve(events);
            } else if (callbackType === 'error') {
                clearTimeout(timer);
                reject(data);
            }
        });
    });
}

const topic = '/data/AccountChangeEvent';
const first = await connected();
const creates = await collect((cb) => first.subscribeFromEarliestEvent(topic, cb, 3));
first.close();
check(creates.length === 3, `3 events from the earliest, got ${creates.length}`);
check(
    creates.map((e) => Number(e.replayId)).join(',') === '1,2,3',
    `replay ids 1,2,3, got ${creates.map((e) => e.replayId)}`
);
check(
    creates.map((e) => e.payload.Name).join('|') === 'Firm 0|Firm 1|Firm 2',
    `names, got ${creates.map((e) => JSON.stringify(e.payload.Name))}`
);
const header = creates[0].payload.ChangeEventHeader;
check(header.changeType === 'CREATE', `changeType CREATE, got ${header.changeType}`);
check(header.entityName === 'Account', `entityName Account, got ${header.entityName}`);
check(header.recordIds.length === 1, 'one record id');

const second = await connected();
const updates = await collect((cb) => second.subscribeFromReplayId(topic, cb, 1, 3));
second.close();
check(updates.length === 1, `1 event after replay id 3, got ${updates.length}`);
const update = updates[0];
check(Number(update.replayId) === 4, `replay id 4, got ${update.replayId}`);
const h = update.payload.ChangeEventHeader;
check(h.changeType === 'UPDATE', `changeType UPDATE, got ${h.changeType}`);
check(
    h.changedFields.includes('Industry') && h.changedFields.includes('Phone') && !h.changedFields.includes('Name'),
    `changedFields decoded by the client: ${JSON.stringify(h.changedFields)}`
);
check(
    JSON.stringify(h.nulledFields) === JSON.stringify(['Industry']),
    `nulledFields decoded by the client: ${JSON.stringify(h.nulledFields)}`
);
check(update.payload.Phone === '(415) 555-0100', `Phone, got ${JSON.stringify(update.payload.Phone)}`);

// An unknown topic is refused with gRPC NOT_FOUND.
const client = await connected();
try {
    await collect((cb) => client.subscribe('/data/NoSuchChangeEvent', cb, 1));
    check(false, 'an unknown topic was accepted');
} catch (error) {
    check(error?.code === 5, `NOT_FOUND (5) for an unknown topic, got ${error?.code}: ${error?.details}`);
}

client.close();

// Platform events: published with the client's own Avro encoding (unions wrapped as
// avro-js writes them; CreatedDate and CreatedById, required, given by the publisher).
const eventTopic = '/event/Case_Update__e';
const user = process.env.USER_ID;
const event = (caseId, hours) => ({
    CreatedDate: Date.now(),
    CreatedById: user,
    Case_Id__c: { string: caseId },
    Status__c: null,
    Hours__c: hours === undefined ? null : { double: hours }
});
const publisher = await connected();
const single = await publisher.publish(eventTopic, event('500P', 1.5), 'single-1');
check(single.correlationKey === 'single-1', `publish's correlation key, got ${single.correlationKey}`);
check(Number(single.replayId) > 0, `publish's replay id, got ${single.replayId}`);
const batchKeys = [];
const answered = await new Promise((resolve, reject) => {
    const keys = [];
    const timer = setTimeout(() => reject(new Error(`publishBatch: ${keys.length} of 6 answered`)), 15000);
    const callback = (info, callbackType, data) => {
        if (callbackType === 'publishResponse') {
            keys.push(...data.results.map((r) => r.correlationKey));
            if (keys.length === 6) {
                clearTimeout(timer);
                resolve(keys);
            }
        } else if (callbackType === 'error') {
            clearTimeout(timer);
            reject(data);
        }
    };
    (async () => {
        for (const batch of [0, 1]) {
            const events = [0, 1, 2].map((i) => ({ id: `batch-${batch}-${i}`, payload: event(`500B${batch}${i}`) }));
            batchKeys.push(...events.map((e) => e.id));
            await publisher.publishBatch(eventTopic, events, callback);
        }
    })().catch(reject);
});
check(
    [...answered].sort().join(',') === [...batchKeys].sort().join(','),
    `publishBatch answered ${answered}, sent ${batchKeys}`
);
publisher.close();

const reader = await connected();
const published = await collect((cb) => reader.subscribeFromReplayId(eventTopic, cb, 7, Number(single.replayId) - 1));
reader.close();
check(
    published.map((e) => e.payload.Case_Id__c?.string ?? e.payload.Case_Id__c).join(',') === '500P,500B00,500B01,500B02,500B10,500B11,500B12',
    `the published events read back in order, got ${published.map((e) => JSON.stringify(e.payload.Case_Id__c))}`
);
const hours = published[0].payload.Hours__c;
check((hours?.double ?? hours) === 1.5, `Hours__c read back, got ${JSON.stringify(hours)}`);
check(published[0].payload.CreatedById === user, `CreatedById read back, got ${published[0].payload.CreatedById}`);

// A managed subscription: looked up by name through the Tooling API, read, a position
// committed; a new client resumes after it (looked up by id).
const managed = await connected();
let subscriptionId;
const firstTwo = await collect((cb) =>
    managed.subscribeWithManagedSubscription(process.env.MANAGED_NAME, (info, type, data) => {
        subscriptionId = info.subscriptionId;
        cb(info, type, data);
    }, 2)
);
check(firstTwo.map((e) => Number(e.replayId)).join(',') === '1,2', `managed: replay ids 1,2, got ${firstTwo.map((e) => e.replayId)}`);
check(subscriptionId === process.env.MANAGED_ID, `managed: id ${process.env.MANAGED_ID}, got ${subscriptionId}`);
managed.commitReplayId(subscriptionId, firstTwo[1].replayId);
await new Promise((r) => setTimeout(r, 500));
managed.close();
const resumed = await connected();
const nextTwo = await collect((cb) => resumed.subscribeWithManagedSubscription(process.env.MANAGED_ID, cb, 2));
resumed.close();
check(nextTwo.map((e) => Number(e.replayId)).join(',') === '3,4', `managed: resumed at 3,4, got ${nextTwo.map((e) => e.replayId)}`);

if (failures.length) {
    console.log(failures.join('\n'));
    process.exit(1);
}
console.log('all checks passed');
process.exit(0);
