//! `drehkreuz demo --out DIR`: the newcomer's first command.
//!
//! Starts a fresh hub on embedded defaults (SQLite in `DIR/hub-data`, the embedded bus, HTTP on
//! a free loopback port), registers three sample customers, and pushes a realistic month of
//! helpdesk work (October 2026: tickets and time entries of three customers, on-site visits,
//! goodwill work, a late correction, an entry without a reason for being free, an unknown
//! organization) through the real HTTP ingress with an intake token. The bus delivers it to the
//! consumers; the demo waits until everything is applied and writes what the hub produced:
//! `time-entries.json`, `work-by-customer.csv`, `review.json`, `dead-letters.json`, then runs
//! the monthly billing (preview → approve → finalize) and writes `invoices/*.json` and
//! `service-reports/*.{json,html}`, and `summary.txt`. Each capability of the hub extends this
//! demo:
//! - the helpdesk is a simulated Zammad ([`zammad`]) on loopback: a signed webhook makes the hub
//!   fetch a ticket and its time accountings (billed with the month), and the hub's write-back
//!   (contingent notices, pick & pack and reminder tickets) lands there → `helpdesk/tickets.json`;
//! - the warehouse posts two goods receipts (the hub's JSON with an HMAC signature, and the
//!   openTRANS example `docs/examples/goods-receipt-opentrans.xml` for a registered purchase
//!   order) → `assets.json`, one pick & pack ticket each, and a licence reminder.

pub mod zammad;

use crate::access::{create_token, Role};
use crate::config::Config;
use crate::runtime::Hub;
use crate::store::{deadletter, outbox, review, work};
use canonical::work::{Ticket, TimeEntry};
use canonical::Envelope;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SOURCE: &str = "helpdesk-sample";
/// The sample entry that is free without a reason: the door refuses it.
const FREE_WITHOUT_REASON: &str = "5901";

/// The webhook secret shared with the simulated Zammad, and the warehouse's HMAC secret.
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
const LAGER_SECRET: &str = "demo-lager-secret";
/// The openTRANS dispatch notification the demo's warehouse posts.
pub const OPENTRANS_RECEIPT: &str = include_str!("../../docs/examples/goods-receipt-opentrans.xml");

/// What the simulated Zammad holds at the start: the organization of C-1001 and one ticket
/// with three time accountings booked in Zammad (October 2026): 90 min 2nd level (type 2),
/// 15 min without a type (1st level), and 10 min of a type the hub has no mapping for.
pub fn zammad_data() -> zammad::Data {
    let mut d = zammad::Data::default();
    d.organizations.insert(
        11,
        serde_json::json!({"id": 11, "name": "Müller & Söhne Steuerberatung GmbH", "active": true,
            "member_ids": [], "created_at": "2023-07-26T08:44:48.617Z", "updated_at": "2026-10-01T08:00:00.000Z"}),
    );
    d.tickets.insert(
        501,
        serde_json::json!({"id": 501, "number": "31501", "title": "Server-Update DATEV-Umgebung",
            "group": "Service Desk", "state": "closed", "organization_id": 11, "organization": "Müller & Söhne Steuerberatung GmbH",
            "customer_id": 7, "created_at": "2026-10-20T07:55:00.000Z", "updated_at": "2026-10-20T10:10:00.000Z",
            "time_unit": "115.0"}),
    );
    for (id, unit, type_id, at) in [
        (
            9001,
            "90.0",
            serde_json::json!(2),
            "2026-10-20T09:30:00.000Z",
        ),
        (
            9002,
            "15.0",
            serde_json::Value::Null,
            "2026-10-20T10:05:00.000Z",
        ),
        (
            9003,
            "10.0",
            serde_json::json!(99),
            "2026-10-20T10:10:00.000Z",
        ),
    ] {
        d.accountings.insert(
            id,
            serde_json::json!({"id": id, "ticket_id": 501, "ticket_article_id": null, "time_unit": unit,
                "type_id": type_id, "created_by_id": 3, "created_at": at, "updated_at": at}),
        );
    }
    d
}

