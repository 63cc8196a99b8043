//! A one-value channel whose receiver sleeps at once: the reply of a write to the thread that
//! asked for it.
//!
//! Owns one slot and nothing else. Must never spin or yield: a write's answer waits for a group
//! commit (an fdatasync, milliseconds), and with 32 connection threads on a 2-core box
//! crossbeam's spin-then-`sched_yield` receive was ~10% of the node's CPU at 32 clients
//! (perf: `CoreHandle::execute` -> `__sched_yield`), time taken from the core and the fsync.
//! A mutex and condvar park on the first wait.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

enum Slot<T> {
    Empty,
    Full(T),
    /// The sender was dropped without sending (the core stopped).
    Closed,
    Taken,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The sending half: `send` once, or drop it to tell the receiver no answer comes.
pub struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// The receiving half.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// No value will arrive: the sender was dropped, or the value was already received.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot::Empty),
        ready: Condvar::new(),
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Hands the value over and wakes the receiver. Never blocks; if the receiver is gone the
    /// value is simply dropped (`Err` gives it back, like crossbeam's `send`).
    pub fn send(mut self, value: T) -> Result<(), T> {
        let Some(shared) = self.shared.take() else {
            return Err(value);
        };
        if Arc::strong_count(&shared) == 1 {
            return Err(value);
        }
        *shared.slot.lock().unwrap_or_else(PoisonError::into_inner) = Slot::Full(value);
        shared.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(*slot, Slot::Empty) {
                *slot = Slot::Closed;
            }
            drop(slot);
            shared.ready.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// Waits for the value; `Err(Closed)` if the sender was dropped without sending.
    pub fn recv(&self) -> Result<T, Closed> {
        let mut slot = self
            .shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Full(v) => return Ok(v),
                Slot::Empty => {
                    *slot = Slot::Empty;
                    slot = self
                        .shared
                        .ready
                        .wait(slot)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Slot::Closed | Slot::Taken => return Err(Closed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_from_another_thread_is_received_once() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || tx.send(7u32));
        assert_eq!(rx.recv(), Ok(7));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(rx.recv(), Err(Closed));
    }

    #[test]
    fn a_dropped_sender_wakes_the_receiver_instead_of_hanging() {
        let (tx, rx) = channel::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(rx.recv(), Err(Closed));
        t.join().unwrap();
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_value_back() {
        let (tx, rx) = channel();
        drop(rx);
        assert_eq!(tx.send(3u8), Err(3));
    }
}
