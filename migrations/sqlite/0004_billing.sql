-- Billing: master data (seller, number ranges, contracts), invoice runs, immutable invoices,
-- the contingent ledger and threshold notices.

CREATE TABLE seller (
    id       BIGINT PRIMARY KEY,
    document TEXT   NOT NULL
);

CREATE TABLE number_ranges (
    id     TEXT   PRIMARY KEY,
    prefix TEXT   NOT NULL,
    next   BIGINT NOT NULL,
    width  BIGINT NOT NULL
);

CREATE TABLE contracts (
    id           TEXT   PRIMARY KEY,
    customer_id  TEXT   NOT NULL,
    number_range TEXT   NOT NULL,
    document     TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX contracts_customer ON contracts (customer_id);

CREATE TABLE invoice_runs (
    id           TEXT   PRIMARY KEY,
    period       TEXT   NOT NULL,
    customer     TEXT,
    state        TEXT   NOT NULL,
    document     TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT   NOT NULL,
    approved_at  BIGINT,
    approved_by  TEXT,
    finalized_at BIGINT
);
CREATE INDEX invoice_runs_period ON invoice_runs (period);

CREATE TABLE run_write_offs (
    run_id      TEXT   NOT NULL,
    target_kind TEXT   NOT NULL,
    target_id   TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, target_kind, target_id)
);

CREATE TABLE invoices (
    number          TEXT   PRIMARY KEY,
    run_id          TEXT,
    customer_id     TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    original_number TEXT,
    period          TEXT   NOT NULL,
    net             TEXT   NOT NULL,
    vat             TEXT   NOT NULL,
    gross           TEXT   NOT NULL,
    document        TEXT   NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id, period);

CREATE TABLE contingent_ledger (
    contract_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    run_id      TEXT   NOT NULL,
    statement   TEXT   NOT NULL,
    closing     TEXT   NOT NULL,
    PRIMARY KEY (contract_id, period)
);

CREATE TABLE threshold_notices (
    contract_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    percent     BIGINT NOT NULL,
    entry_id    TEXT   NOT NULL,
    noticed_at  BIGINT NOT NULL,
    PRIMARY KEY (contract_id, period, percent)
);

-- GoBD: a finalized invoice is never changed or deleted (corrections are credit notes).
CREATE TRIGGER invoices_no_update BEFORE UPDATE ON invoices
BEGIN
    SELECT RAISE(ABORT, 'invoices are immutable; issue a credit note');
END;
CREATE TRIGGER invoices_no_delete BEFORE DELETE ON invoices
BEGIN
    SELECT RAISE(ABORT, 'invoices are immutable; issue a credit note');
END;
