//! DATEV EXTF export of finalized invoices, checked by the independent oracle
//! `tests/oracles/datev_extf_check.py` (Python, standard library only).

use crate::support;

use canonical::work::{Ticket, TimeEntry};
use drehkreuz::billing::run;
use drehkreuz::store::work;

/// Runs the EXTF oracle on one file: (accepted, its report).
fn extf_oracle(file: &std::path::Path) -> (bool, String) {
    support::prerequisites::require_python();
    let (ok, stdout, stderr) =
        support::prerequisites::run_oracle("datev_extf_check.py", &[file.as_os_str()], &[]);
    (ok, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extf_files_pass_the_datev_oracle() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../../docs/examples/master-data.toml"
    ))
    .unwrap();
    drehkreuz::masterdata::import(&db, &md, "t").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for (i, org, customer) in [
        (1, "11", "C-1001"),
        (2, "12", "C-1002"),
        (3, "13", "C-1003"),
        (4, "14", "C-1004"),
    ] {
        let t = Ticket {
            source: "hd".into(),
            id: format!("T{i}"),
            version: 1,
            customer_id: Some(customer.into()),
            organization_id: Some(org.into()),
            number: None,
            title: "Drucker „Empfang“ – Tonerwechsel für 12 €".into(),
            classification: None,
            level: None,
            billable_from: None,
            asset: None,
            branch: None,
            cost_centre: None,
            contract_id: None,
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
                customer_id: Some(customer.into()),
                technician: "anna".into(),
                level: "1st".into(),
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
    let r = run::preview(&db, "2026-10".parse().unwrap(), None, "t")
        .await
        .unwrap();
    run::approve(&db, &r.id, "t").await.unwrap();
    let f = run::finalize(&db, &r.id, "t").await.unwrap();
    let first = f
        .targets
        .iter()
        .find_map(|t| t.invoice_number.clone())
        .unwrap();
    let note = run::credit(&db, &first, "Doppelt berechnet", "t")
        .await
        .unwrap();
    let mut invoices = drehkreuz::export::run_invoices(&db, &r.id).await.unwrap();
    invoices.push(note);
    assert!(
        invoices.len() >= 4,
        "contingent fee + overdraft, T&M, budget, a credit note"
    );

    let settings = datev::ExtfSettings {
        consultant_number: 29098,
        client_number: 55003,
        fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        account_length: 4,
        chart: datev::Chart::Skr03,
        exported_by: "drehkreuz".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let files = drehkreuz::export::write_datev_extf(
        &settings,
        &invoices,
        dir.path(),
        chrono::Utc::now().naive_utc(),
    )
    .unwrap();
    let csvs: Vec<_> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "csv"))
        .collect();
    assert_eq!(csvs.len(), 2);
    for f in &csvs {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.ends_with(b"\r\n"), "CRLF after every line");
        assert_eq!(
            bytes.windows(2).filter(|w| w == b"\r\n").count(),
            bytes.iter().filter(|&&b| b == b'\n').count()
        );
        assert!(bytes.contains(&0xFC), "ü in Windows-1252 (Müller)");
        let (ok, report) = extf_oracle(f);
        assert!(ok, "oracle rejected {}:\n{report}", f.display());
    }
    let stapel = std::fs::read(
        csvs.iter()
            .find(|f| f.to_string_lossy().contains("Buchungsstapel"))
            .unwrap(),
    )
    .unwrap();
    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&stapel);
    assert!(
        text.contains(";\"H\";\"EUR\";"),
        "the credit note is booked on the credit side"
    );
    assert!(
        text.contains(";10001;8400;"),
        "debitor 10001 against revenue 8400 (SKR03, 19 %)"
    );
    let manifest = std::fs::read_to_string(dir.path().join("MANIFEST.sha256")).unwrap();
    assert_eq!(manifest.lines().count(), 2);
    // Re-export is byte-identical apart from the creation timestamp in the header.
    let again = drehkreuz::export::write_datev_extf(
        &settings,
        &invoices,
        dir.path(),
        chrono::Utc::now().naive_utc(),
    )
    .unwrap();
    let b1: Vec<String> = String::from_utf8_lossy(&stapel)
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    let b2: Vec<String> = String::from_utf8_lossy(&std::fs::read(&again[0]).unwrap())
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(b1, b2);
}

