//! The open revocation watch streams: the limit on concurrent streams per access key
//! (`max_watches_per_key`), and a waker per stream so that shutdown reaches the idle ones.
//!
//! Each stream holds a [`WatchSlot`], given back when the stream is dropped (the client went
//! away or the stream ended), so a runaway broker cannot pile up streams. A stream registers
//! its task's waker in its slot when it first waits (the same task polls it all its life);
//! [`WatchSlots::wake_all`] wakes every stream once the server begins shutting down, so each
//! answers `ServiceUnavailable` at once. A wake takes the registered waker, so `wake_all` is
//! for that one moment only: a stream it woke ends, and is never waiting for a second call.
//! Registering is lock-free ([`AtomicWaker`]), so waiting costs a stream no shared lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::Waker,
};

use atomic_waker::AtomicWaker;

use super::{Error, Result};

/// Open watch streams per access key, against a limit, and their wakers.
#[derive(Debug)]
pub(crate) struct WatchSlots {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    per_key: HashMap<String, usize>,
    /// Every held slot's waker, by slot number.
    wakers: HashMap<u64, Arc<AtomicWaker>>,
    next_id: u64,
}

impl WatchSlots {
    /// Slots of `max` streams per key; 0 = no limit.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(Open::default()),
        }
    }

    /// Takes a slot for `key`.
    ///
    /// # Errors
    /// `WatchStreamNumExceed` when the key already holds `max` streams.
    pub(crate) fn take(self: &Arc<Self>, key: &str) -> Result<WatchSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.per_key.entry(key.to_owned()).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return Err(Error::WatchStreamNumExceed { max: self.max });
        }
        *count += 1;
        let id = open.next_id;
        open.next_id += 1;
        let waker = Arc::new(AtomicWaker::new());
        open.wakers.insert(id, waker.clone());
        Ok(WatchSlot {
            slots: self.clone(),
            key: key.to_owned(),
            id,
            waker,
        })
    }

    /// Wakes every open stream (their tasks poll them again).
    pub(crate) fn wake_all(&self) {
        let wakers: Vec<_> = {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.wakers.values().cloned().collect()
        };
        // Outside the lock: a woken task may run at once on another thread and drop its slot.
        for waker in wakers {
            waker.wake();
        }
    }
}

/// One held slot; dropping it frees it.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    slots: Arc<WatchSlots>,
    key: String,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl WatchSlot {
    /// Wakes `waker` at the next [`WatchSlots::wake_all`] (the last one registered wins).
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.wakers.remove(&self.id);
        if let Some(count) = open.per_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        task::Wake,
    };

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_limit_is_per_key_and_wake_all_reaches_every_held_slot() {
        let slots = Arc::new(WatchSlots::new(2));
        let a1 = slots.take("a").expect("first");
        let a2 = slots.take("a").expect("second");
        assert!(slots.take("a").is_err(), "over the limit");
        let b = slots.take("b").expect("another key");
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        for slot in [&a1, &a2, &b] {
            slot.register(&waker);
        }
        drop(a2);
        slots.take("a").expect("a dropped slot is free again");
        slots.wake_all();
        // The dropped slot's waker is gone; the new slot never registered one.
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
    }
}
