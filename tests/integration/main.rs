//! The hub's integration tests, one binary with a module per user story. Each module talks to
//! the real parts: SQLite, PostgreSQL and RabbitMQ on loopback, the `drehkreuz` binary, the
//! fake Zammad in `support::fake_zammad`, the independent checkers in `tests/oracles/`.

mod support;

mod access;
mod billing_runs;
mod bus_conformance;
mod cli;
mod datev_export;
mod exports;
mod helpdesk;
mod hub_process;
mod intake;
mod outages;
mod settlement;
mod settlement_props;
mod store_conformance;
mod trust_boundaries;
mod warehouse;
mod zammad;
