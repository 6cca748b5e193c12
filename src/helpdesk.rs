//! Helpdesk write-back (Zammad): the `helpdesk-notify` consumer turns
//! `contingent.threshold_crossed` and `budget.threshold_crossed` (per level) into an e-mail
//! article to the customer's notification contacts (the notice must be one the store recorded;
//! recipients and names come from master data), on one notice ticket per contract and period.
//! The ticket is found again by the hub's
//! reference (stored in `helpdesk_tickets`, and as a ticket tag in Zammad, searched before
//! creating), so a retry never creates a second ticket; the inbox makes each notice one
//! article. Zammad being down or busy (429, 5xx) is a transient error: the message comes back
//! with backoff.

use crate::billing::ledger::{BudgetThresholdCrossed, ThresholdCrossed};
use crate::bus::{Handler, HandlerError};
use crate::store::{now_ms, Tx};
use async_trait::async_trait;
use canonical::Envelope;

/// The consumer's queue and binding.
pub const CONSUMER: &str = "helpdesk-notify";
pub const ROUTING_KEYS: &[&str] = &["contingent.threshold_crossed", "budget.threshold_crossed"];

/// The `helpdesk-notify` handler.
pub struct HelpdeskNotify {
    pub client: zammad::Client,
    pub group: String,
}

