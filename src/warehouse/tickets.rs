//! Helpdesk tickets for the warehouse (Zammad write-back):
//! - [`PickPackTicket`] (`pick-pack`, on `goods_receipt.received`): one pick & pack ticket per
//!   receipt listing every line with article, quantity and serial numbers, for the technician
//!   who prepares the hardware for the customer.
//! - [`ReminderTicket`] (`asset-reminders`, on `asset.reminder_due`): one ticket per asset,
//!   kind and window for the customer's account manager (or `[warehouse] ticket_customer`).
//!
//! Both read the fact from the store (the receipt, the recorded reminder and its asset; names
//! and contacts from master data); the event only says which. Both go through
//! [`crate::helpdesk::ticket_once`]: the hub's reference is a ticket tag and a
//! row in `helpdesk_tickets`, so a retry or a redelivered event never opens a second ticket.

use super::reminders::ReminderDue;
use crate::bus::{Handler, HandlerError};
use crate::helpdesk::{apply_ticket_done, ticket_once, ticket_once_outside, TicketDone};
use crate::store::Tx;
use async_trait::async_trait;
use canonical::goods::ReceivedGoods;
use canonical::Envelope;
use std::fmt::Write;

pub const PICK_PACK_CONSUMER: &str = "pick-pack";
pub const PICK_PACK_KEYS: &[&str] = &[super::receipts::RECEIVED];
pub const REMINDER_CONSUMER: &str = "asset-reminders";
pub const REMINDER_KEYS: &[&str] = &[super::reminders::REMINDER_DUE];

/// A Zammad tag from any id: letters, digits and `-` only.
pub fn tag_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The pick & pack ticket text for a receipt.
pub fn pick_pack_body(g: &ReceivedGoods, customer_name: &str) -> String {
    let r = &g.receipt;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Wareneingang {} für {} ({})",
        r.receipt_id, customer_name, g.customer_id
    );
    if let Some(s) = &r.supplier.name.clone().or(r.supplier.id.clone()) {
        let _ = writeln!(b, "Lieferant: {s}");
    }
    if let Some(p) = &r.purchase_order_id {
        let _ = writeln!(b, "Bestellung: {p}");
    }
    if let Some(d) = &r.dispatch_notification_id {
        let _ = writeln!(b, "Lieferschein/Lieferavis: {d}");
    }
    if let Some(d) = r.received_on {
        let _ = writeln!(b, "Eingang: {}", d.format("%d.%m.%Y"));
    }
    let _ = writeln!(b, "\nPositionen:");
    for l in &r.lines {
        let _ = writeln!(
            b,
            "{}. {} × {} {}",
            l.line_id,
            l.quantity.normalize(),
            l.article().unwrap_or("-"),
            l.description.as_deref().unwrap_or("")
        );
        let serials: Vec<&str> = l
            .units
            .iter()
            .filter_map(|u| u.serial_number.as_deref())
            .collect();
        if !serials.is_empty() {
            let _ = writeln!(b, "   Seriennummern: {}", serials.join(", "));
        }
        for u in l
            .units
            .iter()
            .filter(|u| u.licence_key.is_some() || u.licence_expiry.is_some())
        {
            let _ = writeln!(
                b,
                "   Lizenz: {}{}",
                u.licence_key.as_deref().unwrap_or("(ohne Schlüssel)"),
                u.licence_expiry
                    .map(|d| format!(", läuft bis {}", d.format("%d.%m.%Y")))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        b,
        "\nBitte kommissionieren, vorbereiten und an den Kunden ausliefern."
    );
    b
}

async fn customer_name(tx: &mut Tx<'_>, id: &str) -> Result<String, HandlerError> {
    Ok(crate::masterdata::customer_in(tx, id)
        .await?
        .map(|c| c.name)
        .unwrap_or_else(|| id.to_string()))
}

/// The reminder as the store knows it: the reminder job must have recorded it
/// (`asset_reminders`), the asset comes from the registry and the customer's name and account
/// manager from master data — not from the event. An unknown reminder opens no ticket.
async fn stored_reminder(
    conn: &mut sqlx::AnyConnection,
    told: ReminderDue,
) -> Result<ReminderDue, HandlerError> {
    let unknown = || {
        HandlerError::Permanent(format!(
            "unknown asset reminder {:?} ({} {}, {} days): not in the store",
            told.asset.id.chars().take(80).collect::<String>(),
            told.kind,
            told.ends_on,
            told.window_days
        ))
    };
    let recorded: Option<i64> = sqlx::query_scalar(
        "SELECT window_days FROM asset_reminders WHERE asset_id = $1 AND kind = $2 AND ends_on = $3 AND window_days = $4",
    )
    .bind(&told.asset.id)
    .bind(&told.kind)
    .bind(told.ends_on.to_string())
    .bind(i64::from(told.window_days))
    .fetch_optional(&mut *conn)
    .await?;
    recorded.ok_or_else(unknown)?;
    let row = sqlx::query(&format!(
        "SELECT {} FROM assets WHERE id = $1",
        super::assets::COLUMNS
    ))
    .bind(&told.asset.id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(unknown)?;
    let asset = super::assets::asset_of(&row)?;
    let customer = crate::masterdata::customer_in(conn, &asset.customer_id).await?;
    Ok(ReminderDue {
        customer_name: customer
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| asset.customer_id.clone()),
        account_manager: customer.and_then(|c| c.account_manager),
        asset,
        ..told
    })
}

/// The `pick-pack` handler.
pub struct PickPackTicket {
    pub client: zammad::Client,
    pub group: String,
    pub ticket_customer: String,
}

impl PickPackTicket {
    fn plan(&self, g: &ReceivedGoods, name: &str) -> (String, zammad::NewTicket) {
        let hub_ref = format!("drehkreuz-we-{}", tag_safe(&g.id));
        let ticket = zammad::NewTicket::with_note(
            format!(
                "Pick & Pack: Wareneingang {} – {}",
                g.receipt.receipt_id, name
            ),
            &self.group,
            &self.ticket_customer,
            format!("{hub_ref},pick-pack"),
            format!("Wareneingang {}", g.receipt.receipt_id),
            pick_pack_body(g, name),
        );
        (hub_ref, ticket)
    }
}

#[async_trait]
impl Handler for PickPackTicket {
    fn calls_out(&self) -> bool {
        true
    }

    /// Reads the customer's name (connection released again), then calls Zammad — no
    /// transaction is open meanwhile.
    async fn prepare(
        &self,
        db: &crate::store::Db,
        ev: &Envelope,
    ) -> Result<crate::bus::Prepared, HandlerError> {
        let (g, name) = {
            let mut conn = db.pool.acquire().await?;
            let g = super::receipts::stored_received(&mut conn, ev).await?;
            let name = crate::masterdata::customer_in(&mut conn, &g.customer_id)
                .await?
                .map(|c| c.name)
                .unwrap_or_else(|| g.customer_id.clone());
            (g, name)
        };
        let (hub_ref, ticket) = self.plan(&g, &name);
        let (ticket_id, _) = ticket_once_outside(&self.client, db, &hub_ref, ticket).await?;
        Ok(Some(std::sync::Arc::new(TicketDone { hub_ref, ticket_id })))
    }

    async fn apply(
        &self,
        ev: &Envelope,
        prepared: crate::bus::Prepared,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        if apply_ticket_done(&prepared, tx).await? {
            return Ok(());
        }
        self.handle(ev, tx).await
    }

    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        // The event names the receipt; the store says what it holds and whose it is.
        let g: ReceivedGoods = super::receipts::stored_received(tx, ev).await?;
        let name = customer_name(tx, &g.customer_id).await?;
        let (hub_ref, ticket) = self.plan(&g, &name);
        ticket_once(&self.client, tx, &hub_ref, ticket).await?;
        Ok(())
    }
}

