//! UN/CEFACT Cross Industry Invoice (D16B) as XRechnung 3.0 or ZUGFeRD 2.3 (profiles EN16931
//! and XRECHNUNG): the same document with another specification identifier (BT-24). Dates are
//! `format="102"` (`YYYYMMDD`); elements in the schema's order.

use crate::document::{Document, Party};
use crate::xml::{amount, number, Xml};

const RSM: &str = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100";
const RAM: &str =
    "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100";
const UDT: &str = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100";
const QDT: &str = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100";

fn date(x: &mut Xml, tag: &'static str, d: chrono::NaiveDate) {
    x.open(tag);
    x.leaf_with(
        "udt:DateTimeString",
        &[("format", "102")],
        &d.format("%Y%m%d").to_string(),
    );
    x.close();
}

fn party(x: &mut Xml, tag: &'static str, p: &Party, seller: bool) {
    x.open(tag);
    if !seller {
        if let Some(id) = &p.id {
            x.leaf("ram:ID", id);
        }
    }
    x.leaf("ram:Name", &p.name);
    if p.contact_name.is_some() || p.contact_phone.is_some() || p.contact_email.is_some() {
        x.open("ram:DefinedTradeContact");
        x.leaf("ram:PersonName", p.contact_name.as_deref().unwrap_or(""));
        if let Some(ph) = &p.contact_phone {
            x.open("ram:TelephoneUniversalCommunication");
            x.leaf("ram:CompleteNumber", ph);
            x.close();
        }
        if let Some(e) = &p.contact_email {
            x.open("ram:EmailURIUniversalCommunication");
            x.leaf("ram:URIID", e);
            x.close();
        }
        x.close();
    }
    x.open("ram:PostalTradeAddress");
    x.leaf("ram:PostcodeCode", &p.postcode);
    x.leaf("ram:LineOne", &p.street);
    x.leaf("ram:CityName", &p.city);
    x.leaf("ram:CountryID", &p.country);
    x.close();
    if let Some(e) = &p.endpoint {
        x.open("ram:URIUniversalCommunication");
        x.leaf_with("ram:URIID", &[("schemeID", "EM")], e);
        x.close();
    }
    if let Some(v) = &p.vat_id {
        x.open("ram:SpecifiedTaxRegistration");
        x.leaf_with("ram:ID", &[("schemeID", "VA")], v);
        x.close();
    }
    if let Some(t) = &p.tax_number {
        x.open("ram:SpecifiedTaxRegistration");
        x.leaf_with("ram:ID", &[("schemeID", "FC")], t);
        x.close();
    }
    x.close();
}

