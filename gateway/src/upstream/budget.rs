//! A provider's retry and hedge budgets: token buckets that keep extra attempts a bounded
//! share of the traffic (lesson 9, see `crate::policy::resilience` for how they are spent).
//!
//! A budget is a token bucket: every request deposits `percent / 100` of a token, every extra
//! attempt takes a whole one. It starts with one token and holds at most ten, so a quiet hour
//! does not bank a burst of hedges. A provider owns its pair, so an outage at one provider
//! cannot use up the retries of the others; the budgets know nothing of how attempts are made.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::config::Config;

const MILLI: i64 = 1000;

/// A token bucket in thousandths of a token; see the module docs.
#[derive(Debug)]
pub struct Budget {
    /// Thousandths of a token each request deposits (`percent * 10`).
    deposit: i64,
    balance: AtomicI64,
}

impl Budget {
    pub fn new(percent: u8) -> Self {
        let deposit = i64::from(percent) * MILLI / 100;
        Self {
            deposit,
            balance: AtomicI64::new(if deposit > 0 { MILLI } else { 0 }),
        }
    }

    /// A request passed: add its share of a token.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b + self.deposit).min(10 * MILLI))
            });
    }

    /// Takes one token if there is one.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= MILLI).then_some(b - MILLI)
            })
            .is_ok()
    }
}

/// One provider's retry and hedge budgets.
#[derive(Debug)]
pub struct Budgets {
    retry: Budget,
    hedge: Budget,
}

impl Budgets {
    pub fn new(config: &Config) -> Self {
        Self {
            retry: Budget::new(config.retry_budget_percent),
            hedge: Budget::new(config.hedge_budget_percent),
        }
    }

    /// `--retry-budget-percent`: what retries may add.
    pub fn retry(&self) -> &Budget {
        &self.retry
    }

    /// `--hedge-budget-percent`: what hedges may add.
    pub fn hedge(&self) -> &Budget {
        &self.hedge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_share_and_no_more() {
        let budget = Budget::new(10);
        assert!(budget.withdraw(), "one token to start with");
        assert!(!budget.withdraw());
        for _ in 0..9 {
            budget.deposit();
        }
        assert!(!budget.withdraw(), "nine requests earn 0.9 of a token");
        budget.deposit();
        assert!(budget.withdraw(), "the tenth completes it");
        for _ in 0..1000 {
            budget.deposit();
        }
        let tokens = (0..20).filter(|_| budget.withdraw()).count();
        assert_eq!(tokens, 10, "the bucket holds at most ten");
        assert!(!Budget::new(0).withdraw(), "0 % never allows one");
    }
}
