-- What was exported where: one row per target, format and invoice, with the file and its
-- checksum at the time. A redelivered invoice.finalized finds its row and exports nothing new.
CREATE TABLE export_ledger (
    target         TEXT   NOT NULL,
    format         TEXT   NOT NULL,
    invoice_number TEXT   NOT NULL,
    period         TEXT   NOT NULL,
    file           TEXT   NOT NULL,
    sha256         TEXT   NOT NULL,
    exported_at    BIGINT NOT NULL,
    PRIMARY KEY (target, format, invoice_number)
);
CREATE INDEX export_ledger_period ON export_ledger (target, format, period);