/// Writes the document as CII.
pub fn write(d: &Document) -> String {
    let cur = d.currency.as_str();
    let mut x = Xml::new();
    x.open_with(
        "rsm:CrossIndustryInvoice",
        &[
            ("xmlns:rsm", RSM),
            ("xmlns:ram", RAM),
            ("xmlns:qdt", QDT),
            ("xmlns:udt", UDT),
        ],
    );
    x.open("rsm:ExchangedDocumentContext");
    x.open("ram:BusinessProcessSpecifiedDocumentContextParameter");
    x.leaf("ram:ID", crate::PEPPOL_BILLING);
    x.close();
    x.open("ram:GuidelineSpecifiedDocumentContextParameter");
    x.leaf("ram:ID", d.specification);
    x.close();
    x.close();
    x.open("rsm:ExchangedDocument");
    x.leaf("ram:ID", &d.number);
    x.leaf("ram:TypeCode", d.type_code);
    date(&mut x, "ram:IssueDateTime", d.issue_date);
    for n in &d.notes {
        x.open("ram:IncludedNote");
        x.leaf("ram:Content", n);
        x.close();
    }
    x.close();
    x.open("rsm:SupplyChainTradeTransaction");
    for l in &d.lines {
        x.open("ram:IncludedSupplyChainTradeLineItem");
        x.open("ram:AssociatedDocumentLineDocument");
        x.leaf("ram:LineID", &l.id);
        x.close();
        x.open("ram:SpecifiedTradeProduct");
        x.leaf("ram:Name", &l.name);
        x.close();
        x.open("ram:SpecifiedLineTradeAgreement");
        x.open("ram:NetPriceProductTradePrice");
        x.leaf("ram:ChargeAmount", &number(l.price, 2));
        if let Some(b) = l.base {
            // BT-149 / BT-150: the price is per `b` units (e.g. 60 minutes).
            x.leaf_with("ram:BasisQuantity", &[("unitCode", &l.unit)], &number(b, 0));
        }
        x.close();
        x.close();
        x.open("ram:SpecifiedLineTradeDelivery");
        x.leaf_with(
            "ram:BilledQuantity",
            &[("unitCode", &l.unit)],
            &number(l.quantity, 0),
        );
        x.close();
        x.open("ram:SpecifiedLineTradeSettlement");
        x.open("ram:ApplicableTradeTax");
        x.leaf("ram:TypeCode", "VAT");
        x.leaf("ram:CategoryCode", &l.category);
        x.leaf("ram:RateApplicablePercent", &number(l.rate, 0));
        x.close();
        x.open("ram:SpecifiedTradeSettlementLineMonetarySummation");
        x.leaf("ram:LineTotalAmount", &amount(l.net));
        x.close();
        x.close();
        x.close();
    }
    x.open("ram:ApplicableHeaderTradeAgreement");
    x.leaf("ram:BuyerReference", &d.buyer_reference);
    party(&mut x, "ram:SellerTradeParty", &d.seller, true);
    party(&mut x, "ram:BuyerTradeParty", &d.buyer, false);
    x.open("ram:ContractReferencedDocument");
    x.leaf("ram:IssuerAssignedID", &d.contract_id);
    x.close();
    x.close();
    x.empty("ram:ApplicableHeaderTradeDelivery");
    x.open("ram:ApplicableHeaderTradeSettlement");
    x.leaf("ram:PaymentReference", &d.number);
    x.leaf("ram:InvoiceCurrencyCode", cur);
    x.open("ram:SpecifiedTradeSettlementPaymentMeans");
    x.leaf("ram:TypeCode", "58");
    x.open("ram:PayeePartyCreditorFinancialAccount");
    x.leaf("ram:IBANID", &d.iban);
    x.leaf("ram:AccountName", &d.seller.name);
    x.close();
    if let Some(bic) = &d.bic {
        x.open("ram:PayeeSpecifiedCreditorFinancialInstitution");
        x.leaf("ram:BICID", bic);
        x.close();
    }
    x.close();
    for b in &d.vat {
        x.open("ram:ApplicableTradeTax");
        x.leaf("ram:CalculatedAmount", &amount(b.amount));
        x.leaf("ram:TypeCode", "VAT");
        if let Some(r) = &b.exemption_reason {
            x.leaf("ram:ExemptionReason", r);
        }
        x.leaf("ram:BasisAmount", &amount(b.base));
        x.leaf("ram:CategoryCode", &b.category);
        x.leaf("ram:RateApplicablePercent", &number(b.rate, 0));
        x.close();
    }
    x.open("ram:BillingSpecifiedPeriod");
    date(&mut x, "ram:StartDateTime", d.period_start);
    date(&mut x, "ram:EndDateTime", d.period_end);
    x.close();
    x.open("ram:SpecifiedTradePaymentTerms");
    x.leaf("ram:Description", &d.payment_terms);
    if !d.credit_note {
        date(&mut x, "ram:DueDateDateTime", d.due_date);
    }
    x.close();
    x.open("ram:SpecifiedTradeSettlementHeaderMonetarySummation");
    x.leaf("ram:LineTotalAmount", &amount(d.net));
    x.leaf("ram:TaxBasisTotalAmount", &amount(d.net));
    x.leaf_with("ram:TaxTotalAmount", &[("currencyID", cur)], &amount(d.tax));
    x.leaf("ram:GrandTotalAmount", &amount(d.gross));
    x.leaf("ram:DuePayableAmount", &amount(d.payable));
    x.close();
    if let Some(p) = &d.preceding {
        x.open("ram:InvoiceReferencedDocument");
        x.leaf("ram:IssuerAssignedID", p);
        x.close();
    }
    x.close();
    x.close();
    x.finish()
}
