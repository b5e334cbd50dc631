//! A single-threaded wake-up between tasks: whoever changes shared state calls
//! `notify`, the one task waiting for a condition re-checks it. No lock, no
//! channel: everything here runs on one thread.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    /// Waits for the next `notify` (or returns at once if one came since the last wait).
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until `done()` holds, re-checking after every `notify`.
    pub async fn until(&self, mut done: impl FnMut() -> bool) {
        while !done() {
            self.wait().await;
        }
    }
}
