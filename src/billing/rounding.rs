//! Rounding of billable minutes: increment, mode (`up` = each started block, `nearest` = half
//! up) and an optional minimum. Zero stays zero; an aligned duration stays unchanged.

use canonical::contract::{RoundingMode, RoundingPolicy};

/// Rounds `minutes` under `policy` (the minimum applies only to non-zero durations).
pub fn round_minutes(minutes: u32, policy: &RoundingPolicy) -> u32 {
    if minutes == 0 {
        return 0;
    }
    let inc = policy.increment_minutes.max(1);
    let blocks = match policy.mode {
        RoundingMode::Up => minutes.div_ceil(inc),
        // Half up: 7.5 of 15 rounds to 15; at least one block for any work.
        RoundingMode::Nearest => ((minutes * 2 + inc) / (2 * inc)).max(1),
    };
    let rounded = blocks * inc;
    match policy.minimum_minutes {
        Some(min) => rounded.max(min),
        None => rounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canonical::contract::RoundingScope;

    fn p(inc: u32, mode: RoundingMode, min: Option<u32>) -> RoundingPolicy {
        RoundingPolicy {
            increment_minutes: inc,
            mode,
            scope: RoundingScope::Entry,
            minimum_minutes: min,
        }
    }

    #[test]
    fn up_nearest_minimum_and_aligned() {
        let up15 = p(15, RoundingMode::Up, None);
        assert_eq!(
            [7, 16, 45, 0].map(|m| round_minutes(m, &up15)),
            [15, 30, 45, 0]
        );
        let near15 = p(15, RoundingMode::Nearest, None);
        assert_eq!(
            [7, 8, 22, 23, 1].map(|m| round_minutes(m, &near15)),
            [15, 15, 15, 30, 15]
        );
        let min30 = p(5, RoundingMode::Up, Some(30));
        assert_eq!([3, 31].map(|m| round_minutes(m, &min30)), [30, 35]);
        for inc in [1, 5, 15, 60] {
            for k in 1..10 {
                assert_eq!(
                    round_minutes(k * inc, &p(inc, RoundingMode::Up, None)),
                    k * inc
                );
                assert_eq!(
                    round_minutes(k * inc, &p(inc, RoundingMode::Nearest, None)),
                    k * inc
                );
            }
        }
    }
}
