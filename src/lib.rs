//! drehkreuz: an integration hub for IT service providers.
//!
//! Data flows ingress → mapping → bus → billing/store → export:
//! - [`http`]: the HTTP ingress and the operational endpoints;
//! - mapping crates under `mappings/` turn each system's format into the canonical vocabulary;
//! - [`store`] (the outbox) and [`relay`] hand events to the [`bus`];
//! - [`pipeline`] lists the consumers that apply them;
//! - [`schedule`] triggers periodic work; [`runtime`] wires one process together.

pub mod access;
pub mod billing;
pub mod bus;
pub mod cli;
pub mod config;
pub mod demo;
pub mod export;
pub mod helpdesk;
pub mod http;
pub mod ingress;
pub mod intake;
pub mod masterdata;
pub mod output;
pub mod pipeline;
pub mod relay;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod warehouse;
