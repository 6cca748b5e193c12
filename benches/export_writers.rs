//! Export writer benchmark (run with `cargo bench --bench export_writers`).
//!
//! Builds `BENCH_INVOICES` canonical invoices (default 100,000; 6 lines at 19 % and 7 %,
//! quantities varied, every tenth a credit note) and runs each writer over all of them on one
//! thread: XRechnung UBL, XRechnung CII, ZUGFeRD (EN16931), DATEV XML (ZIP incl. the XRechnung),
//! SAP INVOIC02, SAP ACC_DOCUMENT03 (each invoice checked and written), and DATEV EXTF (all
//! invoices into their month's Buchungsstapel). Reports invoices per second per core. In the
//! same run, the PyPI `drafthorse` ZUGFeRD generator (`benches/drafthorse_zugferd.py`) builds
//! the same invoices (generation only, and with its XSD validation on the first
//! `BENCH_DRAFTHORSE_VALIDATE`, default 1,000), and the ratio to the hub's ZUGFeRD writer is
//! printed.

#[path = "../tests/fixtures/invoices.rs"]
mod fixtures;

use canonical::invoice::{vat_and_totals, Invoice};
use rust_decimal::Decimal;
use std::time::Instant;

fn invoices(n: usize) -> Vec<Invoice> {
    let base = fixtures::invoice();
    let credit = fixtures::credit_note();
    (0..n)
        .map(|i| {
            let mut inv = if i % 10 == 9 {
                credit.clone()
            } else {
                base.clone()
            };
            inv.number = format!("RE-2026-{i:06}");
            for (k, l) in inv.lines.iter_mut().enumerate() {
                let q = Decimal::from(((i + k) % 7 + 1) as i64) / Decimal::from(4);
                l.quantity = if l.quantity < Decimal::ZERO { -q } else { q };
                l.net = canonical::invoice::line_net(l.quantity, l.unit_price, l.base_quantity());
            }
            let (vat, totals) = vat_and_totals(&inv.lines);
            inv.vat = vat;
            inv.totals = totals;
            inv
        })
        .collect()
}

fn settings() -> (datev::ExtfSettings, sap::SapSettings) {
    (
        datev::ExtfSettings {
            consultant_number: 29098,
            client_number: 55003,
            fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            account_length: 4,
            chart: datev::Chart::Skr03,
            exported_by: "drehkreuz".into(),
        },
        serde_json::from_value(serde_json::json!({
            "sender_port": "DREHKREUZ", "sender_partner": "DREHKREUZ",
            "receiver_port": "SAPP01", "receiver_partner": "P01CLNT100",
            "revenue_accounts": {"19": "8400", "7": "8300"}, "tax_codes": {"19": "A1", "7": "A2"}
        }))
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn measure(name: &str, invs: &[Invoice], mut f: impl FnMut(&Invoice) -> usize) -> f64 {
    let t = Instant::now();
    let mut bytes = 0usize;
    for inv in invs {
        bytes += f(inv);
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = invs.len() as f64 / secs;
    println!(
        "{name:<28} {rate:>12.0} invoices/s/core   {:>8.1} MB",
        bytes as f64 / 1e6
    );
    rate
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("export_writers: run with `cargo bench --bench export_writers`");
        return;
    }
    let n: usize = std::env::var("BENCH_INVOICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let validate: usize = std::env::var("BENCH_DRAFTHORSE_VALIDATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let invs = invoices(n);
    let (dv, sp) = settings();
    println!(
        "export_writers: {n} invoices (6 lines, 19 % + 7 %, every tenth a credit note), one thread"
    );
    let w = |inv: &Invoice, f: einvoice::Format| {
        einvoice::write(inv, f)
            .map(|x| x.len())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    measure("xrechnung-ubl", &invs, |i| {
        w(i, einvoice::Format::XrechnungUbl)
    });
    measure("xrechnung-cii", &invs, |i| {
        w(i, einvoice::Format::XrechnungCii)
    });
    let zugferd = measure("zugferd (EN16931)", &invs, |i| {
        w(i, einvoice::Format::ZugferdEn16931)
    });
    measure("datev-xml (zip + xrechnung)", &invs, |i| {
        let xml =
            einvoice::write(i, einvoice::Format::XrechnungUbl).unwrap_or_else(|e| panic!("{e}"));
        datev::xml::package(&dv, i, &[("x.xml".into(), xml.into_bytes())])
            .map(|z| z.len())
            .unwrap_or_else(|e| panic!("{e}"))
    });
    measure("sap-invoic02", &invs, |i| {
        sap::invoic02(&sp, i)
            .map(|x| x.len())
            .unwrap_or_else(|e| panic!("{e}"))
    });
    measure("sap-acc-document", &invs, |i| {
        sap::acc_document03(&sp, i)
            .map(|x| x.len())
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let t = Instant::now();
    let created = chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .unwrap_or_default();
    let stapel = datev::buchungsstapel(
        &dv,
        &invs,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap_or_default(),
        created,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>12.0} invoices/s/core   {:>8.1} MB",
        "datev-extf (one month)",
        n as f64 / secs,
        stapel.len() as f64 / 1e6
    );

    // drafthorse on the same invoices.
    let dir = std::env::temp_dir().join(format!("drehkreuz-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let jsonl = dir.join("invoices.jsonl");
    let mut text = String::new();
    for i in &invs {
        text.push_str(&serde_json::to_string(i).unwrap_or_default());
        text.push('\n');
    }
    if std::fs::write(&jsonl, text).is_err() {
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/drafthorse_zugferd.py");
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(&jsonl)
        .arg(validate.to_string())
        .output()
    {
        Ok(o) if o.status.success() => {
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let gen = r["generate_cpu_seconds"].as_f64().unwrap_or(f64::NAN);
            let val = r["validate_cpu_seconds"].as_f64().unwrap_or(f64::NAN);
            let vn = r["validated"].as_f64().unwrap_or(1.0);
            let dh = n as f64 / gen;
            println!(
                "{:<28} {:>12.0} invoices/s/core   (generation only)",
                "drafthorse (Python)", dh
            );
            println!(
                "{:<28} {:>12.0} invoices/s/core   (with its XSD validation, {vn} invoices)",
                "drafthorse + validation",
                vn / val
            );
            println!(
                "ratio hub zugferd / drafthorse generation: {:.1}×",
                zugferd / dh
            );
        }
        Ok(o) => println!("drafthorse failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("drafthorse not run: {e} (pip install drafthorse)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