/// The hub-JSON goods receipt of the demo: a notebook with its warranty and a licence that
/// expires in 30 days (so the reminder job has something to do today).
pub fn json_receipt(today: chrono::NaiveDate) -> serde_json::Value {
    serde_json::json!({
        "event_type": "goods_receipt.completed",
        "warehouse_id": "LAGER-HB",
        "receipt": {
            "receipt_id": "WE-2026-0815",
            "received_on": today.to_string(),
            "supplier": {"id": "10000735", "name": "IT-Distribution GmbH"},
            "purchase_order_id": "PO-2026-0999",
            "end_customer": {"customer_id": "C-1001"},
            "lines": [
                {"line_id": "1", "supplier_pid": "20X60009GE", "manufacturer": "Lenovo", "gtin": "0195908483106",
                 "description": "Lenovo ThinkPad T14 Gen 3", "quantity": 1, "unit": "C62",
                 "units": [{"serial_number": "PF3XK2M1", "warranty_end": (today + chrono::Duration::days(3 * 365)).to_string()}]},
                {"line_id": "2", "supplier_pid": "MS-O365-BP-1Y", "description": "Microsoft 365 Business Premium (12 Monate)",
                 "quantity": 1, "unit": "C62",
                 "units": [{"licence_key": "M365-VERTRAG-4711", "licence_expiry": (today + chrono::Duration::days(30)).to_string()}]}
            ]
        }
    })
}

/// The master data of the demo: the full example from `docs/master-data.md`.
pub const MASTER_DATA: &str = include_str!("../../docs/examples/master-data.toml");

struct SampleCustomer {
    id: &'static str,
    name: &'static str,
    org: &'static str,
    tickets: usize,
}

const CUSTOMERS: &[SampleCustomer] = &[
    SampleCustomer {
        id: "C-1001",
        name: "Müller & Söhne Steuerberatung GmbH",
        org: "11",
        tickets: 9,
    },
    SampleCustomer {
        id: "C-1002",
        name: "Bäckerei Schmidt KG",
        org: "12",
        tickets: 6,
    },
    SampleCustomer {
        id: "C-1003",
        name: "Praxis Dr. Weber",
        org: "13",
        tickets: 7,
    },
    SampleCustomer {
        id: "C-1004",
        name: "Autohaus Krüger GmbH & Co. KG",
        org: "14",
        tickets: 8,
    },
    SampleCustomer {
        id: "C-1005",
        name: "Kanzlei Hoffmann (Rechenzentrum-Mietvertrag)",
        org: "15",
        tickets: 4,
    },
];

const TITLES: &[&str] = &[
    "Drucker im Empfang druckt nicht",
    "Outlook-Postfach voll",
    "Neuer Arbeitsplatz für Auszubildende",
    "VPN-Verbindung bricht ab",
    "DATEV-Update einspielen",
    "Backup-Warnung NAS",
    "Kassensystem startet langsam",
    "Passwort-Reset Geschäftsführung",
    "Firewall-Regel für Praxissoftware",
    "Laptop tauschen (Garantie)",
];

