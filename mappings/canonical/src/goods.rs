//! Goods receipts and the assets they create.
//!
//! A [`GoodsReceipt`] is what the warehouse reports when hardware or licences from a distributor
//! arrive, whatever format it came in (the hub's JSON, openTRANS, EDIFACT). Every physical unit
//! is one [`AssetUnit`], so "serial count equals quantity" can be checked and every unit becomes
//! one asset of the customer. Dates are calendar dates (the documents carry no time zone that
//! matters for warranty ends).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The document a receipt was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptFormat {
    /// The hub's own JSON (`docs/warehouse.md`).
    HubJson,
    /// openTRANS 2.1 DISPATCHNOTIFICATION (Lieferavis).
    OpentransDispatchNotification,
    /// openTRANS 2.1 RECEIPTACKNOWLEDGEMENT (Wareneingangsbestätigung).
    OpentransReceiptAcknowledgement,
    /// UN/EDIFACT D.96A DESADV.
    EdifactDesadv,
    /// UN/EDIFACT D.96A RECADV.
    EdifactRecadv,
}

impl ReceiptFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptFormat::HubJson => "hub_json",
            ReceiptFormat::OpentransDispatchNotification => "opentrans_dispatchnotification",
            ReceiptFormat::OpentransReceiptAcknowledgement => "opentrans_receiptacknowledgement",
            ReceiptFormat::EdifactDesadv => "edifact_desadv",
            ReceiptFormat::EdifactRecadv => "edifact_recadv",
        }
    }
}

/// A business partner named in a receipt (supplier, buyer, delivery party).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gln: Option<String>,
}

/// One delivered unit: a device with its serial number, or a licence with its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetUnit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// A reference to the licence key or contract (never the secret key material itself
    /// if the sender can avoid it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warranty_end: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence_expiry: Option<NaiveDate>,
}

/// One line of a receipt: an article and its units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptLine {
    pub line_id: String,
    /// The purchase order this line belongs to and its line there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_line_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer_pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub quantity: Decimal,
    /// UN/ECE Rec. 20 unit code, e.g. `C62` (piece).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// One entry per physical unit (empty for goods not counted in pieces, e.g. cable by metre).
    #[serde(default)]
    pub units: Vec<AssetUnit>,
}

impl ReceiptLine {
    /// The article number used to tell assets apart: supplier's, else manufacturer's, else GTIN.
    pub fn article(&self) -> Option<&str> {
        self.supplier_pid
            .as_deref()
            .or(self.manufacturer_pid.as_deref())
            .or(self.gtin.as_deref())
    }
}

/// A goods receipt in the hub's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsReceipt {
    /// The document's own number (receipt, dispatch notification or DESADV number).
    pub receipt_id: String,
    pub format: ReceiptFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_date: Option<NaiveDate>,
    /// When the goods arrived (receipt date, else delivery or despatch date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_on: Option<NaiveDate>,
    #[serde(default)]
    pub supplier: Party,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_notification_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<String>,
    /// The end customer's id in the hub, when the document names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Order references that may identify the end customer (purchase and customer orders).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_refs: Vec<String>,
    /// Party ids of the end customer / final delivery party, when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_party_ids: Vec<String>,
    pub lines: Vec<ReceiptLine>,
}

impl GoodsReceipt {
    /// Every serial number in the receipt, in document order.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .flat_map(|l| l.units.iter())
            .filter_map(|u| u.serial_number.as_deref())
    }
}

/// The event `goods_receipt.received`: a stored receipt and the customer it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedGoods {
    /// The hub's id of the stored receipt (`<source>:<receipt_id>`).
    pub id: String,
    /// The posting system (`intake:<source>`).
    pub source: String,
    pub customer_id: String,
    pub receipt: GoodsReceipt,
}

/// A registered asset (one unit of a receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub customer_id: String,
    pub receipt: String,
    pub line_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer_pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warranty_end: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence_expiry: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_on: Option<NaiveDate>,
}
