//! Customers (placeholder until the billing vocabulary lands).
