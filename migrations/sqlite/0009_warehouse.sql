-- Goods receipts as posted by the warehouse (one row per source document), with the
-- canonical receipt and the customer it was resolved to (NULL while on the review list).
CREATE TABLE goods_receipts (
    id           TEXT   PRIMARY KEY,          -- "<source>:<receipt_id>"
    source       TEXT   NOT NULL,
    receipt_id   TEXT   NOT NULL,
    format       TEXT   NOT NULL,
    customer_id  TEXT,
    status       TEXT   NOT NULL,             -- accepted | review
    body_sha256  TEXT   NOT NULL,
    document     TEXT   NOT NULL,             -- canonical receipt (JSON)
    received_at  BIGINT NOT NULL
);
CREATE INDEX goods_receipts_customer ON goods_receipts (customer_id);

-- Idempotency-Key replays: the first answer per (source, key), returned again on a repeat.
CREATE TABLE idempotency_keys (
    source         TEXT   NOT NULL,
    idem_key       TEXT   NOT NULL,
    request_sha256 TEXT   NOT NULL,
    status_code    BIGINT NOT NULL,
    response       TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (source, idem_key)
);

-- Which customer a purchase order (or customer order reference) was placed for.
CREATE TABLE purchase_orders (
    order_id    TEXT   PRIMARY KEY,
    customer_id TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- The asset registry: one row per delivered unit.
CREATE TABLE assets (
    id               TEXT   PRIMARY KEY,
    customer_id      TEXT   NOT NULL,
    receipt          TEXT   NOT NULL,
    line_id          TEXT   NOT NULL,
    article          TEXT,
    manufacturer_pid TEXT,
    gtin             TEXT,
    description      TEXT,
    serial_number    TEXT,
    licence_key      TEXT,
    warranty_end     TEXT,                    -- YYYY-MM-DD
    licence_expiry   TEXT,                    -- YYYY-MM-DD
    received_on      TEXT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX assets_customer ON assets (customer_id);
CREATE INDEX assets_warranty ON assets (warranty_end);
CREATE INDEX assets_licence ON assets (licence_expiry);
CREATE UNIQUE INDEX assets_serial ON assets (article, serial_number);

-- Reminders already due per asset, kind (warranty | licence) and window (days before the end).
CREATE TABLE asset_reminders (
    asset_id    TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    window_days BIGINT NOT NULL,
    ends_on     TEXT   NOT NULL,
    emitted     BIGINT NOT NULL,              -- 1: a reminder went out; 0: covered by a nearer one
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (asset_id, kind, window_days, ends_on)
);
