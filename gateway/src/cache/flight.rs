//! Single-flight: concurrent identical misses make one upstream request.
//!
//! Without it a popular prompt that expires (or a burst of retries, or an evaluation run started
//! on many workers) sends N identical requests upstream at once: the thundering herd, paid N
//! times, at the moment the cache was meant to help. So the first miss for a key becomes the
//! *leader* and goes upstream; a miss for the same key while the leader is out *follows*: it
//! waits for the leader's answer and is served it as a hit (`source="in_flight"`).
//!
//! moka's `get_with` collapses concurrent inits the same way, but its init must return the
//! value before anyone gets it, so the leader's own client would wait for the whole answer; here
//! the leader streams as usual (its tee stores the answer when it ends) and only the followers
//! wait. What they wait for is bounded:
//!
//! - by their own deadline (`x-gateway-deadline-ms`, or the route's; else
//!   `--upstream-read-timeout-secs`): past it, 504 `deadline_exceeded`;
//! - by the leader: when its answer is not stored (an error, a cut stream, a `tool_calls`
//!   finish, its client left), the followers are released at once and each goes upstream on
//!   its own, as if there were no cache. A failure is not shared: a 429 or a cut stream is one
//!   request's bad luck, not an answer.
//!
//! The leader's [`Leader`] guard lives in its tee, so however its response ends (the client
//! leaving drops it), the flight lands or is released, and the key leaves the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::Entry;

/// What a follower learns.
#[derive(Debug, Clone)]
enum Landing {
    /// The leader is still out.
    Pending,
    /// The leader's answer, stored.
    Landed(Arc<Entry>),
    /// The leader's answer was not stored: go upstream yourself.
    Released,
}

/// The keys being fetched now, each with the channel its followers watch.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<Landing>>>,
}

/// The miss that goes upstream for its key; dropping it unlanded releases the followers.
#[derive(Debug)]
pub struct Leader {
    flights: Arc<Flights>,
    key: String,
    sender: watch::Sender<Landing>,
}

/// How a follower's wait ended.
#[derive(Debug)]
pub enum Followed {
    Landed(Arc<Entry>),
    /// Go upstream without the cache's help.
    Released,
    /// Its deadline passed first.
    TimedOut,
}

/// Joining a flight: lead it, or follow the one already out.
#[derive(Debug)]
pub enum Joined {
    Lead(Leader),
    Follow(Follower),
}

#[derive(Debug)]
pub struct Follower(watch::Receiver<Landing>);

impl Flights {
    /// Leads `key`'s flight if none is out, else follows it.
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = map.get(key) {
            return Joined::Follow(Follower(receiver.clone()));
        }
        let (sender, receiver) = watch::channel(Landing::Pending);
        map.insert(key.to_owned(), receiver);
        Joined::Lead(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            sender,
        })
    }

    /// Keys being fetched now.
    pub fn in_flight(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Leader {
    /// The answer is stored: every follower is served it.
    pub fn land(self, entry: Arc<Entry>) {
        self.sender.send_replace(Landing::Landed(entry));
        // Drop removes the key and leaves the value for followers still to look.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Not landed: release whoever waits. (After `land`, this changes nothing they see:
        // a follower that has its value does not look again.)
        self.sender.send_if_modified(|landing| {
            if matches!(landing, Landing::Pending) {
                *landing = Landing::Released;
                true
            } else {
                false
            }
        });
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only our own flight: a later leader may already hold the key.
        if map
            .get(&self.key)
            .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl Follower {
    /// Waits for the leader, at most `bound`.
    pub async fn wait(mut self, bound: Duration) -> Followed {
        let landed =
            tokio::time::timeout(bound, self.0.wait_for(|l| !matches!(l, Landing::Pending))).await;
        match landed {
            Err(_) => Followed::TimedOut,
            Ok(Ok(landing)) => match &*landing {
                Landing::Landed(entry) => Followed::Landed(Arc::clone(entry)),
                _ => Followed::Released,
            },
            // The sender is gone without a word: released.
            Ok(Err(_)) => Followed::Released,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::*;

    fn entry() -> Arc<Entry> {
        let body = r#"{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}]}"#;
        Arc::new(Entry::from_json(Bytes::from_static(body.as_bytes())).expect("storable"))
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_or_are_released() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(leader) = flights.join("k") else {
            panic!("the first one leads")
        };
        let Joined::Follow(follower) = flights.join("k") else {
            panic!("the second one follows")
        };
        let waiting = tokio::spawn(follower.wait(Duration::from_secs(5)));
        leader.land(entry());
        assert!(matches!(
            waiting.await.expect("joined"),
            Followed::Landed(_)
        ));
        assert_eq!(flights.in_flight(), 0, "a landed flight leaves the map");

        let Joined::Lead(leader) = flights.join("k") else {
            panic!("a new flight")
        };
        let Joined::Follow(follower) = flights.join("k") else {
            panic!("follows")
        };
        drop(leader);
        assert!(matches!(
            follower.wait(Duration::from_secs(5)).await,
            Followed::Released
        ));

        let Joined::Lead(_leader) = flights.join("k") else {
            panic!("a new flight")
        };
        let Joined::Follow(follower) = flights.join("k") else {
            panic!("follows")
        };
        assert!(matches!(
            follower.wait(Duration::from_millis(20)).await,
            Followed::TimedOut
        ));
    }
}