/// The `asset-reminders` handler.
pub struct ReminderTicket {
    pub client: zammad::Client,
    pub group: String,
    pub ticket_customer: String,
}

impl ReminderTicket {
    /// The reminder the event names, as the store knows it.
    async fn stored(
        conn: &mut sqlx::AnyConnection,
        ev: &Envelope,
    ) -> Result<ReminderDue, HandlerError> {
        let told: ReminderDue = ev
            .decode()
            .map_err(|e| HandlerError::Permanent(format!("asset.reminder_due {}: {e}", ev.id)))?;
        stored_reminder(conn, told).await
    }

    fn plan(&self, r: &ReminderDue) -> (String, zammad::NewTicket) {
        let what = match r.kind.as_str() {
            "licence" => "Lizenz",
            _ => "Garantie",
        };
        let item = r
            .asset
            .serial_number
            .clone()
            .or(r.asset.licence_key.clone())
            .unwrap_or_else(|| r.asset.id.clone());
        let hub_ref = format!(
            "drehkreuz-asset-{}-{}-{}-{}",
            tag_safe(&r.asset.id),
            r.kind,
            r.ends_on.format("%Y%m%d"),
            r.window_days
        );
        let contact = r
            .account_manager
            .as_ref()
            .map(|c| c.email.clone())
            .unwrap_or_else(|| self.ticket_customer.clone());
        let body = format!(
            "{what} endet am {} (in {} Tagen) für {} ({}).\n\nArtikel: {} {}\nSeriennummer/Lizenz: {item}\nWareneingang: {}\n\n\
             Bitte mit dem Kunden Verlängerung oder Ersatz besprechen.\n",
            r.ends_on.format("%d.%m.%Y"),
            r.days_left,
            r.customer_name,
            r.asset.customer_id,
            r.asset.article.as_deref().unwrap_or("-"),
            r.asset.description.as_deref().unwrap_or(""),
            r.asset.receipt,
        );
        let ticket = zammad::NewTicket::with_note(
            format!(
                "{what} endet {}: {} – {item}",
                r.ends_on.format("%d.%m.%Y"),
                r.customer_name
            ),
            &self.group,
            &contact,
            format!("{hub_ref},{}-erinnerung", r.kind),
            format!("{what}serinnerung ({} Tage)", r.window_days),
            body,
        );
        (hub_ref, ticket)
    }
}

#[async_trait]
impl Handler for ReminderTicket {
    fn calls_out(&self) -> bool {
        true
    }

    /// Zammad is called before the transaction opens.
    async fn prepare(
        &self,
        db: &crate::store::Db,
        ev: &Envelope,
    ) -> Result<crate::bus::Prepared, HandlerError> {
        let r = {
            let mut conn = db.pool.acquire().await?;
            Self::stored(&mut conn, ev).await?
        };
        let (hub_ref, ticket) = self.plan(&r);
        let (ticket_id, _) = ticket_once_outside(&self.client, db, &hub_ref, ticket).await?;
        Ok(Some(std::sync::Arc::new(TicketDone { hub_ref, ticket_id })))
    }

    async fn apply(
        &self,
        ev: &Envelope,
        prepared: crate::bus::Prepared,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        if apply_ticket_done(&prepared, tx).await? {
            return Ok(());
        }
        self.handle(ev, tx).await
    }

    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let r = Self::stored(tx, ev).await?;
        let (hub_ref, ticket) = self.plan(&r);
        ticket_once(&self.client, tx, &hub_ref, ticket).await?;
        Ok(())
    }
}
