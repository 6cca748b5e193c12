//! The warehouse connector: goods receipts in, assets and tickets out.
//!
//! Data flow: `POST /api/v1/goods-receipts` (`http::warehouse`) reads the document with the
//! `warehouse` mapping crate → [`receipts::receive`] stores it, resolves the end customer and
//! writes `goods_receipt.received` to the outbox in one transaction → on the bus,
//! [`assets::AssetRegistry`] registers one asset per unit and [`tickets::PickPackTicket`] opens
//! one pick & pack ticket in the helpdesk → daily, [`reminders::AssetReminders`] emits
//! `asset.reminder_due` for warranties and licences ending within the configured windows, which
//! [`tickets::ReminderTicket`] turns into a helpdesk ticket for the account manager.

pub mod assets;
pub mod receipts;
pub mod reminders;
pub mod tickets;
