//! Acknowledgements a backend waits for: a push with `ack_timeout` watches
//! its position in the uid's stream until some connection of the uid acks it
//! (cumulatively: an ack of a later position covers it), or the backend's
//! deadline passes.
//!
//! Only positions watched cost anything: an ack nobody waits for is checked
//! and forgotten. An ack that comes after the deadline (while the reply
//! still waits its turn behind another) is one nobody waits for: the push
//! stays unacknowledged, in its reply and in the counters.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::history::Pos;

#[derive(Default)]
struct Watch {
    /// When the acknowledgement came.
    acked: Cell<Option<Instant>>,
    /// When the backend stops waiting, once set.
    deadline: Cell<Option<Instant>>,
    waker: RefCell<Option<Waker>>,
}

/// A backend's wait for one position to be acknowledged.
pub struct AckWatch(Rc<Watch>);

impl AckWatch {
    /// Ready, with when it came, once acknowledged.
    pub fn poll_acked(&self, cx: &mut Context<'_>) -> Poll<Instant> {
        if let Some(at) = self.0.acked.get() {
            return Poll::Ready(at);
        }
        let mut waker = self.0.waker.borrow_mut();
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn is_acked(&self) -> bool {
        self.0.acked.get().is_some()
    }

    /// Sets when the backend stops waiting: an acknowledgement after it
    /// does not count.
    pub fn set_deadline(&self, deadline: Instant) {
        self.0.deadline.set(Some(deadline));
    }
}

/// Why a client's `ack` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The stream keeps no positions (no history for its kind, an
    /// anonymous connection's personal stream), or does not exist any more.
    NoStream,
    /// A position of another epoch: the stream was lost since.
    OtherEpoch,
    /// A position past the stream's last message.
    Ahead,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckError::NoStream => "no such stream: nothing to acknowledge",
            AckError::OtherEpoch => "position of another epoch: the stream's history was lost",
            AckError::Ahead => "position past the stream's last message",
        })
    }
}

impl std::error::Error for AckError {}

/// The positions backends wait on, by uid.
#[derive(Default)]
pub(super) struct Acks {
    waiting: HashMap<String, Vec<(Pos, Rc<Watch>)>>,
}

impl Acks {
    pub(super) fn watch(&mut self, uid: &str, pos: Pos) -> AckWatch {
        let watch = Rc::new(Watch::default());
        self.waiting
            .entry(uid.to_string())
            .or_default()
            .push((pos, Rc::clone(&watch)));
        AckWatch(watch)
    }

    /// A connection of `uid` acknowledged everything up to `pos`; returns
    /// how many watches that settled.
    pub(super) fn acked(&mut self, uid: &str, pos: Pos) -> usize {
        let Some(list) = self.waiting.get_mut(uid) else {
            return 0;
        };
        let mut n = 0;
        let now = Instant::now();
        list.retain(|(watched, watch)| {
            let covered = watched.epoch == pos.epoch && watched.offset <= pos.offset;
            // A watch whose backend gave up (its handle dropped) or whose
            // deadline passed is left to `purge`, which counts it
            // unacknowledged: an ack that comes too late does not make it
            // acknowledged, nor uncounted.
            let waited = Rc::strong_count(watch) > 1
                && watch.deadline.get().is_none_or(|deadline| now <= deadline);
            if covered && waited {
                n += 1;
                watch.acked.set(Some(now));
                if let Some(waker) = watch.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            !(covered && waited)
        });
        if list.is_empty() {
            self.waiting.remove(uid);
        }
        n
    }

    /// Forgets the watches whose backend stopped waiting (its deadline
    /// passed, or it went away) unacknowledged; returns how many.
    pub(super) fn purge(&mut self) -> usize {
        let mut n = 0;
        self.waiting.retain(|_, list| {
            list.retain(|(_, watch)| {
                let waited = Rc::strong_count(watch) > 1;
                n += usize::from(!waited);
                waited
            });
            !list.is_empty()
        });
        n
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: u64, offset: u64) -> Pos {
        Pos { epoch, offset }
    }

    #[test]
    fn an_ack_covers_every_earlier_position_of_its_epoch() {
        let mut acks = Acks::default();
        let w1 = acks.watch("u", pos(1, 1));
        let w3 = acks.watch("u", pos(1, 3));
        let other_epoch = acks.watch("u", pos(2, 1));
        let other_uid = acks.watch("v", pos(1, 1));
        acks.acked("u", pos(1, 2));
        assert!(w1.is_acked());
        assert!(!w3.is_acked() && !other_epoch.is_acked() && !other_uid.is_acked());
        acks.acked("u", pos(1, 3));
        assert!(w3.is_acked());
        assert_eq!(acks.len(), 2);
        drop(other_uid);
        assert_eq!(acks.purge(), 1);
        assert_eq!(acks.len(), 1);
    }

    #[test]
    fn an_ack_after_the_wait_ended_leaves_it_unacknowledged() {
        let mut acks = Acks::default();
        let given_up = acks.watch("u", pos(1, 1));
        let waiting = acks.watch("u", pos(1, 2));
        // The first wait's deadline passed: its backend dropped the handle.
        drop(given_up);
        assert_eq!(acks.acked("u", pos(1, 2)), 1);
        assert!(waiting.is_acked());
        assert_eq!(
            acks.purge(),
            1,
            "the late-acked wait counts as unacknowledged"
        );
        assert_eq!(acks.len(), 0);
    }

    #[test]
    fn an_ack_after_the_deadline_does_not_count() {
        let mut acks = Acks::default();
        let late = acks.watch("u", pos(1, 1));
        late.set_deadline(Instant::now() - std::time::Duration::from_millis(1));
        let in_time = acks.watch("u", pos(1, 1));
        in_time.set_deadline(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(acks.acked("u", pos(1, 1)), 1);
        assert!(in_time.is_acked() && !late.is_acked());
        // Still held by its reply: not yet counted either way.
        assert_eq!(acks.purge(), 0);
        drop(late);
        assert_eq!(acks.purge(), 1);
        assert_eq!(acks.len(), 0);
    }

    #[test]
    fn a_waiting_backend_is_woken() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::Wake;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut acks = Acks::default();
        let watch = acks.watch("u", pos(1, 5));
        assert!(watch.poll_acked(&mut cx).is_pending());
        acks.acked("u", pos(1, 9));
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(watch.poll_acked(&mut cx).is_ready());
    }
}
