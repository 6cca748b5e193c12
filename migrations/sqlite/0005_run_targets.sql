-- Invoice-run targets stored one row each, so a run of any size is computed and read in a
-- streaming fashion (the run row keeps only the summary).
CREATE TABLE invoice_run_targets (
    run_id      TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    customer_id TEXT   NOT NULL,
    contract_id TEXT   NOT NULL,
    document    TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
