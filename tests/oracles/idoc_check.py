#!/usr/bin/env python3
"""Independent structure and arithmetic check of IDoc-XML (INVOIC02, ACC_DOCUMENT03).

No public XSD exists for these basic types (they are generated per SAP system with WE60), so
this checks what the project's SAP reference notes (sap-warehouse.md §1) document: IDoc-XML conventions (no
namespace, IDOC BEGIN="1", SEGMENT="1" everywhere, EDI_DC40 first, no empty fields, dates
YYYYMMDD), the field lengths of the segments used, the header/item segment order, and the sums:
INVOIC02 Σ NETWR ± header charges (E1EDK05) = E1EDS01 010, Σ E1EDK04 MWSBT = 005, 010 + 005 = 011, tax per rate =
rate × net of that rate, per item MENGE × VPREI ÷ PEINH = NETWR (VPREI is the price per PEINH
units); ACC_DOCUMENT03 one E1BPACCR09 per item, Σ AMT_DOCCUR = 0, tax =
rate × base. Prints one JSON line per file; exit 1 on any error.
"""
import datetime
import json
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal, ROUND_HALF_UP

LENGTHS = {
    "EDI_DC40": {"TABNAM": 10, "MANDT": 3, "DOCNUM": 16, "DIRECT": 1, "IDOCTYP": 30, "MESTYP": 30, "SNDPOR": 10,
                 "SNDPRT": 2, "SNDPRN": 10, "RCVPOR": 10, "RCVPRT": 2, "RCVPRN": 10, "CREDAT": 8, "CRETIM": 6, "ARCKEY": 70},
    "E1EDK01": {"CURCY": 3, "HWAER": 3, "WKURS": 12, "ZTERM": 17, "KUNDEUINR": 20, "EIGENUINR": 20, "BSART": 4, "BELNR": 35},
    "E1EDKA1": {"PARVW": 3, "PARTN": 17, "NAME1": 35, "NAME2": 35, "STRAS": 35, "ORT01": 35, "PSTLZ": 9, "LAND1": 3, "IHREZ": 30},
    "E1EDK02": {"QUALF": 3, "BELNR": 35, "DATUM": 8},
    "E1EDK03": {"IDDAT": 3, "DATUM": 8},
    "E1EDK04": {"MWSKZ": 7, "MSATZ": 17, "MWSBT": 18},
    "E1EDK18": {"QUALF": 3},
    "E1EDP01": {"POSEX": 6, "MENGE": 15, "MENEE": 3, "VPREI": 15, "PEINH": 9, "NETWR": 18, "CURCY": 3},
    "E1EDP19": {"QUALF": 3, "IDTNR": 35, "KTEXT": 70, "MFRPN": 42},
    "E1EDP26": {"QUALF": 3, "BETRG": 18},
    "E1EDP04": {"MWSKZ": 7, "MSATZ": 17, "MWSBT": 18},
    "E1EDPT2": {"TDLINE": 70},
    "E1EDS01": {"SUMID": 3, "SUMME": 18, "WAERQ": 3},
    "E1BPACHE09": {"BUS_ACT": 4, "USERNAME": 12, "HEADER_TXT": 25, "COMP_CODE": 4, "DOC_DATE": 8, "PSTNG_DATE": 8,
                   "DOC_TYPE": 2, "REF_DOC_NO": 16},
    "E1BPACGL09": {"ITEMNO_ACC": 10, "GL_ACCOUNT": 10, "ITEM_TEXT": 50, "TAX_CODE": 2},
    "E1BPACAR09": {"ITEMNO_ACC": 10, "CUSTOMER": 10, "BLINE_DATE": 8, "PMNTTRMS": 4, "ALLOC_NMBR": 18, "ITEM_TEXT": 50},
    "E1BPACTX09": {"ITEMNO_ACC": 10, "TAX_CODE": 2, "ACCT_KEY": 3, "COND_KEY": 4},
    "E1BPACCR09": {"ITEMNO_ACC": 10, "CURR_TYPE": 2, "CURRENCY": 5},
}
INVOIC_HEADER_ORDER = ["EDI_DC40", "E1EDK01", "E1EDKA1", "E1EDK02", "E1EDK03", "E1EDK05", "E1EDK04", "E1EDK17",
                       "E1EDK18", "E1EDK23", "E1EDK28", "E1EDKT1", "E1EDK14", "E1EDP01", "E1EDS01"]
ITEM_ORDER = ["E1EDP02", "E1EDP03", "E1EDP19", "E1EDP26", "E1EDP05", "E1EDP04", "E1EDPT1"]
ACC_ORDER = ["EDI_DC40", "E1BPACHE09", "E1BPACGL09", "E1BPACAR09", "E1BPACAP09", "E1BPACTX09", "E1BPACCR09"]
DATE_FIELDS = {"DATUM", "CREDAT", "DOC_DATE", "PSTNG_DATE", "BLINE_DATE"}


def dec(s):
    return Decimal(s.strip())


def cents(d):
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def segments(parent):
    return [c for c in parent if c.get("SEGMENT") is not None]


def check_order(children, order, where, errors):
    last = -1
    for c in children:
        if c.tag not in order:
            errors.append(f"{where}: unexpected segment {c.tag}")
            continue
        i = order.index(c.tag)
        if i < last:
            errors.append(f"{where}: {c.tag} out of order")
        last = i


