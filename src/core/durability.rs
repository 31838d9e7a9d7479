//! Group commit: a write is acknowledged only after a flush that started after it was applied,
//! and every writer waiting at the same moment shares that one flush. With fsync at ~0.1 ms and
//! many concurrent writers this keeps durable writes close to the speed of non-durable ones.
//!
//! At the end of shutdown the flusher is closed: it flushes what is queued and stops, and a
//! write that asks for durability after that is told `ServiceUnavailable` (try again once the
//! server is back), never acknowledged.

use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{Error, Metrics, Result};
use crate::store::{FlushFailure, FlushReport, Store, Ticket};

/// How one write's flush ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    /// The write is durable.
    Durable,
    /// Another replica wrote first and the write was rolled back: build it again.
    Conflict,
}

type Answer = std::result::Result<Flushed, String>;

struct Waiter {
    ticket: Ticket,
    tx: oneshot::Sender<Answer>,
}

/// Rolled-back ticket ranges remembered for waiters that queue late (one per failed flush).
const MAX_DROPPED_RANGES: usize = 1024;

/// Times the flusher yields to runnable writers before each flush (see `GroupCommit::start`).
const GATHER_YIELDS: usize = 16;

/// Handle to the flusher task.
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Waiter>,
    close: watch::Sender<bool>,
}

/// What the flusher calls back into: the revocation log's publish points and the rollback.
pub struct Hooks {
    /// Read just before each flush: the last revision applied (see `GroupCommit::start`).
    pub applied: Box<dyn Fn() -> u64 + Send>,
    /// Called with `applied`'s value once a flush made everything durable.
    pub flushed: Box<dyn Fn(u64) + Send>,
    /// Called after a failed flush: rolls the staged batches back (under the writer lock) and
    /// returns the last ticket dropped.
    pub failed: Box<dyn Fn() -> Ticket + Send>,
}

impl GroupCommit {
    /// Starts the flusher task on the current tokio runtime. It ends when the handle is dropped.
    ///
    /// Every flush is recorded in `metrics` (batch size, duration, failures).
    /// `hooks.applied` is read just before each flush and `hooks.flushed` is called with that
    /// value once the flush succeeded: the revocation log uses this to publish exactly the
    /// events the flush made durable, from a task no request cancellation can stop. Waiters
    /// are told first: waking every watcher before them measurably delayed the writers' next
    /// flush (the slow-watcher test took 4x longer).
    ///
    /// A shared store may make only part of what is staged durable (its transactions have a
    /// size limit) or lose a race with another replica: each waiter carries its batch's ticket
    /// and hears how its own batch ended; batches not yet written wait for the next round.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>, hooks: Hooks) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let (close, mut closing) = watch::channel(false);
        tokio::spawn(async move {
            let mut batch: Vec<Waiter> = Vec::new();
            // Tickets rolled back (after `.0`, up to `.1`), newest last: a writer may queue its
            // waiter after the round that rolled its batch back, and later batches that did
            // commit make `durable_through` pass its ticket.
            let mut dropped: Vec<(Ticket, Ticket, FlushFailure)> = Vec::new();
            loop {
                if batch.is_empty() {
                    let first = tokio::select! {
                        // Closing first, so a steady stream of writers cannot keep it open.
                        // After `close` no waiter gets in; those already queued are still
                        // flushed below.
                        biased;
                        _ = closing.wait_for(|c| *c), if !rx.is_closed() => {
                            rx.close();
                            continue;
                        }
                        first = rx.recv() => match first {
                            Some(first) => first,
                            None => break,
                        },
                    };
                    batch.push(first);
                }
                // Everyone already queued applied their write before queueing, so this flush
                // covers them too. A flush costs far more CPU than a write, so before flushing
                // let the writers that are already runnable apply and queue: under load a few
                // yields turn one-write flushes into shared ones; when idle they cost
                // microseconds.
                for _ in 0..GATHER_YIELDS {
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    tokio::task::yield_now().await;
                }
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let covered = (hooks.applied)();
                let started = Instant::now();
                let report = match store.flush().await {
                    Ok(report) => report,
                    Err(e) => FlushReport {
                        durable_through: 0,
                        failure: Some(FlushFailure::Backend(e.to_string())),
                    },
                };
                if let Some(failure) = &report.failure {
                    // Every waiter of this round whose batch is not durable failed with it
                    // (an embedded store hands out one ticket and reports no partial flush).
                    let newest = batch.iter().map(|w| w.ticket).max().unwrap_or(0);
                    let through = (hooks.failed)().max(newest);
                    if through > report.durable_through {
                        dropped.push((report.durable_through, through, failure.clone()));
                        if dropped.len() > MAX_DROPPED_RANGES {
                            dropped.remove(0);
                        }
                    }
                }
                metrics.flush(batch.len(), started.elapsed(), report.failure.is_none());
                let mut waiting = Vec::new();
                for waiter in batch.drain(..) {
                    let rolled_back = dropped
                        .iter()
                        .find(|(after, through, _)| {
                            waiter.ticket > *after && waiter.ticket <= *through
                        })
                        .map(|(_, _, failure)| failure);
                    let answer = if let Some(failure) = rolled_back {
                        match failure {
                            // The outcome is unknown: never rebuilt, the client hears of it.
                            FlushFailure::Backend(e) => Err(e.clone()),
                            FlushFailure::Conflict => Ok(Flushed::Conflict),
                        }
                    } else if waiter.ticket <= report.durable_through {
                        Ok(Flushed::Durable)
                    } else {
                        waiting.push(waiter);
                        continue;
                    };
                    // A waiter that gave up (its request was cancelled) is fine to skip.
                    let _ = waiter.tx.send(answer);
                }
                batch = waiting;
                if report.failure.is_none() && batch.is_empty() {
                    (hooks.flushed)(covered);
                }
            }
        });
        Self { tx, close }
    }

    /// Stops the flusher once it has flushed every waiter already queued. Idempotent.
    pub fn close(&self) {
        self.close.send_replace(true);
    }

    /// Returns once the batch with `ticket` is durable, or was rolled back after losing a race
    /// with another replica ([`Flushed::Conflict`]).
    ///
    /// # Errors
    /// `ServiceUnavailable` when the flusher is closed or gone (shutdown): the write may not
    /// be durable, and the client should retry once the server is back; `Internal` when the
    /// flush failed.
    pub async fn wait(&self, ticket: Ticket) -> Result<Flushed> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Waiter { ticket, tx })
            .map_err(|_| Error::ServiceUnavailable)?;
        match rx.await {
            Ok(Ok(flushed)) => Ok(flushed),
            Ok(Err(e)) => Err(Error::internal(format!("flush failed: {e}"))),
            // The flusher dropped the waiter unanswered: it stopped (runtime shutdown).
            Err(_) => Err(Error::ServiceUnavailable),
        }
    }
}
