//! What consumes what: the list of consumers this hub runs, each with its queue name, the
//! event types it is bound to, and its handler. Read top to bottom it is the data flow
//! after the bus: intake of work, then billing, then export.

use crate::bus::{Consumer, ConsumerSpec};
use crate::store::Db;
use std::sync::Arc;

/// The consumers of a hub on this store.
pub fn consumers(db: &Db) -> Vec<Consumer> {
    vec![
        // Intake of work: tickets, time entries, usage → store (+ `work.recorded`).
        Consumer::new(
            ConsumerSpec::new(crate::intake::CONSUMER, crate::intake::ROUTING_KEYS),
            Arc::new(crate::intake::WorkIntake),
        ),
        // Billing: the live contingent ledger → `contingent.threshold_crossed`.
        Consumer::new(
            ConsumerSpec::new(
                crate::billing::ledger::CONSUMER,
                crate::billing::ledger::ROUTING_KEYS,
            ),
            Arc::new(crate::billing::ledger::ContingentLedger { db: db.clone() }),
        ),
    ]
}
