//! What consumes what: the list of consumers this hub runs, each with its queue name, the
//! event types it is bound to, and its handler. Read top to bottom it is the data flow
//! after the bus: intake of work, then billing, then export.

use crate::bus::{Consumer, ConsumerSpec};
use crate::store::Db;
use std::sync::Arc;

/// The consumers of a hub on this store.
pub fn consumers(cfg: &crate::config::Config, db: &Db) -> Vec<Consumer> {
    let mut list = vec![
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
    ];
    // Warehouse: every unit of a received goods receipt becomes an asset of the customer.
    list.push(Consumer::new(
        ConsumerSpec::new(
            crate::warehouse::assets::CONSUMER,
            crate::warehouse::assets::ROUTING_KEYS,
        ),
        Arc::new(crate::warehouse::assets::AssetRegistry {
            settings: cfg.warehouse.clone(),
        }),
    ));
    // Export: each configured target consumes `invoice.finalized`.
    for t in &cfg.export {
        list.push(Consumer::new(
            ConsumerSpec::new(&format!("export-{}", t.name), &["invoice.finalized"]),
            Arc::new(crate::export::ExportSink::new(t, cfg)),
        ));
    }
    // Helpdesk (Zammad): webhook signals → fetch and map; contingent notices written back.
    if let Some(z) = &cfg.zammad {
        list.push(Consumer::new(
            ConsumerSpec::new(
                crate::helpdesk::SYNC_CONSUMER,
                crate::helpdesk::SYNC_ROUTING_KEYS,
            ),
            Arc::new(crate::helpdesk::ZammadSync {
                client: zammad::Client::new(&z.base_url, z.token.clone()),
                source: z.source.clone(),
                mapping: z.mapping.clone(),
            }),
        ));
        list.push(Consumer::new(
            ConsumerSpec::new(crate::helpdesk::CONSUMER, crate::helpdesk::ROUTING_KEYS),
            Arc::new(crate::helpdesk::HelpdeskNotify {
                client: zammad::Client::new(&z.base_url, z.token.clone()),
                group: z.group.clone(),
            }),
        ));
        // Warehouse write-back: pick & pack tickets and warranty/licence reminders.
        let group = cfg
            .warehouse
            .pick_pack_group
            .clone()
            .unwrap_or(z.group.clone());
        list.push(Consumer::new(
            ConsumerSpec::new(
                crate::warehouse::tickets::PICK_PACK_CONSUMER,
                crate::warehouse::tickets::PICK_PACK_KEYS,
            ),
            Arc::new(crate::warehouse::tickets::PickPackTicket {
                client: zammad::Client::new(&z.base_url, z.token.clone()),
                group,
                ticket_customer: cfg.warehouse.ticket_customer.clone(),
            }),
        ));
        list.push(Consumer::new(
            ConsumerSpec::new(
                crate::warehouse::tickets::REMINDER_CONSUMER,
                crate::warehouse::tickets::REMINDER_KEYS,
            ),
            Arc::new(crate::warehouse::tickets::ReminderTicket {
                client: zammad::Client::new(&z.base_url, z.token.clone()),
                group: z.group.clone(),
                ticket_customer: cfg.warehouse.ticket_customer.clone(),
            }),
        ));
    }
    list
}
