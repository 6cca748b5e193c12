-- Work intake: customers (master data, first part), tickets, time entries, usage, review list.

CREATE TABLE customers (
    id              TEXT   PRIMARY KEY,
    name            TEXT   NOT NULL,
    helpdesk_org_id TEXT,
    document        TEXT   NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX customers_helpdesk_org ON customers (helpdesk_org_id);

CREATE TABLE tickets (
    source      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    customer_id TEXT,
    document    TEXT   NOT NULL,
    deleted     BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE time_entries (
    source         TEXT   NOT NULL,
    id             TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    ticket_id      TEXT   NOT NULL,
    customer_id    TEXT,
    started_at     BIGINT NOT NULL,
    period         TEXT   NOT NULL,
    minutes        BIGINT NOT NULL,
    billable       BIGINT NOT NULL,
    document       TEXT   NOT NULL,
    deleted        BIGINT NOT NULL DEFAULT 0,
    billed_invoice TEXT,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX time_entries_customer_period ON time_entries (customer_id, period);

CREATE TABLE usage_records (
    source      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    customer_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    document    TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE review_items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT   NOT NULL,
    source      TEXT   NOT NULL,
    record_id   TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    document    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX review_items_open ON review_items (kind, source, record_id, reason) WHERE resolved_at IS NULL;
