//! XRechnung 3.0 in UBL 2.1: `Invoice` (380) or `CreditNote` (381), elements in the schema's
//! strict order, no empty elements.

use crate::document::{Document, Party};
use crate::xml::{amount, number, Xml};

const INVOICE_NS: &str = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2";
const CREDIT_NOTE_NS: &str = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2";
const CAC: &str = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2";
const CBC: &str = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2";

fn party(x: &mut Xml, p: &Party, seller: bool) {
    x.open("cac:Party");
    if let Some(e) = &p.endpoint {
        x.leaf_with("cbc:EndpointID", &[("schemeID", "EM")], e);
    }
    if !seller {
        if let Some(id) = &p.id {
            x.open("cac:PartyIdentification");
            x.leaf("cbc:ID", id);
            x.close();
        }
    }
    x.open("cac:PostalAddress");
    x.leaf("cbc:StreetName", &p.street);
    x.leaf("cbc:CityName", &p.city);
    x.leaf("cbc:PostalZone", &p.postcode);
    x.open("cac:Country");
    x.leaf("cbc:IdentificationCode", &p.country);
    x.close();
    x.close();
    if let Some(v) = &p.vat_id {
        x.open("cac:PartyTaxScheme");
        x.leaf("cbc:CompanyID", v);
        x.open("cac:TaxScheme");
        x.leaf("cbc:ID", "VAT");
        x.close();
        x.close();
    }
    if let Some(t) = &p.tax_number {
        x.open("cac:PartyTaxScheme");
        x.leaf("cbc:CompanyID", t);
        x.open("cac:TaxScheme");
        x.leaf("cbc:ID", "FC");
        x.close();
        x.close();
    }
    x.open("cac:PartyLegalEntity");
    x.leaf("cbc:RegistrationName", &p.name);
    x.close();
    if p.contact_name.is_some() || p.contact_phone.is_some() || p.contact_email.is_some() {
        x.open("cac:Contact");
        x.leaf("cbc:Name", p.contact_name.as_deref().unwrap_or(""));
        x.leaf("cbc:Telephone", p.contact_phone.as_deref().unwrap_or(""));
        x.leaf(
            "cbc:ElectronicMail",
            p.contact_email.as_deref().unwrap_or(""),
        );
        x.close();
    }
    x.close();
}

/// Writes the document as UBL.
pub fn write(d: &Document) -> String {
    let cur = d.currency.as_str();
    let money = |x: &mut Xml, tag: &str, v| x.leaf_with(tag, &[("currencyID", cur)], &amount(v));
    let mut x = Xml::new();
    let (root, ns) = if d.credit_note {
        ("CreditNote", CREDIT_NOTE_NS)
    } else {
        ("Invoice", INVOICE_NS)
    };
    x.open_with(
        if d.credit_note {
            "CreditNote"
        } else {
            "Invoice"
        },
        &[("xmlns", ns), ("xmlns:cac", CAC), ("xmlns:cbc", CBC)],
    );
    let _ = root;
    x.leaf("cbc:CustomizationID", d.specification);
    x.leaf("cbc:ProfileID", crate::PEPPOL_BILLING);
    x.leaf("cbc:ID", &d.number);
    x.leaf("cbc:IssueDate", &d.issue_date.to_string());
    if !d.credit_note {
        x.leaf("cbc:DueDate", &d.due_date.to_string());
        x.leaf("cbc:InvoiceTypeCode", d.type_code);
    } else {
        x.leaf("cbc:CreditNoteTypeCode", d.type_code);
    }
    for n in &d.notes {
        x.leaf("cbc:Note", n);
    }
    x.leaf("cbc:DocumentCurrencyCode", cur);
    x.leaf("cbc:BuyerReference", &d.buyer_reference);
    x.open("cac:InvoicePeriod");
    x.leaf("cbc:StartDate", &d.period_start.to_string());
    x.leaf("cbc:EndDate", &d.period_end.to_string());
    x.close();
    if let Some(p) = &d.preceding {
        x.open("cac:BillingReference");
        x.open("cac:InvoiceDocumentReference");
        x.leaf("cbc:ID", p);
        x.close();
        x.close();
    }
    x.open("cac:ContractDocumentReference");
    x.leaf("cbc:ID", &d.contract_id);
    x.close();
    x.open("cac:AccountingSupplierParty");
    party(&mut x, &d.seller, true);
    x.close();
    x.open("cac:AccountingCustomerParty");
    party(&mut x, &d.buyer, false);
    x.close();
    x.open("cac:PaymentMeans");
    x.leaf("cbc:PaymentMeansCode", "58");
    x.leaf("cbc:PaymentID", &d.number);
    x.open("cac:PayeeFinancialAccount");
    x.leaf("cbc:ID", &d.iban);
    x.leaf("cbc:Name", &d.seller.name);
    if let Some(bic) = &d.bic {
        x.open("cac:FinancialInstitutionBranch");
        x.leaf("cbc:ID", bic);
        x.close();
    }
    x.close();
    x.close();
    if !d.payment_terms.trim().is_empty() {
        x.open("cac:PaymentTerms");
        x.leaf("cbc:Note", &d.payment_terms);
        x.close();
    }
    x.open("cac:TaxTotal");
    money(&mut x, "cbc:TaxAmount", d.tax);
    for b in &d.vat {
        x.open("cac:TaxSubtotal");
        money(&mut x, "cbc:TaxableAmount", b.base);
        money(&mut x, "cbc:TaxAmount", b.amount);
        x.open("cac:TaxCategory");
        x.leaf("cbc:ID", &b.category);
        x.leaf("cbc:Percent", &number(b.rate, 0));
        if let Some(r) = &b.exemption_reason {
            x.leaf("cbc:TaxExemptionReason", r);
        }
        x.open("cac:TaxScheme");
        x.leaf("cbc:ID", "VAT");
        x.close();
        x.close();
        x.close();
    }
    x.close();
    x.open("cac:LegalMonetaryTotal");
    money(&mut x, "cbc:LineExtensionAmount", d.net);
    money(&mut x, "cbc:TaxExclusiveAmount", d.net);
    money(&mut x, "cbc:TaxInclusiveAmount", d.gross);
    money(&mut x, "cbc:PayableAmount", d.payable);
    x.close();
    for l in &d.lines {
        x.open(if d.credit_note {
            "cac:CreditNoteLine"
        } else {
            "cac:InvoiceLine"
        });
        x.leaf("cbc:ID", &l.id);
        x.leaf_with(
            if d.credit_note {
                "cbc:CreditedQuantity"
            } else {
                "cbc:InvoicedQuantity"
            },
            &[("unitCode", &l.unit)],
            &number(l.quantity, 0),
        );
        money(&mut x, "cbc:LineExtensionAmount", l.net);
        x.open("cac:Item");
        x.leaf("cbc:Name", &l.name);
        x.open("cac:ClassifiedTaxCategory");
        x.leaf("cbc:ID", &l.category);
        x.leaf("cbc:Percent", &number(l.rate, 0));
        x.open("cac:TaxScheme");
        x.leaf("cbc:ID", "VAT");
        x.close();
        x.close();
        x.close();
        x.open("cac:Price");
        x.leaf_with(
            "cbc:PriceAmount",
            &[("currencyID", cur)],
            &number(l.price, 2),
        );
        if let Some(b) = l.base {
            // BT-149 / BT-150: the price is per `b` units (e.g. 60 minutes).
            x.leaf_with("cbc:BaseQuantity", &[("unitCode", &l.unit)], &number(b, 0));
        }
        x.close();
        x.close();
    }
    x.finish()
}