/// A small deterministic generator, so every demo run produces the same month.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() as usize) % items.len()]
    }
}

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, 10, day, hour, minute, 0)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The sample month: tickets and time entries (plus deliberate problem cases).
pub fn sample_month() -> (Vec<Ticket>, Vec<TimeEntry>) {
    let mut rng = Lcg(20261001);
    let mut tickets = Vec::new();
    let mut entries = Vec::new();
    let mut entry_id = 5000;
    let mut ticket_no = 81000;
    for c in CUSTOMERS {
        for _ in 0..c.tickets {
            ticket_no += 1;
            let day = 1 + (rng.next() % 30) as u32;
            let level = rng
                .pick(&["1st", "1st", "1st", "2nd", "2nd", "3rd"])
                .to_string();
            tickets.push(Ticket {
                source: SOURCE.into(),
                id: ticket_no.to_string(),
                version: 1,
                customer_id: None,
                organization_id: Some(c.org.into()),
                number: Some(format!("{}", ticket_no + 10000)),
                title: rng.pick(TITLES).to_string(),
                classification: Some(
                    rng.pick(&[
                        "customizing_bug",
                        "change_request",
                        "base_bug",
                        "customizing_bug",
                    ])
                    .to_string(),
                ),
                level: Some(level.clone()),
                billable_from: None,
                asset: None,
                branch: None,
                cost_centre: None,
                contract_id: None,
            });
            let n = 1 + (rng.next() % 4) as usize;
            let onsite = rng.next() % 5 == 0;
            for k in 0..n {
                entry_id += 1;
                let minutes = *rng.pick(&[5u32, 7, 12, 15, 20, 25, 30, 45, 60, 90]);
                let d = (day + k as u32).min(31);
                entries.push(TimeEntry {
                    source: SOURCE.into(),
                    id: entry_id.to_string(),
                    version: 1,
                    ticket_id: ticket_no.to_string(),
                    customer_id: None,
                    technician: rng
                        .pick(&["a.keller", "b.yilmaz", "c.nowak", "d.fischer"])
                        .to_string(),
                    level: level.clone(),
                    activity: if onsite {
                        "onsite".into()
                    } else {
                        "remote".into()
                    },
                    started_at: at(d, 8 + (rng.next() % 9) as u32, (rng.next() % 4) as u32 * 15),
                    minutes,
                    billable: true,
                    non_billable_reason: None,
                    visit_id: onsite.then(|| format!("V-{ticket_no}")),
                    note: Some(format!("Arbeitsschritt {}", k + 1)),
                });
            }
            if onsite {
                entry_id += 1;
                entries.push(TimeEntry {
                    source: SOURCE.into(),
                    id: entry_id.to_string(),
                    version: 1,
                    ticket_id: ticket_no.to_string(),
                    customer_id: None,
                    technician: "d.fischer".into(),
                    level: level.clone(),
                    activity: "travel".into(),
                    started_at: at(day.min(31), 7, 30),
                    minutes: 35,
                    billable: true,
                    non_billable_reason: None,
                    visit_id: Some(format!("V-{ticket_no}")),
                    note: Some("Anfahrt".into()),
                });
            }
        }
    }
    // Goodwill work, with its reason (listed on the service report, never invoiced).
    entries.push(TimeEntry {
        non_billable_reason: Some("Kulanz: Folgefehler unseres Updates".into()),
        billable: false,
        id: "5900".into(),
        minutes: 40,
        ..entries[0].clone()
    });
    // A correction of an entry: version 2 (30 → 45 minutes)...
    let mut corrected = entries[1].clone();
    corrected.version = 2;
    corrected.minutes = 45;
    corrected.note = Some("nachgetragen: Treiber-Rollback".into());
    entries.push(corrected);
    // Problem cases: free work without a reason (→ refused at the door), an unknown
    // organization (→ review list).
    entries.push(TimeEntry {
        billable: false,
        non_billable_reason: None,
        id: FREE_WITHOUT_REASON.into(),
        ..entries[2].clone()
    });
    tickets.push(Ticket {
        id: "89999".into(),
        organization_id: Some("99".into()),
        title: "Anfrage eines Neukunden".into(),
        ..tickets[0].clone()
    });
    entries.push(TimeEntry {
        id: "5902".into(),
        ticket_id: "89999".into(),
        minutes: 20,
        ..entries[0].clone()
    });
    (tickets, entries)
}

fn events_json(events: &[Envelope]) -> serde_json::Value {
    serde_json::Value::Array(
        events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "specversion": "1.0", "id": e.id, "source": e.source, "type": e.event_type,
                    "subject": e.subject, "time": e.time, "datacontenttype": "application/json", "data": e.data,
                })
            })
            .collect(),
    )
}

