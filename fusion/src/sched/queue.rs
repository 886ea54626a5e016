//! The bounded queues between the threads: the EDF task heap and the per-sensor
//! latest-wins mailboxes.
use crate::StampNs;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::{
    collections::BinaryHeap,
    sync::atomic::{AtomicU64, Ordering},
};

struct EdfEntry<T> {
    deadline: StampNs,
    seq: u64,
    item: T,
}

impl<T> PartialEq for EdfEntry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl<T> Eq for EdfEntry<T> {}
impl<T> PartialOrd for EdfEntry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for EdfEntry<T> {
    // Reversed: BinaryHeap is a max-heap, the earliest deadline (then the first queued) wins.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.deadline, o.seq).cmp(&(self.deadline, self.seq))
    }
}

/// A bounded earliest-deadline-first queue. Ties keep queue order. When full, the entry
/// with the earliest deadline, the stalest, is evicted and returned: a fresh set must not
/// wait behind one that is about to miss anyway.
pub struct EdfQueue<T> {
    heap: BinaryHeap<EdfEntry<T>>,
    seq: u64,
    capacity: usize,
}

impl<T> EdfQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self { heap: BinaryHeap::new(), seq: 0, capacity: capacity.max(1) }
    }

    pub fn push(&mut self, deadline: StampNs, item: T) -> Option<(StampNs, T)> {
        self.seq += 1;
        self.heap.push(EdfEntry { deadline, seq: self.seq, item });
        (self.heap.len() > self.capacity).then(|| self.pop().expect("non-empty"))
    }

    pub fn pop(&mut self) -> Option<(StampNs, T)> {
        self.heap.pop().map(|e| (e.deadline, e.item))
    }

    pub fn peek_deadline(&self) -> Option<StampNs> {
        self.heap.peek().map(|e| e.deadline)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A bounded latest-wins mailbox on a crossbeam channel: posting to a full mailbox evicts
/// the oldest message (counted as superseded), so a stale frame never delays a fresh one
/// and the mailbox never grows past its depth.
pub struct Mailbox<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    superseded: AtomicU64,
}

impl<T> Mailbox<T> {
    pub fn new(depth: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(depth.max(1));
        Self { tx, rx, superseded: AtomicU64::new(0) }
    }

    /// Posts a message; returns the one it superseded, if any (the last one, should other
    /// threads be posting at the same time).
    pub fn post(&self, item: T) -> Option<T> {
        let mut last = None;
        self.post_evicting(item, |old| last = Some(old));
        last
    }

    /// Posts a message, handing every message it superseded to `evicted`.
    pub fn post_evicting(&self, mut item: T, mut evicted: impl FnMut(T)) {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    if let Ok(old) = self.rx.try_recv() {
                        self.superseded.fetch_add(1, Ordering::Relaxed);
                        evicted(old);
                    }
                }
                Err(TrySendError::Disconnected(_)) => unreachable!("the mailbox holds its own receiver"),
            }
        }
    }

    pub fn receiver(&self) -> &Receiver<T> {
        &self.rx
    }

    pub fn try_take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }

    pub fn superseded(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
    }
}
