-- Tickets the hub opened in the helpdesk, by the hub's own reference (idempotent write-back).
CREATE TABLE helpdesk_tickets (
    hub_ref    TEXT   PRIMARY KEY,
    ticket_id  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Webhook deliveries already accepted (Zammad's X-Zammad-Delivery), for deduplication.
CREATE TABLE webhook_deliveries (
    source      TEXT   NOT NULL,
    delivery_id TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, delivery_id)
);

-- Cursors of periodic reconciliations (e.g. the highest `updated_at` seen in Zammad).
CREATE TABLE sync_cursors (
    name       TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
