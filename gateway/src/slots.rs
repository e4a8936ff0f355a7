//! How many live streams each user holds on this gateway: at most a configured number (20 by
//! default). Opening one more ends the user's oldest with `RESOURCE_EXHAUSTED` rather than
//! refusing the new one: a client that reconnects after a network change gets its stream at
//! once, while the one it left behind (whose connection may not be known dead for minutes)
//! makes room.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, atomic::AtomicU64, atomic::Ordering},
};

use tokio_util::sync::CancellationToken;

/// The default of [`Slots::new`]'s limit.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 20;

type Open = HashMap<String, VecDeque<(u64, CancellationToken)>>;

/// Every user's open streams, oldest first. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    open: Arc<Mutex<Open>>,
    next_id: Arc<AtomicU64>,
    max_per_user: usize,
}

/// A stream's place; the place frees when it drops. `evicted` is cancelled when a newer
/// stream of the same user took it.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Slots,
    user: String,
    id: u64,
    pub(crate) evicted: CancellationToken,
}

impl Slots {
    /// At most `max_per_user` streams per user (at least 1).
    pub(crate) fn new(max_per_user: usize) -> Self {
        Self {
            open: Arc::default(),
            next_id: Arc::default(),
            max_per_user: max_per_user.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // A panic while holding this lock leaves the map consistent (one push or remove).
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a new stream of `user`, evicting the user's oldest past the limit.
    pub(crate) fn take(&self, user: &str) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut open = self.lock();
        let streams = open.entry(user.to_owned()).or_default();
        streams.push_back((id, evicted.clone()));
        while streams.len() > self.max_per_user {
            if let Some((_, oldest)) = streams.pop_front() {
                oldest.cancel();
            }
        }
        Slot {
            slots: self.clone(),
            user: user.to_owned(),
            id,
            evicted,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(streams) = open.get_mut(&self.user) {
            streams.retain(|(id, _)| *id != self.id);
            if streams.is_empty() {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_stream_past_the_limit_is_evicted_and_places_free_on_drop() {
        let slots = Slots::new(2);
        let first = slots.take("alice");
        let second = slots.take("alice");
        let other = slots.take("bob");
        assert!(!first.evicted.is_cancelled());
        let third = slots.take("alice");
        assert!(first.evicted.is_cancelled());
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert!(!other.evicted.is_cancelled());
        drop(first);
        drop(second);
        let fourth = slots.take("alice");
        assert!(!third.evicted.is_cancelled() && !fourth.evicted.is_cancelled());
        drop((third, fourth, other));
        assert!(slots.lock().is_empty());
    }
}
