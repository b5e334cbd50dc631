//! What this hub holds that a cluster must route to it: the uids it has
//! connections of and the channels it has members of. In cluster mode the
//! hub notes each change here, as it happens, for the cluster's link to
//! subscribe to; a single hub notes nothing.

use std::rc::Rc;
use std::task::Waker;

/// A uid or a channel that this hub now holds, or no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub channel: bool,
    pub name: Rc<str>,
    pub held: bool,
}

#[derive(Default)]
pub struct RouteLog {
    changes: Vec<RouteChange>,
    waker: Option<Waker>,
}

impl RouteLog {
    pub(super) fn note(&mut self, channel: bool, name: &Rc<str>, held: bool) {
        if self.changes.is_empty()
            && let Some(w) = &self.waker
        {
            w.wake_by_ref();
        }
        self.changes.push(RouteChange {
            channel,
            name: Rc::clone(name),
            held,
        });
    }

    /// The changes since the last call, the waker kept.
    pub fn drain(&mut self) -> Vec<RouteChange> {
        std::mem::take(&mut self.changes)
    }

    /// The changes since the last call; `waker` is woken at the next one.
    pub fn take(&mut self, waker: &Waker) -> Vec<RouteChange> {
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
        std::mem::take(&mut self.changes)
    }
}
