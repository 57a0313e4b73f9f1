//! The tee: a miss's answer goes to its client as it arrives, and a copy to the cache once it
//! has ended cleanly.
//!
//! The relay forwards each upstream chunk the moment it arrives ([`crate::upstream::relay`]);
//! the tee must not change that. So it sits in the body stream and, for each chunk, keeps a
//! clone of the `Bytes` (a reference count, not a copy) and hands the chunk on in the same poll:
//! no buffer in front of the client, no `.await` on its path. Only when the stream has ended
//! cleanly does the work start (checking, assembling a streamed answer, writing the tiers), on
//! a task of its own, after the client has its last byte.
//!
//! It gives up keeping (and keeps nothing more) when the answer grows past the largest entry
//! the cache takes, when the upstream breaks off, and when it is dropped before the end: the
//! client left, and with it the reason to finish the answer (the upstream is cancelled as
//! usual, see [`crate::upstream::fixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;

use super::Store;
use crate::telemetry::labels::CacheSkip;

/// An upstream body, copied for the cache as it passes.
pub struct Tee {
    inner: BoxStream<'static, io::Result<Bytes>>,
    /// `None` once the answer is handed over or given up.
    store: Option<Store>,
    seen: Vec<Bytes>,
    size: usize,
}

impl Tee {
    pub fn new(inner: BoxStream<'static, io::Result<Bytes>>, store: Store) -> Self {
        Self {
            inner,
            store: Some(store),
            seen: Vec::new(),
            size: 0,
        }
    }
}

impl Stream for Tee {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = ready!(this.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(store) = &this.store {
                    if this.size + chunk.len() > store.max_bytes() {
                        this.seen = Vec::new();
                        if let Some(store) = this.store.take() {
                            store.give_up(CacheSkip::TooLarge);
                        }
                    } else {
                        this.size += chunk.len();
                        this.seen.push(chunk.clone());
                    }
                }
            }
            Some(Err(_)) => {
                this.seen = Vec::new();
                if let Some(store) = this.store.take() {
                    store.give_up(CacheSkip::Incomplete);
                }
            }
            None => {
                if let Some(store) = this.store.take() {
                    store.keep(std::mem::take(&mut this.seen), this.size);
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped before its end: the client left.
        if let Some(store) = self.store.take() {
            store.give_up(CacheSkip::Incomplete);
        }
    }
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
