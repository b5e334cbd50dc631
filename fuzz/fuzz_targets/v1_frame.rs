//! A v1 client's text frames on arbitrary bytes (as UTF-8 when they are):
//! parsing never panics, positions read back write as they were read, and
//! whatever parses, or is refused, re-encodes into a text frame of one JSON
//! object with its `op`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::channel::check_name;
use pushhub::hub::Pos;
use pushhub::hub::listeners::WireId;
use pushhub::ws::frame::Frame;
use pushhub::ws::v1::{self, Credential, Op, PerStream, Welcome};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frames = match v1::parse(text) {
        Ok(request) => {
            let id = request.id;
            match request.op {
                Op::Auth { credential, since } => {
                    let uid = match &credential {
                        Credential::Token(_) => "u",
                        Credential::Uid(uid) => uid,
                    };
                    // Every position read back writes as it was read.
                    for pos in since.uid.iter().chain(&since.all) {
                        assert_eq!(Pos::parse(&pos.to_string()), Some(*pos));
                    }
                    let chs: Vec<&str> = since.chs.iter().map(|(ch, _)| &**ch).collect();
                    for ch in &chs {
                        assert_eq!(check_name(ch), Ok(()));
                    }
                    let welcome = Welcome {
                        uid: Some(uid),
                        conn: WireId(u64::MAX),
                        subs: &chs,
                        pos: PerStream {
                            uid: since.uid,
                            all: since.all,
                            chs: since.chs.iter().map(|(ch, p)| (&**ch, *p)).collect(),
                        },
                        recovered: Some(PerStream {
                            uid: since.uid.map(|_| true),
                            all: None,
                            chs: chs.iter().map(|ch| (*ch, false)).collect(),
                        }),
                    };
                    vec![v1::welcome(&welcome, id)]
                }
                Op::Sub { ch, since } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    vec![v1::subbed(&ch, since, since.map(|_| true), id)]
                }
                Op::Unsub { ch } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    vec![v1::unsubbed(&ch, id)]
                }
                Op::Pub { ch, d } => {
                    assert_eq!(check_name(&ch), Ok(()));
                    let pos = Some(Pos {
                        epoch: u64::MAX,
                        offset: u64::MAX >> 1,
                    });
                    let mut frames = vec![
                        v1::msg_channel(&ch, d, pos),
                        v1::msg(d, None),
                        v1::msg_broadcast(d, pos),
                    ];
                    frames.extend(id.map(|id| v1::pubbed(&ch, 1, id)));
                    frames
                }
                Op::Ping => vec![v1::pong(id)],
                Op::Ack { ch, pos } => {
                    assert_eq!(Pos::parse(&pos.to_string()), Some(pos));
                    if let Some(ch) = &ch {
                        assert_eq!(check_name(ch), Ok(()));
                    }
                    id.map(v1::acked).into_iter().collect()
                }
                Op::Send { d } => {
                    let _: serde_json::Value = serde_json::from_str(d.get()).expect("JSON");
                    id.map(v1::sent).into_iter().collect()
                }
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
