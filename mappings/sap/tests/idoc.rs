//! INVOIC02 and ACC_DOCUMENT03 from canonical invoices, checked by the independent IDoc
//! checker (`tests/oracles/idoc_check.py`: conventions, field lengths, segment order, sums,
//! balance) and by golden files.

#[path = "../../../tests/fixtures/invoices.rs"]
mod fixtures;
#[path = "../../../tests/prerequisites.rs"]
mod prerequisites;

use sap::{acc_document03, invoic02, IdocError, SapSettings};

fn settings() -> SapSettings {
    serde_json::from_value(serde_json::json!({
        "client": "100",
        "sender_port": "DREHKREUZ",
        "sender_partner": "DREHKREUZ",
        "receiver_port": "SAPP01",
        "receiver_partner": "P01CLNT100",
        "own_partner_number": "0000700001",
        "payment_terms_key": "ZB14",
        "revenue_accounts": {"19": "8400", "7": "8300"},
        "tax_codes": {"19": "A1", "7": "A2"}
    }))
    .unwrap()
}

fn checker(files: &[std::path::PathBuf]) -> (bool, String) {
    prerequisites::require_python();
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
    let (ok, stdout, _stderr) = prerequisites::run_oracle("idoc_check.py", &args, &[]);
    (ok, stdout)
}

#[test]
fn idocs_pass_the_independent_checker() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, inv) in [
        ("invoice", fixtures::invoice()),
        ("credit", fixtures::credit_note()),
        ("public", fixtures::public_invoice()),
    ] {
        for (kind, xml) in [
            ("invoic02", invoic02(&settings(), &inv).unwrap()),
            ("acc", acc_document03(&settings(), &inv).unwrap()),
        ] {
            let p = dir.path().join(format!("{name}-{kind}.xml"));
            std::fs::write(&p, xml).unwrap();
            files.push(p);
        }
    }
    let (ok, report) = checker(&files);
    assert!(ok, "{report}");
    assert_eq!(report.lines().count(), files.len());
    // And the checker is not a rubber stamp: an unbalanced posting fails.
    let xml = acc_document03(&settings(), &fixtures::invoice()).unwrap();
    let broken = xml.replacen("<AMT_DOCCUR>", "<AMT_DOCCUR>1", 1);
    let p = dir.path().join("broken.xml");
    std::fs::write(&p, broken).unwrap();
    let (ok, report) = checker(&[p]);
    assert!(!ok && report.contains("does not balance"), "{report}");
}

#[test]
fn credit_notes_and_control_record() {
    let inv = fixtures::credit_note();
    let xml = invoic02(&settings(), &inv).unwrap();
    assert!(xml.contains("<BSART>CRME</BSART>") && xml.contains("<QUALF>031</QUALF>"));
    assert!(!xml.contains("<NETWR>-"), "INVOIC02 amounts are positive");
    assert!(xml.contains("<RCVPRN>P01CLNT100</RCVPRN>") && xml.contains("<MANDT>100</MANDT>"));
    let acc = acc_document03(&settings(), &inv).unwrap();
    assert!(
        acc.contains("<AMT_DOCCUR>-1"),
        "the customer line of a credit note is a credit"
    );
    // Stable IDoc numbers: a re-export is byte-identical.
    assert_eq!(xml, invoic02(&settings(), &inv).unwrap());
}

#[test]
fn field_lengths_and_missing_settings_are_errors() {
    let mut inv = fixtures::invoice();
    inv.number = "RE-2026-000000000042".into();
    let err = acc_document03(&settings(), &inv).unwrap_err();
    assert!(
        matches!(
            &err,
            IdocError::TooLong {
                field: "REF_DOC_NO",
                max: 16,
                ..
            }
        ),
        "{err}"
    );
    let mut s = settings();
    s.tax_codes.remove("7");
    let err = acc_document03(&s, &fixtures::invoice()).unwrap_err();
    assert!(err.to_string().contains("tax_codes"), "{err}");
}

#[test]
fn golden_files() {
    insta::assert_snapshot!(
        "invoic02",
        invoic02(&settings(), &fixtures::invoice()).unwrap()
    );
    insta::assert_snapshot!(
        "acc_document03",
        acc_document03(&settings(), &fixtures::invoice()).unwrap()
    );
}