/// Opens the ticket for `hub_ref` unless the hub opened it before: known from
/// `helpdesk_tickets`, or found in Zammad by its tag (a retry after Zammad created it but before
/// our transaction committed). `ticket.tags` must contain `hub_ref`. Returns the ticket id and
/// whether it was created now.
pub async fn ticket_once(
    client: &zammad::Client,
    tx: &mut Tx<'_>,
    hub_ref: &str,
    ticket: zammad::NewTicket,
) -> Result<(u64, bool), HandlerError> {
    let known: Option<i64> =
        sqlx::query_scalar("SELECT ticket_id FROM helpdesk_tickets WHERE hub_ref = $1")
            .bind(hub_ref)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(id) = known {
        return Ok((id as u64, false));
    }
    let found = client
        .search_tickets(&format!("tags:{hub_ref}"))
        .await
        .map_err(fail)?;
    let (id, created) = match found.first() {
        Some(t) => (t.id, false),
        None => (client.create_ticket(&ticket).await.map_err(fail)?.id, true),
    };
    sqlx::query(
        "INSERT INTO helpdesk_tickets (hub_ref, ticket_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(hub_ref)
    .bind(id as i64)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok((id, created))
}

/// Phase-1 form of [`ticket_once`] for [`Handler::prepare`]: the same lookup (`helpdesk_tickets`
/// through the pool, then Zammad by tag) and creation, with no transaction open while Zammad
/// is called. Record the result in phase 2 with [`record_ticket`].
pub async fn ticket_once_outside(
    client: &zammad::Client,
    db: &crate::store::Db,
    hub_ref: &str,
    ticket: zammad::NewTicket,
) -> Result<(u64, bool), HandlerError> {
    let known: Option<i64> =
        sqlx::query_scalar("SELECT ticket_id FROM helpdesk_tickets WHERE hub_ref = $1")
            .bind(hub_ref)
            .fetch_optional(&db.pool)
            .await?;
    if let Some(id) = known {
        return Ok((id as u64, false));
    }
    let found = client
        .search_tickets(&format!("tags:{hub_ref}"))
        .await
        .map_err(fail)?;
    Ok(match found.first() {
        Some(t) => (t.id, false),
        None => (client.create_ticket(&ticket).await.map_err(fail)?.id, true),
    })
}

/// Phase 2 of [`ticket_once_outside`]: remembers the hub's ticket.
pub async fn record_ticket(tx: &mut Tx<'_>, hub_ref: &str, id: u64) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO helpdesk_tickets (hub_ref, ticket_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(hub_ref)
    .bind(id as i64)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a ticket-writing handler did in phase 1: the hub's reference and Zammad's ticket id.
pub struct TicketDone {
    pub hub_ref: String,
    pub ticket_id: u64,
}

/// Phase 2 of a ticket-writing handler: record the ticket from phase 1.
pub async fn apply_ticket_done(
    prepared: &crate::bus::Prepared,
    tx: &mut Tx<'_>,
) -> Result<bool, HandlerError> {
    match prepared
        .as_ref()
        .and_then(|p| p.downcast_ref::<TicketDone>())
    {
        Some(d) => {
            record_ticket(tx, &d.hub_ref, d.ticket_id).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A Zammad error as a handler error: transient (retry) or permanent (dead letter).
pub fn fail(e: zammad::ZammadError) -> HandlerError {
    if e.is_transient() {
        HandlerError::Transient(e.to_string())
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

/// What one notice writes to Zammad: the contract's notice ticket (found or opened once) and
/// one e-mail article on it (its `ticket_id` filled in once the ticket is known).
struct NoticePlan {
    hub_ref: String,
    ticket: zammad::NewTicket,
    article: zammad::NewArticle,
}

#[async_trait]
impl Handler for HelpdeskNotify {
    fn calls_out(&self) -> bool {
        true
    }

    /// Reads the stored notice on a pooled connection (released again), then finds or opens
    /// the notice ticket and writes the article — no transaction is open meanwhile.
    async fn prepare(
        &self,
        db: &crate::store::Db,
        ev: &Envelope,
    ) -> Result<crate::bus::Prepared, HandlerError> {
        let plan = {
            let mut conn = db.pool.acquire().await?;
            self.plan(&mut conn, ev).await?
        };
        let (ticket_id, _) =
            ticket_once_outside(&self.client, db, &plan.hub_ref, plan.ticket).await?;
        let article = zammad::NewArticle {
            ticket_id: Some(ticket_id),
            ..plan.article
        };
        self.client.add_article(&article).await.map_err(fail)?;
        Ok(Some(std::sync::Arc::new(TicketDone {
            hub_ref: plan.hub_ref,
            ticket_id,
        })))
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
        let plan = self.plan(tx, ev).await?;
        let ticket_id = ticket_once(&self.client, tx, &plan.hub_ref, plan.ticket)
            .await?
            .0;
        let article = zammad::NewArticle {
            ticket_id: Some(ticket_id),
            ..plan.article
        };
        self.client.add_article(&article).await.map_err(fail)?;
        Ok(())
    }
}

impl HelpdeskNotify {
    /// The notice the event names, as the store knows it, turned into ticket and article.
    async fn plan(
        &self,
        conn: &mut sqlx::AnyConnection,
        ev: &Envelope,
    ) -> Result<NoticePlan, HandlerError> {
        if ev.event_type == "budget.threshold_crossed" {
            let told: BudgetThresholdCrossed = ev.decode().map_err(|e| {
                HandlerError::Permanent(format!("budget.threshold_crossed {}: {e}", ev.id))
            })?;
            return self.budget_plan(stored_budget_notice(conn, told).await?);
        }
        let told: ThresholdCrossed = ev.decode().map_err(|e| {
            HandlerError::Permanent(format!("contingent.threshold_crossed {}: {e}", ev.id))
        })?;
        self.contingent_plan(stored_notice(conn, told).await?)
    }

    /// A contingent reached a threshold.
    fn contingent_plan(&self, n: ThresholdCrossed) -> Result<NoticePlan, HandlerError> {
        let Some(first) = n.notify.first() else {
            return Err(HandlerError::Permanent(format!(
                "customer {} has no notification contact for contingent notices",
                n.customer_id
            )));
        };
        let hub_ref = format!("drehkreuz-{}-{}", n.contract_id, n.period);
        let ticket = zammad::NewTicket::with_note(
            format!(
                "Kontingent {} – {} ({})",
                n.contract_id, n.customer_name, n.period
            ),
            &self.group,
            &first.email,
            format!("{hub_ref},kontingent"),
            "Kontingentüberwachung".into(),
            format!(
                "Überwachung des Kontingents {} für {}.",
                n.contract_id, n.period
            ),
        );
        let article = notice_article(
            &n.notify,
            format!("Ihr Kontingent {}: {} % erreicht", n.contract_id, n.percent),
            format!(
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
        );
        Ok(NoticePlan {
            hub_ref,
            ticket,
            article,
        })
    }

    /// A budget level reached a threshold.
    fn budget_plan(&self, n: BudgetThresholdCrossed) -> Result<NoticePlan, HandlerError> {
        let Some(first) = n.notify.first() else {
            return Err(HandlerError::Permanent(format!(
                "customer {} has no notification contact for budget notices",
                n.customer_id
            )));
        };
        let hub_ref = format!("drehkreuz-{}-{}", n.contract_id, n.period);
        let ticket = zammad::NewTicket::with_note(
            format!(
                "Budget {} – {} ({})",
                n.contract_id, n.customer_name, n.period
            ),
            &self.group,
            &first.email,
            format!("{hub_ref},budget"),
            "Budgetüberwachung".into(),
            format!(
                "Überwachung des Budgets {} für {}.",
                n.contract_id, n.period
            ),
        );
        let article = notice_article(
            &n.notify,
            format!(
                "Ihr Budget {} ({} Level): {} % erreicht",
                n.contract_id, n.level, n.percent
            ),
            format!(
                "Guten Tag {},\n\nIhr Budget {} für den {} Level ist im Zeitraum {} zu {} % ausgeschöpft ({} von {} Minuten, Stand {}).\n\
                 Arbeiten über das Budget hinaus werden erst nach Ihrer Freigabe berechnet. Bitte sprechen Sie uns an, wenn Sie das Budget erhöhen möchten.\n",
                first.name,
                n.contract_id,
                n.level,
                n.period,
                n.percent,
                n.used_minutes,
                n.cap_minutes,
                n.at.with_timezone(&chrono_tz::Europe::Berlin).format("%d.%m.%Y %H:%M")
            ),
        );
        Ok(NoticePlan {
            hub_ref,
            ticket,
            article,
        })
    }
}

/// An e-mail article to every notification contact (ticket id set once the ticket is known).
fn notice_article(
    notify: &[canonical::customer::Contact],
    subject: String,
    body: String,
) -> zammad::NewArticle {
    let to = notify
        .iter()
        .map(|c| c.email.clone())
        .collect::<Vec<_>>()
        .join(", ");
    zammad::NewArticle {
        ticket_id: None,
        subject,
        body,
        content_type: "text/plain".into(),
        kind: "email".into(),
        internal: false,
        to: Some(to),
        sender: Some("Agent".into()),
    }
}

/// The customer from master data, if the contract is theirs (`None`: not the store's fact).
async fn contract_customer(
    conn: &mut sqlx::AnyConnection,
    customer_id: &str,
    contract_id: &str,
) -> Result<Option<canonical::customer::Customer>, HandlerError> {
    let contracts = crate::masterdata::contracts_in(conn, Some(customer_id)).await?;
    if !contracts.iter().any(|(c, _)| c.id == contract_id) {
        return Ok(None);
    }
    Ok(crate::masterdata::customer_in(conn, customer_id).await?)
}

/// The notice as the store knows it: the event names the contract, period and threshold; the
/// store must have recorded that notice, the contract must be the customer's, and the customer's
/// name and notification contacts come from master data, not from the event. A notice the store
/// does not know (e.g. forged onto the bus) is a permanent error: nobody is written to.
async fn stored_notice(
    conn: &mut sqlx::AnyConnection,
    told: ThresholdCrossed,
) -> Result<ThresholdCrossed, HandlerError> {
    let recorded: Option<String> = sqlx::query_scalar(
        "SELECT entry_id FROM threshold_notices WHERE contract_id = $1 AND period = $2 AND percent = $3",
    )
    .bind(&told.contract_id)
    .bind(told.period.to_string())
    .bind(i64::from(told.percent))
    .fetch_optional(&mut *conn)
    .await?;
    let unknown = || {
        HandlerError::Permanent(format!(
            "unknown contingent notice {}/{}/{} %: not in the store, nobody notified",
            told.contract_id, told.period, told.percent
        ))
    };
    recorded.ok_or_else(unknown)?;
    let customer = contract_customer(conn, &told.customer_id, &told.contract_id)
        .await?
        .ok_or_else(unknown)?;
    Ok(ThresholdCrossed {
        customer_name: customer.name,
        notify: customer.notification_contacts,
        ..told
    })
}

/// [`stored_notice`] for a budget notice: recorded in `budget_notices` (contract, period,
/// level, percent), the contract the customer's, name and contacts from master data.
async fn stored_budget_notice(
    conn: &mut sqlx::AnyConnection,
    told: BudgetThresholdCrossed,
) -> Result<BudgetThresholdCrossed, HandlerError> {
    let recorded: Option<String> = sqlx::query_scalar(
        "SELECT entry_id FROM budget_notices WHERE contract_id = $1 AND period = $2 AND level = $3 AND percent = $4",
    )
    .bind(&told.contract_id)
    .bind(told.period.to_string())
    .bind(&told.level)
    .bind(i64::from(told.percent))
    .fetch_optional(&mut *conn)
    .await?;
    let unknown = || {
        HandlerError::Permanent(format!(
            "unknown budget notice {}/{}/{}/{} %: not in the store, nobody notified",
            told.contract_id, told.period, told.level, told.percent
        ))
    };
    recorded.ok_or_else(unknown)?;
    let customer = contract_customer(conn, &told.customer_id, &told.contract_id)
        .await?
        .ok_or_else(unknown)?;
    Ok(BudgetThresholdCrossed {
        customer_name: customer.name,
        notify: customer.notification_contacts,
        ..told
    })
}

/// Why a Zammad ticket could not be turned into a canonical ticket.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error(transparent)]
    Zammad(#[from] zammad::ZammadError),
    #[error(transparent)]
    Mapping(#[from] zammad_mapping::MappingError),
}

/// Maps an (expanded) Zammad ticket; with `customer_number_attribute` configured, the
/// organization is fetched and its attribute names the customer.
pub async fn map_ticket(
    client: &zammad::Client,
    raw: &serde_json::Value,
    source: &str,
    mapping: &zammad_mapping::MappingSettings,
) -> Result<canonical::work::Ticket, TicketError> {
    let mut ticket = zammad_mapping::ticket(raw, source, mapping)?;
    if let (Some(_), Some(org)) = (
        &mapping.customer_number_attribute,
        ticket.organization_id.clone(),
    ) {
        let o = client
            .get_organization(org.parse().map_err(zammad::ZammadError::from)?)
            .await?;
        ticket.customer_id = zammad_mapping::organization_customer(&o, mapping);
    }
    Ok(ticket)
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

/// What `zammad-sync` fetched from Zammad before its transaction opened.
struct Fetched {
    ticket: canonical::work::Ticket,
    accountings: Vec<serde_json::Value>,
}

impl ZammadSync {
    /// Phase 1: the ticket (and its organization) and its time accountings, from Zammad.
    async fn fetch(&self, ev: &Envelope) -> Result<Fetched, HandlerError> {
        let changed = match crate::ingress::check(ev) {
            Ok(crate::ingress::IngressRecord::TicketChanged(c)) => c,
            Ok(_) => {
                return Err(HandlerError::Permanent(format!(
                    "{} {}: not a zammad.ticket_changed signal",
                    ev.event_type, ev.id
                )))
            }
            Err(e) => {
                return Err(HandlerError::Permanent(format!(
                    "zammad.ticket_changed {}: {e}",
                    ev.id
                )))
            }
        };
        let raw_ticket = self
            .client
            .get_ticket(changed.ticket_id)
            .await
            .map_err(fail)?;
        let ticket = match map_ticket(&self.client, &raw_ticket, &self.source, &self.mapping).await
        {
            Ok(t) => t,
            Err(TicketError::Zammad(e)) => return Err(fail(e)),
            Err(TicketError::Mapping(e)) => return Err(HandlerError::Permanent(e.to_string())),
        };
        let accountings = self
            .client
            .ticket_time_accountings(changed.ticket_id)
            .await
            .map_err(fail)?;
        Ok(Fetched {
            ticket,
            accountings,
        })
    }

    /// Phase 2: events to the outbox, unmappable accountings to the review list.
    async fn write(&self, f: &Fetched, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let mut events = vec![crate::intake::ticket_event(&f.ticket, false)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?];
        for ta in &f.accountings {
            match zammad_mapping::time_accounting(ta, &self.source, &self.mapping) {
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
                        ta,
                    )
                    .await?;
                }
            }
        }
        crate::store::outbox::enqueue_many(tx, &events).await?;
        Ok(())
    }
}

#[async_trait]
impl Handler for ZammadSync {
    fn calls_out(&self) -> bool {
        true
    }

    /// Every Zammad call happens here, before the transaction (and SQLite's write lock).
    async fn prepare(
        &self,
        _db: &crate::store::Db,
        ev: &Envelope,
    ) -> Result<crate::bus::Prepared, HandlerError> {
        Ok(Some(std::sync::Arc::new(self.fetch(ev).await?)))
    }

    async fn apply(
        &self,
        ev: &Envelope,
        prepared: crate::bus::Prepared,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        match prepared.as_ref().and_then(|p| p.downcast_ref::<Fetched>()) {
            Some(f) => self.write(f, tx).await,
            None => self.handle(ev, tx).await,
        }
    }

    /// Both phases at once (for callers outside the bus); the bus uses prepare/apply.
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let f = self.fetch(ev).await?;
        self.write(&f, tx).await
    }
}

/// The reconciliation job (`[schedule.zammad_reconcile]`): webhooks miss direct API bookings
/// and edits or deletions of time accountings, so this pages through Zammad's global
/// time-accounting list (oldest id first) and
/// - publishes every accounting changed since the persisted cursor (`updated_at`, with a
///   five-minute overlap; versioning makes repeats harmless), fetching tickets the hub does not
///   know yet,
/// - publishes `time_entry.deleted` for entries of the open periods (this and last month) that
///   Zammad no longer lists,
/// - puts accountings it cannot map on the review list.
///
/// A change to an entry that is already billed is not applied by the intake but flagged for
/// review there.
pub struct ZammadReconcile {
    pub db: crate::store::Db,
    pub client: zammad::Client,
    pub source: String,
    pub mapping: zammad_mapping::MappingSettings,
    pub per_page: u32,
}

#[async_trait]
impl crate::schedule::Job for ZammadReconcile {
    async fn run(&self, due: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        let cursor_name = format!("{}:time_accountings.updated_at", self.source);
        let cursor = read_cursor(&self.db, &cursor_name).await?;
        let since = cursor - 5 * 60 * 1000;
        let mut newest = cursor;
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut page = 1;
        loop {
            let items = self
                .client
                .time_accountings_page(page, self.per_page)
                .await?;
            let n = items.len();
            let mut tx = self.db.begin().await?;
            let mut events = Vec::new();
            for ta in items {
                if let Some(id) = ta
                    .get("id")
                    .map(|i| i.to_string().trim_matches('"').to_string())
                {
                    seen.insert(id);
                }
                match zammad_mapping::time_accounting(&ta, &self.source, &self.mapping) {
                    Ok(e) if e.version > since => {
                        newest = newest.max(e.version);
                        if crate::store::work::ticket_customer(&mut tx, &self.source, &e.ticket_id)
                            .await?
                            .is_none()
                        {
                            let t = self
                                .client
                                .get_ticket(e.ticket_id.parse::<zammad::ZammadId>()?)
                                .await?;
                            let t = zammad_mapping::ticket(&t, &self.source, &self.mapping)?;
                            events.push(crate::intake::ticket_event(&t, false)?);
                        }
                        events.push(crate::intake::time_entry_event(&e, false)?);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let rid = format!(
                            "time_accounting:{}",
                            ta.get("id").cloned().unwrap_or_default()
                        );
                        crate::store::review::add(
                            &mut tx,
                            "unmapped_time_accounting",
                            &self.source,
                            &rid,
                            &err.to_string(),
                            &ta,
                        )
                        .await?;
                    }
                }
            }
            crate::store::outbox::enqueue_many(&mut tx, &events).await?;
            tx.commit().await?;
            if n < self.per_page as usize {
                break;
            }
            page += 1;
        }
        let tickets = self.reconcile_tickets().await?;
        // Deletions: open periods only (older periods are settled; changes there go through review).
        let this = canonical::work::Period::of(due);
        let mut tx = self.db.begin().await?;
        let stored: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, version FROM time_entries WHERE source = $1 AND deleted = 0 AND (period = $2 OR period = $3)",
        )
        .bind(&self.source)
        .bind(this.to_string())
        .bind(this.previous().to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut deletions = Vec::new();
        for (id, version) in stored.into_iter().filter(|(id, _)| !seen.contains(id)) {
            let d = crate::intake::Deletion {
                source: self.source.clone(),
                id: id.clone(),
                version: version + 1,
            };
            deletions.push(Envelope::new(
                &format!("/{}", self.source),
                "time_entry.deleted",
                &id,
                &(version + 1).to_string(),
                due,
                &d,
            )?);
        }
        crate::store::outbox::enqueue_many(&mut tx, &deletions).await?;
        write_cursor(&mut tx, &cursor_name, newest).await?;
        tx.commit().await?;
        tracing::info!(source = %self.source, deletions = deletions.len(), tickets, cursor = newest, "Zammad reconciliation done.");
        Ok(())
    }
}

/// A persisted reconciliation cursor (ms since the epoch; 0 when none yet).
async fn read_cursor(db: &crate::store::Db, name: &str) -> Result<i64, sqlx::Error> {
    Ok(
        sqlx::query_scalar::<_, String>("SELECT value FROM sync_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.pool)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Stores a reconciliation cursor in the caller's transaction.
async fn write_cursor(tx: &mut Tx<'_>, name: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_cursors (name, value, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(value.to_string())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl ZammadReconcile {
    /// Tickets changed since the ticket cursor (classification, organization, title: changes
    /// that touch no time accounting and so appear in no accounting list), by condition search
    /// on `updated_at`, oldest first, with a five-minute overlap. Returns how many were
    /// published; unmappable tickets go on the review list.
    async fn reconcile_tickets(&self) -> anyhow::Result<usize> {
        let cursor_name = format!("{}:tickets.updated_at", self.source);
        let cursor = read_cursor(&self.db, &cursor_name).await?;
        let since = crate::store::from_ms((cursor - 5 * 60 * 1000).max(0));
        let mut newest = cursor;
        let mut published = 0;
        let mut page = 1;
        loop {
            let items = self
                .client
                .tickets_updated_since(since, page, self.per_page)
                .await?;
            let n = items.len();
            let mut events = Vec::new();
            let mut review = Vec::new();
            for raw in &items {
                match map_ticket(&self.client, raw, &self.source, &self.mapping).await {
                    Ok(t) => {
                        newest = newest.max(t.version);
                        events.push(crate::intake::ticket_event(&t, false)?);
                    }
                    Err(TicketError::Zammad(e)) => return Err(e.into()),
                    Err(TicketError::Mapping(e)) => review.push((raw, e.to_string())),
                }
            }
            let mut tx = self.db.begin().await?;
            crate::store::outbox::enqueue_many(&mut tx, &events).await?;
            for (raw, reason) in review {
                let rid = format!("ticket:{}", raw.get("id").cloned().unwrap_or_default());
                crate::store::review::add(
                    &mut tx,
                    "unmapped_ticket",
                    &self.source,
                    &rid,
                    &reason,
                    raw,
                )
                .await?;
            }
            tx.commit().await?;
            published += events.len();
            if n < self.per_page as usize {
                break;
            }
            page += 1;
        }
        let mut tx = self.db.begin().await?;
        write_cursor(&mut tx, &cursor_name, newest).await?;
        tx.commit().await?;
        Ok(published)
    }
}
