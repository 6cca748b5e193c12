//! The shared vocabulary of drehkreuz.
//!
//! Every connector maps its system's format into these types, and every exporter maps them back
//! out. Nothing here does I/O. Money is always [`rust_decimal::Decimal`] in EUR, never a float;
//! instants are UTC, billing periods are calendar months in Europe/Berlin.

pub mod contract;
pub mod customer;
pub mod envelope;
pub mod goods;
pub mod invoice;
pub mod work;

pub use envelope::{event_id, Envelope, EnvelopeError};
