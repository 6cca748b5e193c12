-- Budget threshold notices: once per contract, period, level and threshold (#11 point 10).
CREATE TABLE budget_notices (
    contract_id TEXT   NOT NULL,
    period      TEXT   NOT NULL,
    level       TEXT   NOT NULL,
    percent     BIGINT NOT NULL,
    entry_id    TEXT   NOT NULL,
    noticed_at  BIGINT NOT NULL,
    PRIMARY KEY (contract_id, period, level, percent)
);
