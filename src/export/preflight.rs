//! Pre-export checks: everything that would stop an invoice from being delivered or booked in
//! a format, checked on a draft before it gets a number.
//!
//! [`preflight`] is pure (no I/O): the invoice run calls it at preview with the draft invoice
//! of a target and the formats of every configured export target; each [`Blocker`] names the
//! format, the rule id and the reason, so the run can block that target (and only that one)
//! before numbering. What is checked, per format:
//!
//! - every format: the buyer's postal address (street, post code, city; §14 Abs. 4 Nr. 1
//!   UStG) — rule `DK-BUYER-ADDRESS`;
//! - the e-invoice formats (`xrechnung-ubl`, `xrechnung-cii`, `zugferd` with the target's
//!   profile): the checks of `mappings/einvoice/src/check.rs`, with their EN 16931 / XRechnung
//!   rule ids (`PEPPOL-EN16931-R010`, `BR-DE-15`, …);
//! - `datev-extf`, `datev-xml`: `[datev]` configured (`DK-DATEV-SETTINGS`), the buyer's DATEV
//!   debitor account is a personal account for the account length (`DK-DATEV-ACCOUNT`);
//! - `sap-invoic02`, `sap-acc-document`: `[sap]` configured (`DK-SAP-SETTINGS`), the debitor
//!   number present (`DK-DEBITOR-NUMBER`);
//! - booking formats: a dry render with the real writers (no revenue account or tax code for a
//!   VAT rate, a value too long for its IDoc field, …) — rule `DK-WRITER`.
//!
//! Booking formats (DATEV, SAP) are never blocked by an e-invoice rule: `datev-xml` carries
//! the XRechnung only when it passes (see [`super::render`]).
//!
//! A draft without a number is checked as if numbered (`PREVIEW`), so BR-02 does not fire.

use super::{ExportError, ExportFormat, ExportSettings};
use canonical::invoice::Invoice;
use serde::{Deserialize, Serialize};

/// Rule id: the buyer's postal address is incomplete.
pub const BUYER_ADDRESS: &str = "DK-BUYER-ADDRESS";
/// Rule id: a DATEV format without `[datev]`.
pub const DATEV_SETTINGS: &str = "DK-DATEV-SETTINGS";
/// Rule id: the buyer's DATEV debitor account is missing or not a personal account.
pub const DATEV_ACCOUNT: &str = "DK-DATEV-ACCOUNT";
/// Rule id: an SAP format without `[sap]`.
pub const SAP_SETTINGS: &str = "DK-SAP-SETTINGS";
/// Rule id: the buyer has no debitor number.
pub const DEBITOR_NUMBER: &str = "DK-DEBITOR-NUMBER";
/// Rule id: the format's writer refuses the invoice (dry render).
pub const WRITER: &str = "DK-WRITER";
/// Rule id: a target names a format that does not exist.
pub const UNKNOWN_FORMAT: &str = "DK-FORMAT";

/// One reason why an invoice cannot be delivered in one format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    /// The format's config name (`xrechnung-ubl`, `datev-extf`, …).
    pub format: String,
    /// The rule id (`PEPPOL-EN16931-R010`, `DK-DATEV-ACCOUNT`, …).
    pub rule: String,
    pub reason: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [{}] {}", self.format, self.rule, self.reason)
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// The e-invoice format an export format writes, if it is one.
pub fn einvoice_format(format: ExportFormat, s: &ExportSettings) -> Option<einvoice::Format> {
    match format {
        ExportFormat::XrechnungUbl => Some(einvoice::Format::XrechnungUbl),
        ExportFormat::XrechnungCii => Some(einvoice::Format::XrechnungCii),
        ExportFormat::Zugferd => Some(s.zugferd),
        _ => None,
    }
}

/// Whether a format is a booking format (DATEV, SAP): never blocked by an e-invoice rule.
pub fn is_booking(format: ExportFormat) -> bool {
    matches!(
        format,
        ExportFormat::DatevExtf
            | ExportFormat::DatevXml
            | ExportFormat::SapInvoic02
            | ExportFormat::SapAccDocument
    )
}

