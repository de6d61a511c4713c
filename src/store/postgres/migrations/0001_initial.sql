-- Lifeboat's PostgreSQL schema, version 1 (docs/postgres.md).
-- Records are JSON (jsonb) bodies in the shape the embedded store keeps, with the columns that
-- queries filter and order by beside them. Ids and keys sort in byte order (COLLATE "C"), as
-- the embedded store's keys do.

CREATE TABLE contacts (
    id          text COLLATE "C" PRIMARY KEY,
    body        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Every contact holding an address (several may share one: a family's email).
CREATE TABLE contact_addresses (
    channel     text NOT NULL,
    address     text COLLATE "C" NOT NULL,
    contact_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (channel, address, contact_id)
);
CREATE INDEX contact_addresses_contact ON contact_addresses (contact_id);

-- Append-only consent history.
CREATE TABLE consent_history (
    contact_id  text COLLATE "C" NOT NULL,
    channel     text NOT NULL,
    seq         bigserial NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (contact_id, channel, seq)
);

-- Notifications (ids are UUIDv7: time ordered). `erased`: its contact was erased; a save of
-- it stores the erased form.
CREATE TABLE notifications (
    id          text COLLATE "C" PRIMARY KEY,
    contact_id  text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    updated_at  timestamptz NOT NULL,
    erased      boolean NOT NULL DEFAULT false,
    body        jsonb NOT NULL
);
CREATE INDEX notifications_contact ON notifications (contact_id, id DESC);
CREATE INDEX notifications_status ON notifications (status, id DESC);
-- For the retention purge: finished notifications, oldest change first.
CREATE INDEX notifications_finished ON notifications (updated_at)
    WHERE status NOT IN ('queued', 'sending');

-- The hot table: only queued and claimed work. A claim sets available_at to the end of its
-- lease and owner to the claiming instance; an ended lease is simply due again. Finished
-- work is deleted, so the table stays small.
CREATE TABLE queue (
    id            text COLLATE "C" PRIMARY KEY,
    available_at  timestamptz NOT NULL,
    owner         text
) WITH (fillfactor = 70);
CREATE INDEX queue_due ON queue (available_at, id);

-- Provider message ids (a WhatsApp wamid) to the notification they belong to.
CREATE TABLE message_ids (
    channel          text NOT NULL,
    message_id       text COLLATE "C" NOT NULL,
    notification_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (channel, message_id)
);
CREATE INDEX message_ids_notification ON message_ids (notification_id);

-- Idempotency keys: unique across every instance; one older than 24 h counts as absent.
CREATE TABLE idempotency (
    key              text COLLATE "C" PRIMARY KEY,
    notification_id  text COLLATE "C" NOT NULL,
    fingerprint      text NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE channel_states (
    channel  text PRIMARY KEY,
    body     jsonb NOT NULL
);

-- What an erasure left of a contact, by the hash of its id.
CREATE TABLE tombstones (
    key   text COLLATE "C" PRIMARY KEY,
    body  jsonb NOT NULL
);

-- Small records of other modules (opt-in tokens, counters, webhook event ids, ...).
CREATE TABLE kv (
    namespace   text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);