/// Runs the demo and writes its results into `out`.
pub async fn run(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let data = out.join("hub-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let mut cfg = Config::default();
    cfg.hub.data_dir = data;
    cfg.hub.instance = "demo".into();
    cfg.bus.poll_interval_ms = 20;
    // Accounting: finalized invoices go to DATEV EXTF files (demo advisor numbers).
    cfg.datev = Some(crate::config::DatevSection {
        consultant_number: 29098,
        client_number: 55003,
        fiscal_year_start: "01-01".into(),
        account_length: 4,
        chart: datev::Chart::Skr03,
    });
    // Every export format: DATEV (EXTF and XML), SAP IDocs, e-invoices.
    cfg.sap = Some(sap::SapSettings {
        client: Some("100".into()),
        sender_port: "DREHKREUZ".into(),
        sender_partner_type: "LS".into(),
        sender_partner: "DREHKREUZ".into(),
        receiver_port: "SAPP01".into(),
        receiver_partner_type: "LS".into(),
        receiver_partner: "P01CLNT100".into(),
        own_partner_number: Some("0000700001".into()),
        payment_terms_key: Some("ZB14".into()),
        company_code: "1000".into(),
        document_type: "DR".into(),
        username: "DREHKREUZ".into(),
        revenue_accounts: [
            ("19".to_string(), "8400".to_string()),
            ("7".into(), "8300".into()),
        ]
        .into(),
        tax_codes: [
            ("19".to_string(), "A1".to_string()),
            ("7".into(), "A2".into()),
        ]
        .into(),
    });
    let target = |name: &str, formats: &[&str], dir: &str| crate::config::ExportTarget {
        name: name.into(),
        formats: formats.iter().map(|f| f.to_string()).collect(),
        dir: Some(out.join(dir)),
        url: None,
        token: None,
        zugferd_profile: "en16931".into(),
    };
    cfg.export = vec![
        target("accounting", &["datev-extf", "datev-xml"], "datev"),
        target("sap", &["sap-invoic02", "sap-acc-document"], "sap"),
        target(
            "einvoice",
            &["xrechnung-ubl", "xrechnung-cii", "zugferd"],
            "e-invoices",
        ),
    ];
    // The helpdesk: a simulated Zammad on loopback.
    let sim = zammad::SimulatedZammad::start(zammad_data()).await?;
    let mut mapping = zammad_mapping::MappingSettings::default();
    mapping.types.insert(
        "2".into(),
        zammad_mapping::TypeMapping {
            level: "2nd".into(),
            activity: "remote".into(),
            billable: true,
            reason: None,
        },
    );
    cfg.zammad = Some(crate::config::ZammadSection {
        base_url: sim.base_url.clone(),
        token: secrecy::SecretString::from(zammad::TOKEN.to_string()),
        group: "Service Desk".into(),
        webhook_secret: Some(secrecy::SecretString::from(WEBHOOK_SECRET.to_string())),
        source: "zammad".into(),
        mapping,
    });
    // The warehouse posts with an HMAC signature; pick & pack tickets go to the stock room.
    cfg.warehouse.sources.insert(
        "lager".into(),
        crate::config::WarehouseSource {
            hmac_secret: Some(secrecy::SecretString::from(LAGER_SECRET.to_string())),
        },
    );
    cfg.warehouse.ticket_customer = "lager@systemhaus-nord.example".into();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cfg.http.listen = format!("127.0.0.1:{port}");
    let url = cfg.database_url();
    let hub = Hub::build(cfg).await?;
    let db = hub.db.clone();

    // Master data: the documented example (seller, number range, customers, contracts).
    let md = crate::masterdata::MasterData::from_toml(MASTER_DATA)?;
    crate::masterdata::import(&db, &md, "demo").await?;

    let stop = CancellationToken::new();
    let s = stop.clone();
    let running = tokio::spawn(async move { hub.run(s).await });
    let base = format!("http://127.0.0.1:{port}");
    let up = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if up.elapsed() > Duration::from_secs(30) || running.is_finished() {
            anyhow::bail!("the demo hub did not start listening on {base}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = create_token(&db, "demo helpdesk", &Role::Intake(SOURCE.into()), "demo")
        .await?
        .token;

    let (tickets, entries) = sample_month();
    let ticket_events = tickets
        .iter()
        .map(|t| crate::intake::ticket_event(t, true))
        .collect::<Result<Vec<_>, _>>()?;
    let entry_events = entries
        .iter()
        .map(|e| crate::intake::time_entry_event(e, e.version == 1))
        .collect::<Result<Vec<_>, _>>()?;
    // The entry without a reason for being free is posted on its own: the door refuses it
    // (422 naming the field), the rest of the month is accepted.
    let (invalid, valid): (Vec<_>, Vec<_>) = entry_events
        .into_iter()
        .partition(|e| e.subject.as_deref() == Some(FREE_WITHOUT_REASON));
    for batch in [ticket_events, valid] {
        post(&base, &token, &events_json(&batch)).await?;
        settle(&db).await?;
    }
    let mut refused_at_door = Vec::new();
    for e in &invalid {
        let body = serde_json::to_vec(&events_json(std::slice::from_ref(e))[0])?;
        let (status, answer) = request(
            &base,
            "POST",
            "/api/v1/events",
            Some(&token),
            &[],
            "application/json",
            &body,
        )
        .await?;
        if status != 422 {
            anyhow::bail!("the door should refuse time entry {FREE_WITHOUT_REASON} with 422, answered {status}: {answer}");
        }
        let problem: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        refused_at_door.push(format!(
            "time entry {FREE_WITHOUT_REASON}: {} ({})",
            problem["field"].as_str().unwrap_or("-"),
            problem["detail"].as_str().unwrap_or("-")
        ));
    }

    // Zammad: a signed webhook says ticket 501 changed; the hub fetches it and its accountings.
    let hook = serde_json::to_vec(&serde_json::json!({
        "ticket": {"id": 501, "title": "Server-Update DATEV-Umgebung"},
        "article": {"accounted_time": 0}
    }))?;
    let signature = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(WEBHOOK_SECRET.as_bytes())?;
        mac.update(&hook);
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    };
    let (status, body) = request(
        &base,
        "POST",
        "/webhooks/zammad",
        None,
        &[
            ("X-Hub-Signature", &signature),
            ("X-Zammad-Delivery", "demo-delivery-1"),
        ],
        "application/json",
        &hook,
    )
    .await?;
    anyhow::ensure!(
        status == 202,
        "the Zammad webhook answered {status}: {body}"
    );
    settle(&db).await?;

    // Warehouse: two goods receipts (hub JSON, signed; openTRANS for a registered order).
    let lager = create_token(&db, "demo warehouse", &Role::Intake("lager".into()), "demo")
        .await?
        .token;
    let (status, body) = request(
        &base,
        "PUT",
        "/api/v1/purchase-orders/PO-2026-1017",
        Some(&lager),
        &[],
        "application/json",
        br#"{"customer_id": "C-1003"}"#,
    )
    .await?;
    anyhow::ensure!(
        status == 200,
        "registering the purchase order answered {status}: {body}"
    );
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive();
    let receipts: [(&str, Vec<u8>); 2] = [
        (
            "application/json",
            serde_json::to_vec(&json_receipt(today))?,
        ),
        ("application/xml", OPENTRANS_RECEIPT.as_bytes().to_vec()),
    ];
    let mut receipt_answers = Vec::new();
    for (ct, doc) in &receipts {
        let signature = {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(LAGER_SECRET.as_bytes())?;
            mac.update(doc);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        let (status, body) = request(
            &base,
            "POST",
            "/api/v1/goods-receipts",
            Some(&lager),
            &[("X-Hub-Signature-256", &signature)],
            ct,
            doc,
        )
        .await?;
        anyhow::ensure!(status == 201, "the goods receipt answered {status}: {body}");
        receipt_answers.push(body);
    }
    settle(&db).await?;
    // The daily reminder job, run for today: the licence expiring in 30 days is due.
    let reminders = crate::warehouse::reminders::run_at(
        &db,
        &crate::config::WarehouseSection::default().reminder_days,
        today,
    )
    .await?;
    settle(&db).await?;
    // The monthly run: preview → approve → finalize (numbers, invoices, invoice.finalized).
    let period: canonical::work::Period = "2026-10".parse()?;
    let preview = crate::billing::run::preview(&db, period, None, "demo").await?;
    crate::billing::run::approve(&db, &preview.id, "demo").await?;
    let run = crate::billing::run::finalize(&db, &preview.id, "demo").await?;
    settle(&db).await?;
    stop.cancel();
    running.await??;
    let invoices_dir = out.join("invoices");
    let reports_dir = out.join("service-reports");
    std::fs::create_dir_all(&invoices_dir)?;
    std::fs::create_dir_all(&reports_dir)?;

    // What the hub produced.
    let db = crate::store::Db::open(&url, 2).await?;
    let mut stored = Vec::new();
    let mut by_customer: BTreeMap<(String, String, String), (u32, u32)> = BTreeMap::new();
    for c in CUSTOMERS {
        for e in work::entries_for(&db, c.id, "2026-10").await? {
            let k = (
                c.id.to_string(),
                e.level.clone(),
                if e.billable {
                    e.activity.clone()
                } else {
                    "non-billable".into()
                },
            );
            let v = by_customer.entry(k).or_default();
            v.0 += 1;
            v.1 += e.minutes;
            stored.push(serde_json::json!({ "customer_id": c.id, "entry": e }));
        }
    }
    let review_items = review::list(&db, false).await?;
    let dead = deadletter::list(&db, None, false, 1000).await?;
    std::fs::write(
        out.join("time-entries.json"),
        serde_json::to_string_pretty(&stored)?,
    )?;
    let mut csv = String::from("customer_id,level,activity,entries,minutes\n");
    for ((c, l, a), (n, m)) in &by_customer {
        let _ = writeln!(csv, "{c},{l},{a},{n},{m}");
    }
    std::fs::write(out.join("work-by-customer.csv"), &csv)?;
    std::fs::write(
        out.join("review.json"),
        serde_json::to_string_pretty(&review_items)?,
    )?;
    std::fs::write(
        out.join("dead-letters.json"),
        serde_json::to_string_pretty(&dead)?,
    )?;
    let mut assets = Vec::new();
    for c in CUSTOMERS {
        assets.extend(crate::warehouse::assets::list(&db, c.id).await?);
    }
    std::fs::write(
        out.join("assets.json"),
        serde_json::to_string_pretty(&assets)?,
    )?;
    let helpdesk_dir = out.join("helpdesk");
    std::fs::create_dir_all(&helpdesk_dir)?;
    let helpdesk_tickets = sim.created_tickets();
    std::fs::write(
        helpdesk_dir.join("tickets.json"),
        serde_json::to_string_pretty(&helpdesk_tickets)?,
    )?;

    let mut invoice_lines = Vec::new();
    for t in &run.targets {
        std::fs::write(
            reports_dir.join(format!("{}.json", t.report.id)),
            serde_json::to_string_pretty(&t.report)?,
        )?;
        std::fs::write(
            reports_dir.join(format!("{}.html", t.report.id)),
            crate::billing::report::html(&t.report),
        )?;
        if let Some(n) = &t.invoice_number {
            if let Some(inv) = crate::billing::run::invoice(&db, n).await? {
                std::fs::write(
                    invoices_dir.join(format!("{n}.json")),
                    serde_json::to_string_pretty(&inv)?,
                )?;
                invoice_lines.push(format!(
                    "  {n}  {:<36} net {:>9} €  VAT {:>8} €  gross {:>9} €",
                    inv.buyer.name, inv.totals.net, inv.totals.vat, inv.totals.gross
                ));
            }
        }
        if let Some(c) = &t.rating.contingent {
            invoice_lines.push(format!(
                "  contingent {}: opening {} + allotment {} − consumption {} → closing {} min (overdraft {})",
                t.contract_id, c.opening, c.allotment, c.consumption, c.closing, c.overdraft
            ));
        }
        for x in &t.rating.crossings {
            invoice_lines.push(format!(
                "  threshold {} % of contract {} crossed by entry {} on {}",
                x.percent,
                t.contract_id,
                x.entry_id,
                x.at.format("%d.%m.%Y")
            ));
        }
    }
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "drehkreuz demo — October 2026 on embedded defaults (SQLite + embedded bus)"
    );
    let _ = writeln!(
        summary,
        "posted through HTTP ingress: {} tickets, {} time-entry events",
        tickets.len(),
        entries.len()
    );
    let _ = writeln!(summary, "stored time entries:        {}", stored.len());
    for c in CUSTOMERS {
        let (n, m) = by_customer
            .iter()
            .filter(|((id, _, _), _)| id == c.id)
            .fold((0, 0), |acc, (_, (n, m))| (acc.0 + n, acc.1 + m));
        let _ = writeln!(
            summary,
            "  {} {:<36} {:>3} entries {:>5} min",
            c.id, c.name, n, m
        );
    }
    let _ = writeln!(
        summary,
        "review list:                {} (unknown customers are kept, not dropped)",
        review_items.len()
    );
    for r in &review_items {
        let _ = writeln!(summary, "  {} {}: {}", r.kind, r.record_id, r.reason);
    }
    let _ = writeln!(
        summary,
        "refused at the door:        {}",
        refused_at_door.len()
    );
    for r in &refused_at_door {
        let _ = writeln!(summary, "  {r}");
    }
    let _ = writeln!(summary, "dead letters:               {}", dead.len());
    for d in &dead {
        let _ = writeln!(
            summary,
            "  {} → {}: {}",
            d.routing_key, d.consumer, d.reason
        );
    }
    let _ = writeln!(
        summary,
        "Zammad (simulated at {}): webhook → fetch → {} time entries of ticket 501 stored",
        sim.base_url,
        stored
            .iter()
            .filter(|e| e["entry"]["source"] == "zammad")
            .count()
    );
    let _ = writeln!(
        summary,
        "goods receipts:             {} posted, {} assets registered",
        receipt_answers.len(),
        assets.len()
    );
    for a in &receipt_answers {
        let _ = writeln!(summary, "  {a}");
    }
    let _ = writeln!(summary, "asset reminders due today:  {reminders}");
    let _ = writeln!(
        summary,
        "helpdesk tickets written back: {} (in {})",
        helpdesk_tickets.len(),
        helpdesk_dir.join("tickets.json").display()
    );
    for t in &helpdesk_tickets {
        let _ = writeln!(
            summary,
            "  #{} {} ({} article(s))",
            t["ticket"]["number"].as_str().unwrap_or(""),
            t["ticket"]["title"].as_str().unwrap_or(""),
            t["articles"].as_array().map(Vec::len).unwrap_or(0)
        );
    }
    let _ = writeln!(summary, "invoice run {} (October 2026), finalized:", run.id);
    for l in &invoice_lines {
        let _ = writeln!(summary, "{l}");
    }
    for (dir, what) in [
        ("datev", "DATEV EXTF + XML"),
        ("sap", "SAP IDoc INVOIC02 + ACC_DOCUMENT03"),
        ("e-invoices", "XRechnung UBL + CII, ZUGFeRD"),
    ] {
        let n = std::fs::read_dir(out.join(dir))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        let _ = writeln!(
            summary,
            "export {what} (consumers of invoice.finalized): {n} files in {}",
            out.join(dir).display()
        );
    }
    let reloaded = crate::billing::run::load(&db, &run.id).await?;
    for p in &reloaded.export_problems {
        let _ = writeln!(summary, "  refused: {p}");
    }
    let waiting = outbox::backlog(&db).await?;
    if waiting > 0 {
        let _ = writeln!(summary, "outbox: {waiting} events not yet published");
    }
    let _ = writeln!(summary, "results in {}", out.display());
    std::fs::write(out.join("summary.txt"), &summary)?;
    crate::out!("{summary}");
    db.pool.close().await;
    Ok(())
}

async fn post(base: &str, token: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    // A tiny HTTP/1.1 client over TCP, so the demo needs no HTTP client crate at run time.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let payload = serde_json::to_vec(body)?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&payload).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "202" {
        anyhow::bail!(
            "ingress answered {status}: {}",
            response.lines().last().unwrap_or("")
        );
    }
    Ok(())
}

/// One HTTP/1.1 request over TCP (the demo's tiny client); returns status and body.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until the outbox is published and every queue is drained.
async fn settle(db: &crate::store::Db) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Events no consumer is bound to yet stay in the outbox with their error (retried later).
        let backlog: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox_pending WHERE last_error IS NULL")
                .fetch_one(&db.pool)
                .await?;
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bus_queue")
            .fetch_one(&db.pool)
            .await?;
        if backlog == 0 && queued == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the hub did not settle within 60 s ({backlog} unpublished, {queued} queued)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
