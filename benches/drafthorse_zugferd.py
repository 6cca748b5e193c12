#!/usr/bin/env python3
"""The comparison side of `cargo bench --bench export_writers`: builds a ZUGFeRD (Factur-X
EN16931) document with PyPI `drafthorse` for every invoice of a JSON-lines file of canonical
invoices (as the hub stores them) and serializes it.

Prints one JSON object: invoices, seconds spent generating (model + XML, no validation) and,
for the first VALIDATE invoices (argv[2], default 1000), seconds with drafthorse's own XSD
validation (`serialize(schema="FACTUR-X_EN16931")`).
"""
import json
import sys
import time
from datetime import date
from decimal import Decimal

from drafthorse.models.accounting import ApplicableTradeTax
from drafthorse.models.document import Document
from drafthorse.models.party import TaxRegistration
from drafthorse.models.payment import PaymentMeans, PaymentTerms
from drafthorse.models.tradelines import LineItem
import xml.etree.ElementTree as ET


def d(s):
    return date.fromisoformat(s)


def build(inv):
    sign = Decimal(-1) if inv["kind"] == "credit_note" else Decimal(1)
    doc = Document()
    doc.context.guideline_parameter.id = "urn:cen.eu:en16931:2017"
    doc.header.id = inv["number"]
    doc.header.type_code = "381" if sign < 0 else "380"
    doc.header.issue_date_time = d(inv["issue_date"])
    seller = inv["seller"]
    s = doc.trade.agreement.seller
    s.name = seller["name"]
    s.address.postcode = seller["address"]["postcode"]
    s.address.line_one = seller["address"]["street"]
    s.address.city_name = seller["address"]["city"]
    s.address.country_id = seller["address"].get("country", "DE")
    s.tax_registrations.add(TaxRegistration(id=("VA", seller["vat_id"])))
    b = doc.trade.agreement.buyer
    b.name = inv["buyer"]["name"]
    b.address.postcode = inv["buyer"]["address"]["postcode"]
    b.address.line_one = inv["buyer"]["address"]["street"]
    b.address.city_name = inv["buyer"]["address"]["city"]
    b.address.country_id = inv["buyer"]["address"].get("country", "DE")
    doc.trade.settlement.currency_code = inv["currency"]
    pm = PaymentMeans()
    pm.type_code = "58"
    pm.payee_account.iban = seller["iban"]
    doc.trade.settlement.payment_means.add(pm)
    terms = PaymentTerms()
    terms.description = inv["payment_terms"]
    terms.due = d(inv["due_date"])
    doc.trade.settlement.terms.add(terms)
    for i, l in enumerate(inv["lines"], 1):
        li = LineItem()
        li.document.line_id = str(i)
        li.product.name = l["description"]
        li.agreement.net.amount = Decimal(l["unit_price"])
        li.delivery.billed_quantity = (Decimal(l["quantity"]) * sign, l["unit"])
        li.settlement.trade_tax.type_code = "VAT"
        li.settlement.trade_tax.category_code = l["vat_category"]
        li.settlement.trade_tax.rate_applicable_percent = Decimal(l["vat_rate"])
        li.settlement.monetary_summation.total_amount = Decimal(l["net"]) * sign
        doc.trade.items.add(li)
    for v in inv["vat"]:
        t = ApplicableTradeTax()
        t.calculated_amount = Decimal(v["amount"]) * sign
        t.basis_amount = Decimal(v["base"]) * sign
        t.type_code = "VAT"
        t.category_code = v["category"]
        t.rate_applicable_percent = Decimal(v["rate"])
        doc.trade.settlement.trade_tax.add(t)
    m = doc.trade.settlement.monetary_summation
    tot = inv["totals"]
    m.line_total = Decimal(tot["net"]) * sign
    m.tax_basis_total = Decimal(tot["net"]) * sign
    m.tax_total = (Decimal(tot["vat"]) * sign, inv["currency"])
    m.grand_total = Decimal(tot["gross"]) * sign
    m.due_amount = Decimal(tot["gross"]) * sign
    return doc


def main():
    path = sys.argv[1]
    validate = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    invoices = [json.loads(line) for line in open(path, encoding="utf-8")]
    t = time.process_time()
    size = 0
    for inv in invoices:
        size += len(ET.tostring(build(inv).to_etree(), "utf-8"))
    gen = time.process_time() - t
    t = time.process_time()
    for inv in invoices[:validate]:
        build(inv).serialize(schema="FACTUR-X_EN16931")
    val = time.process_time() - t
    print(json.dumps({"invoices": len(invoices), "generate_cpu_seconds": gen, "bytes": size,
                      "validated": min(validate, len(invoices)), "validate_cpu_seconds": val}))


if __name__ == "__main__":
    main()
