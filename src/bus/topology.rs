//! Names and routing shared by both buses: the exchange, each consumer's queue, its retry tiers
//! and its dead-letter queue, and AMQP topic matching (`*` = one word, `#` = zero or more).

/// The consumer name under which the outbox relay dead-letters unroutable rows
/// (`relay::DEAD_LETTER_CONSUMER`); a replay of such a dead letter republishes by its type.
pub const RELAY_DEAD_LETTER_CONSUMER: &str = "outbox-relay";

/// The names of everything the bus declares under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    /// The topic exchange every event is published to.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// The direct exchange dead letters are routed through (routing key = consumer name).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// A consumer's work queue.
    pub fn queue(&self, consumer: &str) -> String {
        format!("{}.{}", self.prefix, consumer)
    }
    /// A consumer's retry queue for one delay tier (messages wait there for the tier's TTL).
    pub fn retry_queue(&self, consumer: &str, delay_ms: u64) -> String {
        format!("{}.{}.retry.{}ms", self.prefix, consumer, delay_ms)
    }
    /// A consumer's dead-letter queue.
    pub fn dead_letter_queue(&self, consumer: &str) -> String {
        format!("{}.{}.dlq", self.prefix, consumer)
    }
}

/// Whether a routing key matches an AMQP topic binding pattern.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    matches_words(&p, &k)
}

fn matches_words(p: &[&str], k: &[&str]) -> bool {
    match (p.first(), k.first()) {
        (None, None) => true,
        (Some(&"#"), _) => {
            // `#` eats zero or more words.
            (0..=k.len()).any(|n| matches_words(&p[1..], &k[n..]))
        }
        (Some(&"*"), Some(_)) => matches_words(&p[1..], &k[1..]),
        (Some(pw), Some(kw)) if pw == kw => matches_words(&p[1..], &k[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("time_entry.created", "time_entry.created"));
        assert!(!topic_matches("time_entry.created", "time_entry.deleted"));
        assert!(topic_matches("time_entry.*", "time_entry.deleted"));
        assert!(!topic_matches("time_entry.*", "time_entry.a.b"));
        assert!(topic_matches("time_entry.#", "time_entry.a.b"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#.created", "ticket.created"));
        assert!(!topic_matches("*.created", "created"));
    }

    #[test]
    fn names_are_prefixed() {
        let n = Names::new("dk");
        assert_eq!(n.queue("billing"), "dk.billing");
        assert_eq!(n.retry_queue("billing", 1000), "dk.billing.retry.1000ms");
        assert_eq!(n.dead_letter_queue("billing"), "dk.billing.dlq");
        assert_eq!(n.exchange(), "dk.events");
    }
}