/// Everything that would stop `invoice` from being delivered in each of `formats`; empty when
/// it can be delivered in all of them. Pure; the order is the order of `formats`.
pub fn preflight(
    invoice: &Invoice,
    formats: &[ExportFormat],
    settings: &ExportSettings,
) -> Vec<Blocker> {
    let mut inv = invoice.clone();
    if blank(&inv.number) {
        inv.number = "PREVIEW".into();
    }
    let mut out = Vec::new();
    for &format in formats {
        let mut block = |rule: &str, reason: String| {
            out.push(Blocker {
                format: format.name().to_string(),
                rule: rule.to_string(),
                reason,
            })
        };
        let a = &inv.buyer.address;
        let missing: Vec<&str> = [
            ("street", &a.street),
            ("postcode", &a.postcode),
            ("city", &a.city),
        ]
        .into_iter()
        .filter(|(_, v)| blank(v))
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            block(
                BUYER_ADDRESS,
                format!(
                    "customer {}: the address has no {}",
                    inv.buyer.id,
                    missing.join(", ")
                ),
            );
        }
        if let Some(f) = einvoice_format(format, settings) {
            for v in einvoice::check(&inv, f) {
                block(v.rule, format!("{}: {}", v.term, v.message));
            }
            continue;
        }
        match format {
            ExportFormat::DatevExtf | ExportFormat::DatevXml => {
                let Some(d) = &settings.datev else {
                    block(
                        DATEV_SETTINGS,
                        "`[datev]` is not configured (consultant_number, client_number)".into(),
                    );
                    continue;
                };
                let len = u32::from(d.account_length.clamp(4, 8));
                let (lo, hi) = (10u32.pow(len), 7 * 10u32.pow(len) - 1);
                if !(lo..=hi).contains(&inv.buyer.datev_account) {
                    block(
                        DATEV_ACCOUNT,
                        format!(
                            "customer {}: DATEV debitor account {} is not a personal account \
                             ({lo}–{hi} for account length {})",
                            inv.buyer.id, inv.buyer.datev_account, d.account_length
                        ),
                    );
                    continue;
                }
            }
            ExportFormat::SapInvoic02 | ExportFormat::SapAccDocument => {
                if settings.sap.is_none() {
                    block(SAP_SETTINGS, "`[sap]` is not configured".into());
                    continue;
                }
                if blank(&inv.buyer.debitor_number) {
                    block(
                        DEBITOR_NUMBER,
                        format!("customer {}: no debitor number", inv.buyer.id),
                    );
                    continue;
                }
            }
            _ => {}
        }
        // Dry render with the real writer.
        let result = match format {
            ExportFormat::DatevExtf => match &settings.datev {
                Some(d) => super::datev_extf_files(
                    d,
                    std::slice::from_ref(&inv),
                    super::sink::deterministic_time(std::slice::from_ref(&inv)),
                )
                .map(|_| ())
                .map_err(|e| format!("{e:#}")),
                None => Ok(()),
            },
            _ => super::render(format, &inv, settings)
                .map(|_| ())
                .map_err(|e| match e {
                    ExportError::Rules { detail, .. } => detail,
                    other => other.to_string(),
                }),
        };
        if let Err(reason) = result {
            block(WRITER, reason);
        }
    }
    out
}

