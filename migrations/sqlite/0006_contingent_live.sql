-- The contingent as it stands during a period, updated as work arrives (the booked ledger of
-- finalized runs stays in contingent_ledger).
CREATE TABLE contingent_live (
    contract_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    statement   TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (contract_id, period)
);

-- Lookups billing does per contract.
CREATE INDEX tickets_id ON tickets (id);
CREATE INDEX usage_records_customer_period ON usage_records (customer_id, period);
