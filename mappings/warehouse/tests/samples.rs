//! Every sample in `tests/fixtures/warehouse/` read through [`warehouse::read`], with the
//! values the sample's provenance notes give, plus malformed and hostile variants.

#[path = "../../../tests/prerequisites.rs"]
mod prerequisites;

use canonical::goods::ReceiptFormat;
use rust_decimal::Decimal;
use warehouse::{read, ReadError};

/// A sample from `tests/fixtures/warehouse/`; a missing file fails with one line naming it.
fn sample(name: &str) -> Vec<u8> {
    prerequisites::read_fixture(&format!("tests/fixtures/warehouse/{name}"))
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn itscope_dispatch_notification_three_lines_six_serials() {
    let r = read(
        &sample("opentrans21_dispatchnotification_itscope_serials.xml"),
        Some("application/xml"),
    )
    .unwrap();
    assert_eq!(r.format, ReceiptFormat::OpentransDispatchNotification);
    assert_eq!(r.receipt_id, "39076516");
    assert_eq!(r.supplier.id.as_deref(), Some("10000735"));
    assert_eq!(r.supplier.name.as_deref(), Some("ITscope Partner-Test"));
    assert_eq!(r.shipment_id.as_deref(), Some("1Z7318301287125572"));
    assert_eq!(r.purchase_order_id.as_deref(), Some("GWAHJV-160131-1470"));
    assert_eq!(r.lines.len(), 3);
    let expect = [
        ("123002", "0888462006781", "1", vec!["123002-001"]),
        (
            "123001",
            "0888182569504",
            "2",
            vec!["123001-001", "123001-002"],
        ),
        (
            "123003",
            "8806085923805",
            "3",
            vec!["123003-001", "123003-002", "123003-003"],
        ),
    ];
    for (line, (pid, ean, qty, serials)) in r.lines.iter().zip(expect) {
        assert_eq!(line.supplier_pid.as_deref(), Some(pid));
        assert_eq!(line.gtin.as_deref(), Some(ean));
        assert_eq!(line.quantity, d(qty));
        let got: Vec<&str> = line
            .units
            .iter()
            .filter_map(|u| u.serial_number.as_deref())
            .collect();
        assert_eq!(got, serials);
    }
    assert_eq!(r.serials().count(), 6);
    assert_eq!(
        r.lines[0].description.as_deref(),
        Some("APPLE iPad Air 2 64GB 3G 4G Grau")
    );
    // Sniffed without a content type too.
    assert_eq!(
        read(
            &sample("opentrans21_dispatchnotification_itscope_serials.xml"),
            None
        )
        .unwrap(),
        r
    );
}

#[test]
fn reference_sample_in_utf8_and_latin1_reads_the_same() {
    let utf8 = read(
        &sample("opentrans21_dispatchnotification_reference_sample.xml"),
        Some("text/xml"),
    )
    .unwrap();
    let latin1 = read(
        &sample("opentrans21_dispatchnotification_reference_sample_iso-8859-1.xml"),
        None,
    )
    .unwrap();
    assert_eq!(utf8, latin1);
    assert_eq!(utf8.receipt_id, "LA86");
    assert!(!utf8.lines.is_empty());
    assert_eq!(
        utf8.serials().count(),
        0,
        "the reference sample carries no serials"
    );
    assert!(
        utf8.lines.iter().all(|l| l.units.is_empty()),
        "screws are not tracked assets"
    );
    // Umlauts survive the ISO-8859-1 decoding, and the UTF-8 file that declares ISO-8859-1
    // (as the published reference sample does) is not turned into mojibake.
    for name in [
        "opentrans21_dispatchnotification_reference_sample.xml",
        "opentrans21_dispatchnotification_reference_sample_iso-8859-1.xml",
    ] {
        let root = warehouse::xml::parse(&sample(name)).unwrap();
        fn texts(e: &warehouse::xml::Element, out: &mut Vec<String>) {
            out.push(e.text.trim().to_string());
            e.children.iter().for_each(|c| texts(c, out));
        }
        let mut all = Vec::new();
        texts(&root, &mut all);
        assert!(all.iter().any(|t| t == "Günther"), "{name}: {all:?}");
    }
}

#[test]
fn opentrans_invoice_is_not_a_receipt() {
    let err = read(&sample("opentrans21_invoice_itscope.xml"), None).unwrap_err();
    assert!(
        matches!(&err, ReadError::Unsupported(m) if m.contains("INVOICE")),
        "{err:?}"
    );
}

#[test]
fn authored_desadv_with_serials_and_licence_expiry() {
    let r = read(
        &sample("edifact_d96a_desadv_it_serials_AUTHORED.edi"),
        Some("application/EDIFACT"),
    )
    .unwrap();
    assert_eq!(r.format, ReceiptFormat::EdifactDesadv);
    assert_eq!(r.receipt_id, "LS-2025-004711");
    assert_eq!(r.purchase_order_id.as_deref(), Some("PO-2025-0815"));
    assert_eq!(r.supplier.gln.as_deref(), Some("4012345000009"));
    assert!(r.customer_party_ids.contains(&"Kunde AG".to_string()));
    assert_eq!(r.received_on, chrono::NaiveDate::from_ymd_opt(2025, 1, 15));
    assert_eq!(r.lines.len(), 2);
    let pc = &r.lines[0];
    assert_eq!(pc.gtin.as_deref(), Some("0195908483106"));
    assert_eq!(pc.supplier_pid.as_deref(), Some("20X60009GE"));
    assert_eq!(pc.manufacturer_pid.as_deref(), Some("20X60009GE"));
    assert_eq!(pc.description.as_deref(), Some("Lenovo ThinkPad T14 Gen 3"));
    assert_eq!(pc.order_line_id.as_deref(), Some("10"));
    let serials: Vec<_> = pc
        .units
        .iter()
        .filter_map(|u| u.serial_number.clone())
        .collect();
    assert_eq!(serials, ["PF3ABCD1", "PF3ABCD2"]);
    let lic = &r.lines[1];
    assert_eq!(lic.units.len(), 1);
    assert_eq!(lic.units[0].serial_number, None);
    assert_eq!(
        lic.units[0].licence_expiry,
        chrono::NaiveDate::from_ymd_opt(2026, 1, 14)
    );
}

#[test]
fn authored_recadv_counts_received_quantities() {
    let r = read(&sample("edifact_d96a_recadv_it_serials_AUTHORED.edi"), None).unwrap();
    assert_eq!(r.format, ReceiptFormat::EdifactRecadv);
    assert_eq!(r.receipt_id, "WE-2025-000123");
    assert_eq!(
        r.dispatch_notification_id.as_deref(),
        Some("LS-2025-004711")
    );
    assert_eq!(r.lines[0].quantity, d("2"));
    assert_eq!(r.serials().collect::<Vec<_>>(), ["PF3ABCD1", "PF3ABCD2"]);
}

#[test]
fn php_edifact_desadv_without_una_and_with_newlines() {
    let r = read(&sample("edifact_d96a_desadv_php-edifact.edi"), None).unwrap();
    assert_eq!(r.receipt_id, "Y02197250");
    assert_eq!(r.lines.len(), 2);
    assert_eq!(r.lines[0].line_id, "1");
    assert_eq!(r.lines[0].supplier_pid.as_deref(), Some("9780738507330"));
    assert_eq!(r.lines[0].description.as_deref(), Some("MUNCIE THE MIDDLE"));
    assert_eq!(r.lines[1].order_id.as_deref(), Some("6905456"));
    assert_eq!(r.purchase_order_id.as_deref(), Some("6877871"));
}

const MINIMAL_RECEIPT_ACK: &str = r#"<RECEIPTACKNOWLEDGEMENT version="2.1" xmlns="http://www.opentrans.org/XMLSchema/2.1" xmlns:bmecat="http://www.bmecat.org/bmecat/2005">
  <RECEIPTACKNOWLEDGEMENT_HEADER><RECEIPTACKNOWLEDGEMENT_INFO>
    <RECEIPTACKNOWLEDGEMENT_ID>WE-2025-000123</RECEIPTACKNOWLEDGEMENT_ID>
    <RECEIPT_DATE>2025-01-15T13:40:00+01:00</RECEIPT_DATE>
    <PARTIES>
      <PARTY><bmecat:PARTY_ID type="supplier_specific">10000735</bmecat:PARTY_ID><PARTY_ROLE>supplier</PARTY_ROLE></PARTY>
      <PARTY><bmecat:PARTY_ID type="gln">4098765000019</bmecat:PARTY_ID><PARTY_ROLE>delivery</PARTY_ROLE></PARTY>
    </PARTIES>
    <bmecat:SUPPLIER_IDREF type="supplier_specific">10000735</bmecat:SUPPLIER_IDREF>
    <SHIPMENT_PARTIES_REFERENCE><DELIVERY_IDREF type="gln">4098765000019</DELIVERY_IDREF></SHIPMENT_PARTIES_REFERENCE>
  </RECEIPTACKNOWLEDGEMENT_INFO></RECEIPTACKNOWLEDGEMENT_HEADER>
  <RECEIPTACKNOWLEDGEMENT_ITEM_LIST><RECEIPTACKNOWLEDGEMENT_ITEM>
    <LINE_ITEM_ID>1</LINE_ITEM_ID>
    <PRODUCT_ID>
      <bmecat:SUPPLIER_PID type="supplier_specific">123002</bmecat:SUPPLIER_PID>
      <SERIAL_NUMBER>PF3ABCD1</SERIAL_NUMBER><SERIAL_NUMBER>PF3ABCD2</SERIAL_NUMBER>
      <bmecat:INTERNATIONAL_PID type="gtin">0195908483106</bmecat:INTERNATIONAL_PID>
    </PRODUCT_ID>
    <QUANTITY>2</QUANTITY><bmecat:ORDER_UNIT>C62</bmecat:ORDER_UNIT>
    <ORDER_REFERENCE><ORDER_ID>PO-2025-0815</ORDER_ID><LINE_ITEM_ID>10</LINE_ITEM_ID></ORDER_REFERENCE>
    <DELIVERY_REFERENCE><DELIVERYNOTE_ID>LS-2025-004711</DELIVERYNOTE_ID></DELIVERY_REFERENCE>
    <ITEM_UDX><UDX.HUB.WARRANTY_END>2028-01-14</UDX.HUB.WARRANTY_END></ITEM_UDX>
  </RECEIPTACKNOWLEDGEMENT_ITEM></RECEIPTACKNOWLEDGEMENT_ITEM_LIST>
  <RECEIPTACKNOWLEDGEMENT_SUMMARY><TOTAL_ITEM_NUM>1</TOTAL_ITEM_NUM></RECEIPTACKNOWLEDGEMENT_SUMMARY>
</RECEIPTACKNOWLEDGEMENT>"#;

#[test]
fn receipt_acknowledgement_with_warranty_udx() {
    let r = read(MINIMAL_RECEIPT_ACK.as_bytes(), None).unwrap();
    assert_eq!(r.format, ReceiptFormat::OpentransReceiptAcknowledgement);
    assert_eq!(r.received_on, chrono::NaiveDate::from_ymd_opt(2025, 1, 15));
    assert_eq!(
        r.dispatch_notification_id.as_deref(),
        Some("LS-2025-004711")
    );
    for u in &r.lines[0].units {
        assert_eq!(u.warranty_end, chrono::NaiveDate::from_ymd_opt(2028, 1, 14));
    }
}

#[test]
fn lenient_opentrans_without_namespaces_and_compact_dates() {
    let doc = MINIMAL_RECEIPT_ACK
        .replace(" xmlns=\"http://www.opentrans.org/XMLSchema/2.1\" xmlns:bmecat=\"http://www.bmecat.org/bmecat/2005\"", "")
        .replace("bmecat:", "")
        .replace("2025-01-15T13:40:00+01:00", "20250115")
        .replace("<LINE_ITEM_ID>1</LINE_ITEM_ID>", "");
    let r = read(doc.as_bytes(), None).unwrap();
    assert_eq!(r.received_on, chrono::NaiveDate::from_ymd_opt(2025, 1, 15));
    assert_eq!(r.lines[0].line_id, "1");
    assert_eq!(r.serials().count(), 2);
}

#[test]
fn wrong_serial_count_names_the_line() {
    let doc = MINIMAL_RECEIPT_ACK.replace("<QUANTITY>2</QUANTITY>", "<QUANTITY>3</QUANTITY>");
    let err = read(doc.as_bytes(), None).unwrap_err();
    assert!(
        matches!(&err, ReadError::Invalid { field, message } if field == "lines/0/units" && message.contains("2 serial number(s) for quantity 3")),
        "{err:?}"
    );
}

#[test]
fn duplicate_serials_are_refused() {
    let doc = MINIMAL_RECEIPT_ACK.replace("PF3ABCD2", "PF3ABCD1");
    let err = read(doc.as_bytes(), None).unwrap_err();
    assert!(
        matches!(&err, ReadError::Invalid { message, .. } if message.contains("PF3ABCD1") && message.contains("twice")),
        "{err:?}"
    );
    let edi = String::from_utf8(sample("edifact_d96a_desadv_it_serials_AUTHORED.edi"))
        .unwrap()
        .replace("PF3ABCD2", "PF3ABCD1");
    assert!(matches!(
        read(edi.as_bytes(), None),
        Err(ReadError::Invalid { .. })
    ));
}

#[test]
fn hostile_and_broken_xml() {
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><DISPATCHNOTIFICATION>&b;</DISPATCHNOTIFICATION>"#;
    assert!(matches!(
        read(bomb.as_bytes(), None),
        Err(ReadError::Refused { .. })
    ));
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><DISPATCHNOTIFICATION>&x;</DISPATCHNOTIFICATION>"#;
    assert!(matches!(
        read(xxe.as_bytes(), None),
        Err(ReadError::Refused { .. })
    ));
    let truncated = &MINIMAL_RECEIPT_ACK[..MINIMAL_RECEIPT_ACK.len() / 2];
    assert!(matches!(
        read(truncated.as_bytes(), None),
        Err(ReadError::Malformed { .. })
    ));
    let no_id = MINIMAL_RECEIPT_ACK.replace(
        "<RECEIPTACKNOWLEDGEMENT_ID>WE-2025-000123</RECEIPTACKNOWLEDGEMENT_ID>",
        "",
    );
    let err = read(no_id.as_bytes(), None).unwrap_err();
    assert!(
        err.field().unwrap().ends_with("RECEIPTACKNOWLEDGEMENT_ID"),
        "{err:?}"
    );
    let bad_qty =
        MINIMAL_RECEIPT_ACK.replace("<QUANTITY>2</QUANTITY>", "<QUANTITY>zwei</QUANTITY>");
    let err = read(bad_qty.as_bytes(), None).unwrap_err();
    assert!(
        err.field()
            .unwrap()
            .ends_with("RECEIPTACKNOWLEDGEMENT_ITEM[1]/QUANTITY"),
        "{err:?}"
    );
}

#[test]
fn broken_edifact() {
    let good = String::from_utf8(sample("edifact_d96a_desadv_it_serials_AUTHORED.edi")).unwrap();
    // Truncated: the UNT count no longer matches (or the trailer is gone).
    let cut = good.replace("CNT+2:2'\n", "");
    assert!(matches!(
        read(cut.as_bytes(), None),
        Err(ReadError::Malformed { .. })
    ));
    let no_trailer: String = good.lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(read(no_trailer.as_bytes(), None).is_err());
    let wrong_count = good.replace("QTY+12:2:PCE", "QTY+12:3:PCE");
    assert!(matches!(
        read(wrong_count.as_bytes(), None),
        Err(ReadError::Invalid { .. })
    ));
    let orders = good.replace("DESADV:D:96A", "ORDERS:D:96A");
    assert!(matches!(
        read(orders.as_bytes(), None),
        Err(ReadError::Unsupported(_))
    ));
}

fn hub_json() -> serde_json::Value {
    serde_json::json!({
      "event_id": "6f1c2a3e-3b7d-4c5e-9a51-0c7d2b9e1f00",
      "event_type": "goods_receipt.completed",
      "occurred_at": "2025-01-15T13:40:00+01:00",
      "warehouse_id": "STR-01",
      "receipt": {
        "receipt_id": "WE-2025-000123",
        "supplier": { "id": "10000735", "name": "IT-Distribution GmbH", "gln": "4012345000009" },
        "dispatch_notification_id": "LS-2025-004711",
        "purchase_order_id": "PO-2025-0815",
        "end_customer": { "customer_id": "100234", "order_ref": "4500012345" },
        "lines": [
          { "line_id": "1", "po_line_id": "10", "supplier_pid": "123002", "manufacturer_pid": "20X60009GE",
            "gtin": "0195908483106", "description": "Lenovo ThinkPad T14 Gen 3", "quantity": 2, "unit": "C62",
            "units": [ { "serial_number": "PF3ABCD1", "warranty_end": "2028-01-14" },
                       { "serial_number": "PF3ABCD2", "warranty_end": "2028-01-14" } ] },
          { "line_id": "2", "po_line_id": "20", "supplier_pid": "MS-O365-BP-1Y", "description": "Microsoft 365 Business Premium 12M",
            "quantity": 1, "unit": "C62",
            "units": [ { "licence_key": "XXXXX-XXXXX-XXXXX", "licence_expiry": "2026-01-14" } ] }
        ]
      }
    })
}

#[test]
fn hub_json_example_from_the_docs() {
    let r = read(
        &serde_json::to_vec(&hub_json()).unwrap(),
        Some("application/json"),
    )
    .unwrap();
    assert_eq!(r.customer_id.as_deref(), Some("100234"));
    assert_eq!(r.order_refs, ["4500012345", "PO-2025-0815"]);
    assert_eq!(r.received_on, chrono::NaiveDate::from_ymd_opt(2025, 1, 15));
    assert_eq!(
        r.lines[1].units[0].licence_key.as_deref(),
        Some("XXXXX-XXXXX-XXXXX")
    );
}

#[test]
fn hub_json_errors_name_the_field() {
    let mut v = hub_json();
    v["receipt"]["lines"][0]["quantity"] = serde_json::json!(3);
    let err = read(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
    assert_eq!(err.field(), Some("/receipt/lines/0/units"), "{err:?}");

    let mut v = hub_json();
    v["receipt"]["lines"][1]["units"][0]["licence_expiry"] = serde_json::json!("14.01.2026");
    let err = read(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
    assert_eq!(
        err.field(),
        Some("/receipt/lines/1/units/0/licence_expiry"),
        "{err:?}"
    );

    let mut v = hub_json();
    v["receipt"]["lines"][0]["serial"] = serde_json::json!("x");
    let err = read(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
    assert!(
        err.field().unwrap().starts_with("/receipt/lines/0"),
        "{err:?}"
    );

    let mut v = hub_json();
    v["receipt"].as_object_mut().unwrap().remove("receipt_id");
    let err = read(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("receipt_id"), "{err:?}");

    assert!(matches!(
        read(b"{\"receipt\": ", None),
        Err(ReadError::Malformed { .. })
    ));
    assert!(matches!(
        read(b"hello", None),
        Err(ReadError::Unsupported(_))
    ));
    assert!(matches!(
        read(b"{}", Some("application/pdf")),
        Err(ReadError::Unsupported(_))
    ));
}

proptest::proptest! {
    /// Whatever arrives, the reader answers with a receipt or an error; it never panics.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = read(&body, None);
        let _ = read(&body, Some("application/xml"));
        let _ = read(&body, Some("application/EDIFACT"));
        let _ = read(&body, Some("application/json"));
    }
}

/// Cutting a valid EDIFACT interchange anywhere yields an error, never a shorter receipt.
/// Every cut is tried (the file is small), outside proptest: a missing sample fails once with
/// one line instead of being "shrunk" into a regression file in the checkout.
#[test]
fn truncated_edifact_is_never_accepted() {
    let good = sample("edifact_d96a_desadv_it_serials_AUTHORED.edi");
    let full = read(&good, None).expect("the authored DESADV reads");
    for cut in 1..good.len() {
        if let Ok(r) = read(&good[..cut], None) {
            assert_eq!(r, full, "a cut at byte {cut} was read differently");
        }
    }
}