/// [`preflight`] for the formats of a configured target (by name); an unknown format name is
/// a blocker of its own (`DK-FORMAT`).
pub fn preflight_target(
    invoice: &Invoice,
    target: &crate::config::ExportTarget,
    cfg: &crate::config::Config,
) -> Vec<Blocker> {
    let settings = ExportSettings::from_config(cfg, &target.zugferd_profile);
    let mut formats = Vec::new();
    let mut out = Vec::new();
    for name in &target.formats {
        match name.parse::<ExportFormat>() {
            Ok(f) => formats.push(f),
            Err(reason) => out.push(Blocker {
                format: name.clone(),
                rule: UNKNOWN_FORMAT.into(),
                reason,
            }),
        }
    }
    out.extend(preflight(invoice, &formats, &settings));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::export::test_fixtures as fixtures;

    fn settings() -> ExportSettings {
        ExportSettings {
            datev: Some(datev::ExtfSettings {
                consultant_number: 29098,
                client_number: 55003,
                fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
                account_length: 4,
                chart: datev::Chart::Skr03,
                exported_by: "drehkreuz".into(),
            }),
            sap: Some(
                serde_json::from_value(serde_json::json!({
                    "sender_port": "DREHKREUZ", "sender_partner": "DREHKREUZ",
                    "receiver_port": "SAPP01", "receiver_partner": "P01CLNT100",
                    "revenue_accounts": {"19": "8400", "7": "8300"},
                    "tax_codes": {"19": "A1", "7": "A2"}
                }))
                .unwrap(),
            ),
            zugferd: einvoice::Format::ZugferdEn16931,
        }
    }

    fn rules(b: &[Blocker], format: ExportFormat) -> Vec<&str> {
        b.iter()
            .filter(|x| x.format == format.name())
            .map(|x| x.rule.as_str())
            .collect()
    }

    #[test]
    fn a_clean_draft_passes_every_format_even_unnumbered() {
        let mut inv = fixtures::invoice();
        inv.number = String::new();
        let b = preflight(&inv, &ExportFormat::ALL, &settings());
        assert!(b.is_empty(), "{b:?}");
    }

    #[test]
    fn a_missing_invoice_email_blocks_only_the_einvoice_formats() {
        let mut inv = fixtures::invoice();
        inv.buyer.invoice_email = None;
        inv.buyer.report_recipient = None;
        let b = preflight(&inv, &ExportFormat::ALL, &settings());
        for f in [
            ExportFormat::XrechnungUbl,
            ExportFormat::XrechnungCii,
            ExportFormat::Zugferd,
        ] {
            assert_eq!(rules(&b, f), vec!["PEPPOL-EN16931-R010"], "{f}: {b:?}");
        }
        for f in ExportFormat::ALL.into_iter().filter(|f| is_booking(*f)) {
            assert!(rules(&b, f).is_empty(), "{f}: {b:?}");
        }
    }

    #[test]
    fn address_datev_account_debitor_and_settings_are_named() {
        let mut inv = fixtures::invoice();
        inv.buyer.address.street = " ".into();
        inv.buyer.datev_account = 0;
        inv.buyer.debitor_number = String::new();
        let b = preflight(&inv, &ExportFormat::ALL, &settings());
        for f in ExportFormat::ALL {
            assert!(rules(&b, f).contains(&BUYER_ADDRESS), "{f}: {b:?}");
        }
        assert!(rules(&b, ExportFormat::DatevExtf).contains(&DATEV_ACCOUNT));
        assert!(rules(&b, ExportFormat::DatevXml).contains(&DATEV_ACCOUNT));
        assert!(rules(&b, ExportFormat::SapInvoic02).contains(&DEBITOR_NUMBER));
        assert!(rules(&b, ExportFormat::SapAccDocument).contains(&DEBITOR_NUMBER));

        let none = ExportSettings {
            datev: None,
            sap: None,
            zugferd: einvoice::Format::ZugferdEn16931,
        };
        let b = preflight(&fixtures::invoice(), &ExportFormat::ALL, &none);
        assert_eq!(rules(&b, ExportFormat::DatevExtf), vec![DATEV_SETTINGS]);
        assert_eq!(rules(&b, ExportFormat::SapInvoic02), vec![SAP_SETTINGS]);
        assert!(rules(&b, ExportFormat::XrechnungUbl).is_empty());
    }

    #[test]
    fn a_writer_refusal_is_a_blocker() {
        // No revenue G/L account for 7 % in [sap]: ACC_DOCUMENT03 cannot be written.
        let mut s = settings();
        if let Some(sap) = s.sap.as_mut() {
            sap.revenue_accounts.remove("7");
        }
        let b = preflight(&fixtures::invoice(), &[ExportFormat::SapAccDocument], &s);
        assert_eq!(
            rules(&b, ExportFormat::SapAccDocument),
            vec![WRITER],
            "{b:?}"
        );
    }

    #[test]
    fn unknown_formats_of_a_target_are_blockers() {
        let target = crate::config::ExportTarget {
            name: "t".into(),
            formats: vec!["datev-extf".into(), "pdf".into()],
            dir: None,
            url: None,
            token: None,
            zugferd_profile: "en16931".into(),
        };
        let b = preflight_target(
            &fixtures::invoice(),
            &target,
            &crate::config::Config::default(),
        );
        assert_eq!(
            b.iter().map(|x| x.rule.as_str()).collect::<Vec<_>>(),
            vec![UNKNOWN_FORMAT, DATEV_SETTINGS]
        );
    }
}
