//! Helpdesk write-back (Zammad): the `helpdesk-notify` consumer turns
//! `contingent.threshold_crossed` into an e-mail article to the customer's notification contacts,
//! on one notice ticket per contract and period. The ticket is found again by the hub's
//! reference (stored in `helpdesk_tickets`, and as a ticket tag in Zammad, searched before
//! creating), so a retry never creates a second ticket; the inbox makes each notice one
//! article. Zammad being down or busy (429, 5xx) is a transient error: the message comes back
//! with backoff.

use crate::billing::ledger::ThresholdCrossed;
use crate::bus::{Handler, HandlerError};
use crate::store::{now_ms, Tx};
use async_trait::async_trait;
use canonical::Envelope;

/// The consumer's queue and binding.
pub const CONSUMER: &str = "helpdesk-notify";
pub const ROUTING_KEYS: &[&str] = &["contingent.threshold_crossed"];

/// The `helpdesk-notify` handler.
pub struct HelpdeskNotify {
    pub client: zammad::Client,
    pub group: String,
}

fn fail(e: zammad::ZammadError) -> HandlerError {
    if e.is_transient() {
        HandlerError::Transient(e.to_string())
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

#[async_trait]
impl Handler for HelpdeskNotify {
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let n: ThresholdCrossed = ev.decode().map_err(|e| {
            HandlerError::Permanent(format!("contingent.threshold_crossed {}: {e}", ev.id))
        })?;
        let Some(first) = n.notify.first() else {
            return Err(HandlerError::Permanent(format!(
                "customer {} has no notification contact for contingent notices",
                n.customer_id
            )));
        };
        let hub_ref = format!("drehkreuz-{}-{}", n.contract_id, n.period);
        let known: Option<i64> =
            sqlx::query_scalar("SELECT ticket_id FROM helpdesk_tickets WHERE hub_ref = $1")
                .bind(&hub_ref)
                .fetch_optional(&mut **tx)
                .await?;
        let ticket_id = match known {
            Some(id) => id as u64,
            None => {
                let found = self
                    .client
                    .search_tickets(&format!("tags:{hub_ref}"))
                    .await
                    .map_err(fail)?;
                let id = match found.first() {
                    Some(t) => t.id,
                    None => {
                        let t = zammad::NewTicket {
                            title: format!(
                                "Kontingent {} – {} ({})",
                                n.contract_id, n.customer_name, n.period
                            ),
                            group: self.group.clone(),
                            customer_id: format!("guess:{}", first.email),
                            state: "open".into(),
                            tags: format!("{hub_ref},kontingent"),
                            article: zammad::NewArticle {
                                ticket_id: None,
                                subject: "Kontingentüberwachung".into(),
                                body: format!(
                                    "Überwachung des Kontingents {} für {}.",
                                    n.contract_id, n.period
                                ),
                                content_type: "text/plain".into(),
                                kind: "note".into(),
                                internal: true,
                                to: None,
                                sender: None,
                            },
                        };
                        self.client.create_ticket(&t).await.map_err(fail)?.id
                    }
                };
                sqlx::query("INSERT INTO helpdesk_tickets (hub_ref, ticket_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(&hub_ref)
                    .bind(id as i64)
                    .bind(now_ms())
                    .execute(&mut **tx)
                    .await?;
                id
            }
        };
        let to = n
            .notify
            .iter()
            .map(|c| c.email.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let article = zammad::NewArticle {
            ticket_id: Some(ticket_id),
            subject: format!("Ihr Kontingent {}: {} % erreicht", n.contract_id, n.percent),
            body: format!(
                "Guten Tag {},\n\nIhr Support-Kontingent {} ist im Zeitraum {} zu {} % verbraucht ({} von {} Minuten, Stand {}).\n\
                 Bitte sprechen Sie uns an, wenn Sie das Kontingent aufstocken möchten.\n",
                first.name,
                n.contract_id,
                n.period,
                n.percent,
                n.consumed,
                n.available,
                n.at.with_timezone(&chrono_tz::Europe::Berlin).format("%d.%m.%Y %H:%M")
            ),
            content_type: "text/plain".into(),
            kind: "email".into(),
            internal: false,
            to: Some(to),
            sender: Some("Agent".into()),
        };
        self.client.add_article(&article).await.map_err(fail)?;
        Ok(())
    }
}

/// The `zammad-sync` consumer: on `zammad.ticket_changed` it fetches the ticket and its time
/// accountings from Zammad, maps them (`mappings/zammad`) and writes `ticket.updated` and
/// `time_entry.updated` events to the outbox for the intake. A time accounting that cannot be
/// mapped (unknown type, fractional minutes) goes on the review list with the reason; the rest
/// of the ticket flows on.
pub struct ZammadSync {
    pub client: zammad::Client,
    pub source: String,
    pub mapping: zammad_mapping::MappingSettings,
}

pub const SYNC_CONSUMER: &str = "zammad-sync";
pub const SYNC_ROUTING_KEYS: &[&str] = &["zammad.ticket_changed"];

#[async_trait]
impl Handler for ZammadSync {
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let changed: crate::http::webhooks::TicketChanged = ev.decode().map_err(|e| {
            HandlerError::Permanent(format!("zammad.ticket_changed {}: {e}", ev.id))
        })?;
        let raw_ticket = self
            .client
            .get_ticket(&changed.ticket_id)
            .await
            .map_err(fail)?;
        let ticket = zammad_mapping::ticket(&raw_ticket, &self.source, &self.mapping)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let mut events = vec![crate::intake::ticket_event(&ticket, false)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?];
        for ta in self
            .client
            .ticket_time_accountings(&changed.ticket_id)
            .await
            .map_err(fail)?
        {
            match zammad_mapping::time_accounting(&ta, &self.source, &self.mapping) {
                Ok(entry) => events.push(
                    crate::intake::time_entry_event(&entry, false)
                        .map_err(|e| HandlerError::Permanent(e.to_string()))?,
                ),
                Err(e) => {
                    crate::store::review::add(
                        tx,
                        "unmapped_time_accounting",
                        &self.source,
                        &format!(
                            "time_accounting:{}",
                            ta.get("id").cloned().unwrap_or_default()
                        ),
                        &e.to_string(),
                        &ta,
                    )
                    .await?;
                }
            }
        }
        crate::store::outbox::enqueue_many(tx, &events).await?;
        Ok(())
    }
}
