-- The settlement ledger: every billable item (a time-entry part, a held part, a usage record,
-- the fee of a contract and period) has at most one row = its state and settling document.
-- No row = open. Rows are written by finalize, release, write-off and credit notes.
CREATE TABLE settlements (
    item        TEXT   PRIMARY KEY,
    kind        TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    contract_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    level       TEXT,
    state       TEXT   NOT NULL,
    document    TEXT   NOT NULL,
    run_id      TEXT   NOT NULL,
    minutes     BIGINT NOT NULL DEFAULT 0,
    amount      TEXT   NOT NULL DEFAULT '0',
    reason      TEXT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX settlements_contract_period ON settlements (contract_id, period);
CREATE INDEX settlements_customer_state ON settlements (customer_id, state);
CREATE INDEX settlements_document ON settlements (document);
