//! Billing: turning a period's work into invoice lines, contingent movements and a service
//! report. [`rating::rate`] is a pure function over canonical data (no I/O); persistence,
//! invoice runs and numbering live around it, never inside it. The rules, with the choices
//! where `BILLING.md` is silent, are in `docs/billing.md`.

pub mod budget;
pub mod credit;
pub mod finalize;
pub mod ledger;
pub mod rating;
pub mod report;
pub mod rounding;
pub mod run;
pub mod run_inputs;

pub use rating::{
    rate, MinuteSplit, RatedEntry, Rating, RatingError, RatingInput, ThresholdCrossing, WriteOff,
    WriteOffTarget,
};

#[cfg(test)]
mod tests;
