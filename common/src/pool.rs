//! The wire shape of `GET /debug/pool`: the gateway serializes it, diag deserializes it.
//!
//! One type for both ends, so the probe can never read a field the gateway stopped sending.

use serde::{Deserialize, Serialize};

/// The blocking pool's state at one moment, as served by `GET /debug/pool` and inside `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    /// The runtime's `max_blocking_threads`: the most jobs that can run at once.
    pub max_threads: usize,
    /// Jobs holding a pool thread right now.
    pub running: usize,
    /// Jobs waiting because every thread is busy.
    pub queued: usize,
    /// Highest `running` since start-up.
    pub peak_running: usize,
    /// Highest `queued` since start-up.
    pub peak_queued: usize,
    /// `running / max_threads`: 1.0 means every thread is taken.
    pub saturation: f64,
    /// Jobs finished since start-up.
    pub completed: u64,
}

impl PoolSnapshot {
    /// Every thread busy and work waiting: the pool is the bottleneck right now.
    pub fn saturated(&self) -> bool {
        self.running >= self.max_threads && self.queued > 0
    }
}
