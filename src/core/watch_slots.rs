//! The limit on concurrent revocation watch streams per access key (`max_watches_per_key`):
//! each stream holds a [`WatchSlot`], given back when the stream is dropped (the client went
//! away or the stream ended), so a runaway broker cannot pile up streams and their tasks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{Error, Result};

/// Open watch streams per access key, against a limit.
#[derive(Debug)]
pub(crate) struct WatchSlots {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl WatchSlots {
    /// Slots of `max` streams per key; 0 = no limit.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `key`.
    ///
    /// # Errors
    /// `WatchStreamNumExceed` when the key already holds `max` streams.
    pub(crate) fn take(self: &Arc<Self>, key: &str) -> Result<WatchSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.to_owned()).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return Err(Error::WatchStreamNumExceed { max: self.max });
        }
        *count += 1;
        Ok(WatchSlot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }
}

/// One held slot; dropping it frees it.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    slots: Arc<WatchSlots>,
    key: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}
