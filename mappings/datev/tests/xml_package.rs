//! The DATEV XML-Schnittstelle package (ZIP: document.xml v6.0, ledger v6.0, the XRechnung)
//! checked by `tests/oracles/datev_xml_validate.py` with the v6.0 XSDs.

#[path = "../../../tests/fixtures/invoices.rs"]
mod fixtures;
#[path = "../../../tests/prerequisites.rs"]
mod prerequisites;

fn settings() -> datev::ExtfSettings {
    datev::ExtfSettings {
        consultant_number: 29098,
        client_number: 55003,
        fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        account_length: 4,
        chart: datev::Chart::Skr03,
        exported_by: "drehkreuz".into(),
    }
}

/// lxml imports (else: fails in CI, skips locally, one line naming it).
fn oracle_available() -> bool {
    prerequisites::python_packages_available(&[("lxml", "lxml")])
}

#[test]
fn packages_pass_the_datev_xml_oracle() {
    if !oracle_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for inv in [
        fixtures::invoice(),
        fixtures::credit_note(),
        fixtures::public_invoice(),
    ] {
        let xr = einvoice::write(&inv, einvoice::Format::XrechnungUbl).unwrap();
        let zip = datev::xml::package(
            &settings(),
            &inv,
            &[(format!("{}_xrechnung.xml", inv.number), xr.into_bytes())],
        )
        .unwrap();
        // Byte-identical when written again.
        let again = datev::xml::package(
            &settings(),
            &inv,
            &[(
                format!("{}_xrechnung.xml", inv.number),
                einvoice::write(&inv, einvoice::Format::XrechnungUbl)
                    .unwrap()
                    .into_bytes(),
            )],
        )
        .unwrap();
        assert_eq!(zip, again);
        let p = dir.path().join(format!("{}.zip", inv.number));
        std::fs::write(&p, zip).unwrap();
        files.push(p);
    }
    let xsd = prerequisites::repo_file("tests/oracles/datev-xsd-v060");
    let mut args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let (success, text, stderr) =
        prerequisites::run_oracle("datev_xml_validate.py", &args, &[("DATEV_XSD_PATH", &xsd)]);
    let results: Vec<serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("oracle output is not JSON ({e}): {text}{stderr}"));
    // Package rules + document.xml + ledger file, per ZIP.
    assert_eq!(results.len(), files.len() * 3, "{text}");
    for r in &results {
        assert_eq!(
            r["status"],
            "VALID",
            "{}",
            serde_json::to_string_pretty(r).unwrap()
        );
        assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    }
    assert!(success, "{text}");
    // The credit note's ledger amounts are negative, the invoice's positive.
    let inv = fixtures::credit_note();
    let ledger = datev::xml::ledger(&settings(), &inv).unwrap();
    assert!(ledger.contains("<amount>-"), "{ledger}");
    assert!(ledger.contains("<accountNo>8300</accountNo>") && ledger.contains("<tax>7.00</tax>"));
}

/// Golden files of both DATEV formats (EXTF decoded from Windows-1252 for readability).
#[test]
fn golden_files() {
    let invs = [fixtures::invoice(), fixtures::credit_note()];
    let created = chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    let stapel = datev::buchungsstapel(
        &settings(),
        &invs,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
        created,
    )
    .unwrap();
    insta::assert_snapshot!(
        "extf_buchungsstapel",
        encoding_rs::WINDOWS_1252.decode(&stapel).0
    );
    let deb = datev::debitoren(&settings(), &[invs[0].buyer.clone()], created).unwrap();
    insta::assert_snapshot!("extf_debitoren", encoding_rs::WINDOWS_1252.decode(&deb).0);
    insta::assert_snapshot!(
        "xml_ledger_invoice",
        datev::xml::ledger(&settings(), &invs[0]).unwrap()
    );
    insta::assert_snapshot!(
        "xml_ledger_credit_note",
        datev::xml::ledger(&settings(), &invs[1]).unwrap()
    );
    insta::assert_snapshot!(
        "xml_document",
        datev::xml::document(
            &[(
                "RE-2026-00042.xml".into(),
                "2026-11".into(),
                vec!["RE-2026-00042_xrechnung.xml".into()]
            )],
            created
        )
    );
}
