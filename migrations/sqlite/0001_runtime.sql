-- Hub runtime: outbox, inbox, embedded bus queues, dead letters, scheduler ledger.
-- Instants are milliseconds since the Unix epoch (UTC).

-- The outbox keeps each event once, unchanged; what is still to publish is the small
-- `outbox_pending` row beside it (updating it never rewrites the event).
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT   NOT NULL,
    routing_key TEXT   NOT NULL,
    envelope    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX outbox_created_at ON outbox (created_at);

CREATE TABLE outbox_pending (
    outbox_id       BIGINT  PRIMARY KEY,
    next_attempt_at BIGINT  NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);

CREATE TABLE inbox (
    consumer     TEXT   NOT NULL,
    message_id   TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);

CREATE TABLE bus_bindings (
    consumer    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    PRIMARY KEY (consumer, routing_key)
);

CREATE TABLE bus_queue (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer         TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    routing_key      TEXT    NOT NULL,
    envelope         TEXT    NOT NULL,
    enqueued_at      BIGINT  NOT NULL,
    available_at     BIGINT  NOT NULL,
    locked_until     BIGINT  NOT NULL DEFAULT 0,
    deliveries       INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    first_failure_at BIGINT,
    last_error       TEXT
);
CREATE INDEX bus_queue_ready ON bus_queue (consumer, available_at, id);

CREATE TABLE dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer         TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    routing_key      TEXT    NOT NULL,
    envelope         TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    first_failure_at BIGINT,
    dead_at          BIGINT  NOT NULL,
    replayed_at      BIGINT
);
CREATE INDEX dead_letters_consumer ON dead_letters (consumer, id);

CREATE TABLE schedules (
    name          TEXT   PRIMARY KEY,
    cron          TEXT   NOT NULL,
    timezone      TEXT   NOT NULL,
    registered_at BIGINT NOT NULL
);

CREATE TABLE schedule_runs (
    schedule    TEXT   NOT NULL,
    due_at      BIGINT NOT NULL,
    claimed_by  TEXT   NOT NULL,
    claimed_at  BIGINT NOT NULL,
    finished_at BIGINT,
    error       TEXT,
    PRIMARY KEY (schedule, due_at)
);