def check_fields(seg, errors):
    for f in seg:
        if f.get("SEGMENT") is not None:
            check_fields(f, errors)
            continue
        text = f.text or ""
        if not text.strip():
            errors.append(f"{seg.tag}-{f.tag} is empty")
        max_len = LENGTHS.get(seg.tag, {}).get(f.tag)
        if max_len and len(text) > max_len:
            errors.append(f"{seg.tag}-{f.tag} longer than {max_len}: {text!r}")
        if f.tag in DATE_FIELDS and text.strip():
            try:
                datetime.datetime.strptime(text, "%Y%m%d")
            except ValueError:
                errors.append(f"{seg.tag}-{f.tag} not YYYYMMDD: {text!r}")


def check(path):
    errors = []
    root = ET.parse(path).getroot()
    if "}" in root.tag:
        errors.append("IDoc-XML has no namespace")
    idoc = root.find("IDOC")
    if idoc is None or idoc.get("BEGIN") != "1":
        return [f"missing <IDOC BEGIN=\"1\">"]
    for el in idoc.iter():
        if el is idoc:
            continue
        if el.tag.startswith("E1") or el.tag == "EDI_DC40":
            if el.get("SEGMENT") != "1":
                errors.append(f"{el.tag} without SEGMENT=\"1\"")
    segs = segments(idoc)
    if not segs or segs[0].tag != "EDI_DC40":
        errors.append("EDI_DC40 must come first")
    for s in segs:
        check_fields(s, errors)
    dc = segs[0]
    if dc.findtext("IDOCTYP") != root.tag:
        errors.append(f"IDOCTYP {dc.findtext('IDOCTYP')} ≠ root {root.tag}")
    if root.tag == "INVOIC02":
        check_order(segs, INVOIC_HEADER_ORDER, "INVOIC02", errors)
        items = [s for s in segs if s.tag == "E1EDP01"]
        net = Decimal(0)
        by_rate = {}
        for it in items:
            check_order(segments(it), ITEM_ORDER, f"E1EDP01 {it.findtext('POSEX')}", errors)
            n = dec(it.findtext("NETWR"))
            net += n
            rate = dec(it.find("E1EDP04").findtext("MSATZ"))
            by_rate[rate] = by_rate.get(rate, Decimal(0)) + n
            # VPREI is the price per PEINH units (SAP price unit, default 1).
            peinh = dec(it.findtext("PEINH") or "1")
            if peinh <= 0:
                errors.append(f"item {it.findtext('POSEX')}: PEINH {peinh} is not positive")
            elif cents(dec(it.findtext("MENGE")) * dec(it.findtext("VPREI")) / peinh) != n:
                errors.append(f"item {it.findtext('POSEX')}: MENGE × VPREI ÷ PEINH ≠ NETWR")
        for c in (s for s in segs if s.tag == "E1EDK05"):
            amt = dec(c.findtext("BETRG")) * (-1 if c.findtext("ALCKZ") == "-" else 1)
            net += amt
            if c.findtext("MSATZ"):
                r = dec(c.findtext("MSATZ"))
                by_rate[r] = by_rate.get(r, Decimal(0)) + amt
        tax = Decimal(0)
        for t in (s for s in segs if s.tag == "E1EDK04"):
            r, a = dec(t.findtext("MSATZ")), dec(t.findtext("MWSBT"))
            tax += a
            if cents(by_rate.get(r, Decimal(0)) * r / 100) != a:
                errors.append(f"E1EDK04 {r} %: MWSBT {a} ≠ rate × net {by_rate.get(r)}")
        sums = {s.findtext("SUMID"): dec(s.findtext("SUMME")) for s in segs if s.tag == "E1EDS01"}
        if sums.get("010") != net:
            errors.append(f"E1EDS01 010 {sums.get('010')} ≠ Σ NETWR {net}")
        if sums.get("005") != tax:
            errors.append(f"E1EDS01 005 {sums.get('005')} ≠ Σ MWSBT {tax}")
        if sums.get("011") != sums.get("010", 0) + sums.get("005", 0):
            errors.append("E1EDS01 011 ≠ 010 + 005")
    elif root.tag == "ACC_DOCUMENT03":
        check_order(segs, ACC_ORDER, "ACC_DOCUMENT03", errors)
        items = [s.findtext("ITEMNO_ACC") for s in segs if s.tag in ("E1BPACGL09", "E1BPACAR09", "E1BPACAP09", "E1BPACTX09")]
        amounts = {}
        for c in (s for s in segs if s.tag == "E1BPACCR09"):
            amounts.setdefault(c.findtext("ITEMNO_ACC"), []).append(c)
        for i in items:
            if len(amounts.get(i, [])) != 1:
                errors.append(f"item {i}: expected one E1BPACCR09, got {len(amounts.get(i, []))}")
        total = sum(dec(c.findtext("AMT_DOCCUR")) for cs in amounts.values() for c in cs)
        if total != 0:
            errors.append(f"document does not balance: Σ AMT_DOCCUR = {total}")
        for t in (s for s in segs if s.tag == "E1BPACTX09"):
            c = amounts.get(t.findtext("ITEMNO_ACC"), [None])[0]
            if c is not None and c.findtext("AMT_BASE"):
                r = dec(t.findtext("TAX_RATE"))
                if cents(dec(c.findtext("AMT_BASE")) * r / 100) != dec(c.findtext("AMT_DOCCUR")):
                    errors.append(f"tax item {t.findtext('ITEMNO_ACC')}: amount ≠ base × {r} %")
    else:
        errors.append(f"unknown basic type {root.tag}")
    return errors


if __name__ == "__main__":
    failed = False
    for p in sys.argv[1:]:
        errs = check(p)
        failed |= bool(errs)
        print(json.dumps({"file": p, "errors": errs}, ensure_ascii=False))
    sys.exit(1 if failed else 0)
