//! DATEV exports of canonical invoices. Pure: canonical data in, file bytes out; no I/O.
//!
//! [`extf`] writes the DATEV-Format (EXTF, header version 700): the Buchungsstapel (bookings
//! of outgoing invoices and credit notes, category 21 version 13) and Debitoren/Kreditoren
//! (category 16 version 5), in Windows-1252 with CRLF after every line. [`xml`] writes the
//! XML-Schnittstelle online package (ZIP with `document.xml` v6.0 and the ledger file v6.0).

pub mod columns;
pub mod extf;
pub mod xml;

pub use extf::{buchungsstapel, debitoren, Chart, ExtfError, ExtfSettings};
