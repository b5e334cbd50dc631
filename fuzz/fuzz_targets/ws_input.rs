//! What a WebSocket client sends, on arbitrary bytes: the upgrade request, then
//! frames through the decoder, fed in pieces as a socket would deliver them.
//! Never a panic; the decoder never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::ws::handshake;
use pushhub::ws::inbound::Decoder;

fuzz_target!(|data: &[u8]| {
    let (head, frames) = data.split_at(data.len() / 2);
    let _ = handshake::parse(head);
    let mut decoder = Decoder::new(4096);
    let mut pending = Vec::new();
    // The first byte picks the piece size, so pieces of every size are tried.
    let piece = usize::from(frames.first().copied().unwrap_or(1)).max(1);
    for chunk in frames.chunks(piece) {
        pending.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut pending) {
                Ok(Some((used, _message))) => {
                    assert!(used > 0 && used <= pending.len());
                    pending.drain(..used);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
