//! The in-process buckets: governor's keyed GCRA, the limits' only store without `--redis-url`
//! and their fallback while Redis does not answer.
//!
//! governor is lock-free and reports the remaining burst with each decision (its
//! `StateInformationMiddleware`), which is what `x-ratelimit-remaining-requests` needs. A
//! provider's single bucket is the key `()`.

use std::time::Duration;

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::{Bucket, Quota, Verdict};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One GCRA bucket per key, at one quota.
#[derive(Debug)]
pub(super) struct Buckets<K: Bucket> {
    limiter: Keyed<K>,
    quota: Quota,
}

impl<K: Bucket> Buckets<K> {
    pub(super) fn new(quota: Quota) -> Self {
        let limiter =
            RateLimiter::keyed(governor::Quota::per_minute(quota.rpm).allow_burst(quota.burst))
                .with_middleware::<StateInformationMiddleware>();
        Self { limiter, quota }
    }

    pub(super) fn check(&self, key: &K) -> Verdict {
        let interval = self.quota.interval();
        let burst = self.quota.burst.get();
        match self.limiter.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict::Admit {
                    remaining,
                    reset: interval * burst.saturating_sub(remaining),
                }
            }
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
                Verdict::Refuse {
                    wait,
                    reset: wait + interval * burst.saturating_sub(1),
                }
            }
        }
    }

    pub(super) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
