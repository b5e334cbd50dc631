//! A connection's outbound queue: shared frames waiting for the socket, and how
//! much of the first one has been written.
//!
//! The writer hands the kernel several frames in one vectored write, straight
//! from the shared buffers, and tells the queue how many bytes went out.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::ws::frame::Frame;

#[derive(Debug, Default)]
pub struct Queue {
    frames: VecDeque<Frame>,
    /// Unwritten bytes across all frames.
    bytes: usize,
    /// Bytes of the front frame already written (frames are far below 4 GiB:
    /// every one is bounded by a line or message size limit).
    written: u32,
}

impl Queue {
    pub fn push(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a frame is half written: nothing else may reach the socket
    /// until it is finished, or the stream of frames would be corrupt.
    pub fn mid_frame(&self) -> bool {
        self.written > 0
    }

    /// Fills `slices` with the unwritten bytes of the first frames; returns how many.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, frame) in self.frames.iter().take(slices.len()).enumerate() {
            let skip = if i == 0 { self.written as usize } else { 0 };
            slices[i] = IoSlice::new(&frame.as_bytes()[skip..]);
            n += 1;
        }
        n
    }

    /// Records that `n` bytes from the front have been written.
    pub fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.written as usize;
            if n < left {
                // Less than the rest of a frame, which fits in u32.
                self.written += n as u32;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
        }
        if self.frames.is_empty() {
            // An idle connection holds no slots: re-allocating them for the next
            // message costs far less than the write that empties them.
            self.frames = VecDeque::new();
        }
    }

    /// Drops every frame not yet started; a half-written one is kept so that
    /// it can be finished before a close frame.
    pub fn clear_unstarted(&mut self) {
        let keep = usize::from(self.written > 0);
        self.frames.truncate(keep);
        let kept: usize = self.frames.iter().map(Frame::len).sum();
        self.bytes = kept - self.written as usize;
        if keep == 0 {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwritten(q: &Queue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut q = Queue::default();
        q.push(Frame::text("abc"));
        q.push(Frame::text("de"));
        assert_eq!(q.bytes(), 9);
        assert_eq!(unwritten(&q), b"\x81\x03abc\x81\x02de");
        q.advance(3);
        assert!(q.mid_frame());
        assert_eq!(unwritten(&q), b"bc\x81\x02de");
        q.advance(2);
        assert!(!q.mid_frame());
        assert_eq!(q.len(), 1);
        assert_eq!(unwritten(&q), b"\x81\x02de");
        q.advance(4);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn slices_are_bounded_by_the_array() {
        let mut q = Queue::default();
        for _ in 0..10 {
            q.push(Frame::text("x"));
        }
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.slices(&mut slices), 4);
    }

    #[test]
    fn clearing_keeps_a_started_frame() {
        let mut q = Queue::default();
        q.push(Frame::text("abc"));
        q.push(Frame::text("de"));
        q.advance(1);
        q.clear_unstarted();
        assert_eq!(q.len(), 1);
        assert_eq!(unwritten(&q), b"\x03abc");
        assert_eq!(q.bytes(), 4);
        q.advance(4);
        q.clear_unstarted();
        assert!(q.is_empty());
    }
}
