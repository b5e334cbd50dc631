//! A v1 client's text frames on arbitrary bytes (as UTF-8 when they are):
//! parsing never panics, and whatever parses, or is refused, re-encodes into
//! a text frame of one JSON object with its `op`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::channel::check_name;
use pushhub::ws::frame::Frame;
use pushhub::ws::v1::{self, Credential, Op};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frames = match v1::parse(text) {
        Ok(request) => {
            let id = request.id;
            match request.op {
                Op::Auth(Credential::Token(_)) => vec![v1::welcome("u", &[], id)],
                Op::Auth(Credential::Uid(uid)) => vec![v1::welcome(&uid, &[], id)],
                Op::Sub { ch } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    vec![v1::subbed(&ch, id), v1::welcome("u", &[&ch], id)]
                }
                Op::Unsub { ch } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    vec![v1::unsubbed(&ch, id)]
                }
                Op::Pub { ch, d } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    let mut frames =
                        vec![v1::msg_channel(&ch, d), v1::msg(d), v1::msg_broadcast(d)];
                    frames.extend(id.map(|id| v1::pubbed(&ch, 1, id)));
                    frames
                }
                Op::Ping => vec![v1::pong(id)],
            }
        }
        Err(refused) => vec![v1::error(&refused.error, refused.id, refused.ch.as_deref())],
    };
    for frame in &frames {
        let json: serde_json::Value = serde_json::from_str(payload(frame)).expect("JSON");
        assert!(json["op"].is_string(), "{json}");
    }
});

/// A server frame's text: unmasked, its length in 0, 2 or 8 extra bytes.
fn payload(frame: &Frame) -> &str {
    let bytes = frame.as_bytes();
    assert_eq!(bytes[0], 0x81, "a final text frame");
    let start = match bytes[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    std::str::from_utf8(&bytes[start..]).expect("UTF-8")
}