/// The export consumer: each finalized invoice lands once in its month's file; a repeated
/// event (other message id, same invoice) changes nothing; the files pass the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_sink_is_idempotent_and_byte_stable() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../../docs/examples/master-data.toml"
    ))
    .unwrap();
    drehkreuz::masterdata::import(&db, &md, "t").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for (i, customer) in [(1, "C-1002"), (2, "C-1003")] {
        let t = Ticket {
            source: "hd".into(),
            id: format!("T{i}"),
            version: 1,
            customer_id: Some(customer.into()),
            organization_id: None,
            number: None,
            title: "VPN".into(),
            classification: None,
            level: None,
            billable_from: None,
            asset: None,
            branch: None,
            cost_centre: None,
            contract_id: None,
        };
        work::upsert_ticket(&mut tx, &t, Some(customer))
            .await
            .unwrap();
        let e = TimeEntry {
            source: "hd".into(),
            id: format!("E{i}"),
            version: 1,
            ticket_id: t.id.clone(),
            customer_id: Some(customer.into()),
            technician: "a".into(),
            level: "2nd".into(),
            activity: "remote".into(),
            started_at: "2026-10-07T09:00:00Z".parse().unwrap(),
            minutes: 95,
            billable: true,
            non_billable_reason: None,
            visit_id: None,
            note: None,
        };
        work::upsert_entry(&mut tx, &e, Some(customer))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let r = run::preview(&db, "2026-10".parse().unwrap(), None, "t")
        .await
        .unwrap();
    run::approve(&db, &r.id, "t").await.unwrap();
    run::finalize(&db, &r.id, "t").await.unwrap();
    let invoices = drehkreuz::export::run_invoices(&db, &r.id).await.unwrap();
    assert_eq!(
        invoices.len(),
        3,
        "two with work, and the contingent's monthly fee"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = drehkreuz::config::Config {
        datev: Some(drehkreuz::config::DatevSection {
            consultant_number: 29098,
            client_number: 55003,
            fiscal_year_start: "01-01".into(),
            account_length: 4,
            chart: datev::Chart::Skr03,
        }),
        ..Default::default()
    };
    let target = drehkreuz::config::ExportTarget {
        name: "acc".into(),
        formats: vec!["datev-extf".into()],
        dir: Some(dir.path().to_path_buf()),
        url: None,
        token: None,
        zugferd_profile: "en16931".into(),
    };
    let sink = drehkreuz::export::ExportSink::new(&target, &cfg);
    let event = |inv: &canonical::invoice::Invoice, v: &str| {
        canonical::Envelope::new(
            "/drehkreuz/billing",
            "invoice.finalized",
            &inv.number,
            v,
            chrono::Utc::now(),
            inv,
        )
        .unwrap()
    };
    for inv in &invoices {
        assert_eq!(
            drehkreuz::bus::apply(&db, "export-acc", &sink, &event(inv, "1")).await,
            drehkreuz::bus::Outcome::Applied
        );
    }
    let stapel = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("EXTF_Buchungsstapel")
        })
        .unwrap()
        .path();
    let first = std::fs::read(&stapel).unwrap();
    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&first);
    assert_eq!(
        text.lines().count(),
        2 + 3,
        "header, columns, one booking per invoice"
    );
    // The same invoice published again under another message id: nothing changes.
    assert_eq!(
        drehkreuz::bus::apply(&db, "export-acc", &sink, &event(&invoices[0], "2")).await,
        drehkreuz::bus::Outcome::Applied
    );
    assert_eq!(std::fs::read(&stapel).unwrap(), first, "byte-identical");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM export_ledger")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'export.datev_extf'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 3);
    let (ok, report) = extf_oracle(&stapel);
    assert!(ok, "{report}");
    let manifest = std::fs::read_to_string(dir.path().join("MANIFEST.sha256")).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&first))
    };
    assert!(manifest.contains(&sha), "manifest lists the file's sha256");
}
