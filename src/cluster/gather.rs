//! Requests this hub sent to others, waiting for their answers.
//!
//! A request has one part per route it was published to. Redis's reply
//! to each `PUBLISH` says how many hubs received that part, so the part
//! is confirmed once that many have answered; a request is complete when
//! every part is. Until then its reply waits (`text_port::replies`), at
//! most `--cluster-timeout`; whatever is still missing then makes the
//! answer unconfirmed, and answers that come later find nothing.

use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::wire::Partial;

/// A waiting request: its slab key and a generation, so that a late
/// answer to a finished request cannot land in a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherId {
    key: u32,
    generation: u32,
}

impl GatherId {
    /// The request's number on the wire.
    pub fn wire(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.key)
    }

    pub fn from_wire(n: u64) -> GatherId {
        GatherId {
            key: n as u32,
            generation: (n >> 32) as u32,
        }
    }
}

/// What a request gathered: each part's merged answers (`None` where no
/// hub answered), and whether anything is missing.
#[derive(Debug)]
pub struct Gathered {
    pub parts: Vec<Option<Partial>>,
    pub unconfirmed: bool,
}

struct Part {
    /// Hubs that received it, once Redis has said.
    expected: Option<u32>,
    answered: u32,
    merged: Option<Partial>,
}

struct Gather {
    generation: u32,
    parts: Vec<Part>,
    /// Some part could not be published, or its hubs went silent.
    unconfirmed: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
pub struct Gathers {
    slab: Slab<Gather>,
    next_generation: u32,
}

impl Gathers {
    pub fn start(&mut self, parts: usize) -> GatherId {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let parts = (0..parts)
            .map(|_| Part {
                expected: None,
                answered: 0,
                merged: None,
            })
            .collect();
        let key = self.slab.insert(Gather {
            generation,
            parts,
            unconfirmed: false,
            waker: None,
        });
        GatherId {
            // Bounded by the replies a backend may have waiting, times the
            // backends: far below u32::MAX.
            key: u32::try_from(key).expect("waiting requests within u32 keys"),
            generation,
        }
    }

    fn get(&mut self, id: GatherId) -> Option<&mut Gather> {
        self.slab
            .get_mut(id.key as usize)
            .filter(|g| g.generation == id.generation)
    }

    fn part(&mut self, id: GatherId, part: u32) -> Option<(&mut Part, &mut Option<Waker>)> {
        let gather = self.get(id)?;
        let part = gather.parts.get_mut(part as usize)?;
        Some((part, &mut gather.waker))
    }

    /// Redis says `n` hubs received `part`.
    pub fn expect(&mut self, id: GatherId, part: u32, n: u32) {
        if let Some((p, waker)) = self.part(id, part) {
            p.expected = Some(n);
            wake(waker);
        }
    }

    /// An answer from one hub.
    pub fn answer(&mut self, id: GatherId, part: u32, partial: Partial) {
        if let Some((p, waker)) = self.part(id, part) {
            p.answered += 1;
            match &mut p.merged {
                Some(merged) => merged.merge(partial),
                None => p.merged = Some(partial),
            }
            wake(waker);
        }
    }

    /// `part` was not published (the link is down or full), or its
    /// answers can no longer come: it stands with what it has, unconfirmed.
    pub fn give_up(&mut self, id: GatherId, part: u32) {
        if let Some(gather) = self.get(id) {
            gather.unconfirmed = true;
            if let Some(p) = gather.parts.get_mut(part as usize) {
                p.expected = Some(p.answered);
            }
            wake(&mut gather.waker);
        }
    }

    /// Every waiting request gives up: the link is gone, and with it
    /// every answer still to come.
    pub fn give_up_all(&mut self) {
        for (_, gather) in self.slab.iter_mut() {
            for p in &mut gather.parts {
                if p.expected != Some(p.answered) {
                    gather.unconfirmed = true;
                    p.expected = Some(p.answered);
                }
            }
            wake(&mut gather.waker);
        }
    }

    /// Ready, and finished, once every part is confirmed.
    pub fn poll(&mut self, id: GatherId, cx: &mut Context<'_>) -> Poll<Gathered> {
        let Some(gather) = self.get(id) else {
            return Poll::Ready(Gathered {
                parts: Vec::new(),
                unconfirmed: true,
            });
        };
        let done = gather
            .parts
            .iter()
            .all(|p| p.expected.is_some_and(|n| p.answered >= n));
        if !done {
            match &gather.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => gather.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        Poll::Ready(self.finish(id))
    }

    /// Ends a request with what it has (at its deadline, or once complete).
    pub fn finish(&mut self, id: GatherId) -> Gathered {
        if self.get(id).is_none() {
            return Gathered {
                parts: Vec::new(),
                unconfirmed: true,
            };
        }
        let gather = self.slab.remove(id.key as usize);
        let mut unconfirmed = gather.unconfirmed;
        let parts = gather
            .parts
            .into_iter()
            .map(|p| {
                unconfirmed |= p.expected.is_none_or(|n| p.answered < n);
                p.merged
            })
            .collect();
        Gathered { parts, unconfirmed }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(g: &mut Gathers, id: GatherId) -> Poll<Gathered> {
        g.poll(id, &mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn complete_once_every_part_has_its_answers_in_any_order() {
        let mut g = Gathers::default();
        let id = g.start(2);
        g.answer(id, 0, Partial::Delivered(1));
        assert!(poll(&mut g, id).is_pending());
        g.expect(id, 0, 2);
        g.expect(id, 1, 0);
        assert!(poll(&mut g, id).is_pending());
        g.answer(id, 0, Partial::Delivered(2));
        let Poll::Ready(done) = poll(&mut g, id) else {
            panic!("complete")
        };
        assert!(!done.unconfirmed);
        assert!(matches!(
            done.parts[..],
            [Some(Partial::Delivered(3)), None]
        ));
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn missing_answers_are_unconfirmed_and_late_ones_land_nowhere() {
        let mut g = Gathers::default();
        let id = g.start(1);
        g.expect(id, 0, 2);
        g.answer(id, 0, Partial::Delivered(1));
        let done = g.finish(id);
        assert!(done.unconfirmed);
        let next = g.start(1);
        // The same slab key, another generation.
        assert_eq!(GatherId::from_wire(next.wire()), next);
        g.answer(id, 0, Partial::Delivered(5));
        g.expect(next, 0, 0);
        let Poll::Ready(done) = poll(&mut g, next) else {
            panic!("complete")
        };
        assert!(matches!(done.parts[..], [None]));
        assert!(!done.unconfirmed);
    }

    #[test]
    fn a_lost_link_settles_everything_unconfirmed() {
        let mut g = Gathers::default();
        let a = g.start(1);
        let b = g.start(1);
        g.expect(b, 0, 1);
        g.answer(b, 0, Partial::Online(1));
        g.give_up_all();
        assert!(matches!(
            poll(&mut g, a),
            Poll::Ready(Gathered {
                unconfirmed: true,
                ..
            })
        ));
        assert!(matches!(
            poll(&mut g, b),
            Poll::Ready(Gathered {
                unconfirmed: false,
                ..
            })
        ));
    }
}
