//! DATEV EXTF export of finalized invoices, checked by the independent oracle
//! `../shared/oracles/datev_extf_check.py` (Python, standard library only).

mod support;

use canonical::work::{Ticket, TimeEntry};
use drehkreuz::billing::run;
use drehkreuz::store::work;

fn oracle() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/oracles/datev_extf_check.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extf_files_pass_the_datev_oracle() {
    let (db, _u, _d) = support::fresh_sqlite().await;
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../docs/examples/master-data.toml"
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
    let files = drehkreuz::export::write_datev_extf(&settings, &invoices, dir.path()).unwrap();
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
        let out = std::process::Command::new("python3")
            .arg(oracle())
            .arg(f)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "oracle rejected {}:\n{}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
    let again = drehkreuz::export::write_datev_extf(&settings, &invoices, dir.path()).unwrap();
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
