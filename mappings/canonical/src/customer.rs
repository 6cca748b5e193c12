//! Customers (Debitoren) and the seller: who is billed, where invoices and reports go.

use serde::{Deserialize, Serialize};

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub street: String,
    pub postcode: String,
    pub city: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    #[serde(default = "de")]
    pub country: String,
}

fn de() -> String {
    "DE".into()
}

/// A person to send something to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

/// Central billing: the branch's work goes on the customer's invoice; decentral: its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchBilling {
    #[default]
    Central,
    Decentral,
}

/// A branch (Filiale) of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub billing: BranchBilling,
}

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    /// Debitor number in accounting.
    pub debitor_number: String,
    /// DATEV debitor account (Personenkonto, e.g. 10001).
    pub datev_account: u32,
    pub name: String,
    pub address: Address,
    #[serde(default)]
    pub vat_id: Option<String>,
    /// Buyer reference (BT-10), e.g. a Leitweg-ID for public customers.
    #[serde(default)]
    pub buyer_reference: Option<String>,
    #[serde(default)]
    pub branches: Vec<Branch>,
    #[serde(default)]
    pub cost_centres: Vec<String>,
    /// Who receives the service report (Leistungsnachweis).
    #[serde(default)]
    pub report_recipient: Option<Contact>,
    /// Who is told when a contingent threshold is crossed.
    #[serde(default)]
    pub notification_contacts: Vec<Contact>,
    /// The account manager: receives warranty and licence reminders for the customer's assets.
    #[serde(default)]
    pub account_manager: Option<Contact>,
    /// The helpdesk organization id (e.g. Zammad `organization.id`).
    #[serde(default)]
    pub helpdesk_org_id: Option<String>,
    #[serde(default = "fourteen")]
    pub payment_terms_days: u32,
    /// Contact e-mail for invoices (BT-49 electronic address falls back to it).
    #[serde(default)]
    pub invoice_email: Option<String>,
}

fn fourteen() -> u32 {
    14
}

/// The seller (the Systemhaus itself) as printed on invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    pub name: String,
    pub address: Address,
    pub vat_id: String,
    #[serde(default)]
    pub tax_number: Option<String>,
    pub iban: String,
    #[serde(default)]
    pub bic: Option<String>,
    pub contact: Contact,
    #[serde(default)]
    pub phone: Option<String>,
}
