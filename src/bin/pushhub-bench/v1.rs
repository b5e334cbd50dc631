//! The v1 client (subprotocol `pushhub.v1`), for the benches that need
//! positions: connect from a chosen source address, upgrade offering the
//! subprotocol (and refuse a hub that does not answer with it), send JSON
//! ops as masked text frames, and read the hub's frames as typed messages.
//!
//! One connection is one [`V1Conn`], driven by its own task. Unlike the raw
//! client ([`crate::client`]) it reads whole answers (`welcome`, `subbed`,
//! `error`: they carry the positions), so its decoder keeps up to
//! [`V1_KEEP`] bytes of a message; of a `msg` only the first bytes are
//! looked at, for its stream and position. Bytes are read into one scratch
//! buffer shared by every connection of the thread.
//!
//! No TLS here: the v1 benches measure history and recovery, not wss.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};

use pushhub::hub::Pos;
use serde::{Deserialize, Serialize};
use smol::Async;
use smol::io::AsyncWriteExt;

use crate::client::Credential;
use crate::codec::{self, Decoder, Event, MASK, OP_CLOSE, OP_PONG, OP_TEXT};
use crate::net;

/// Bytes of a message the decoder keeps: a `welcome` with two positions is
/// about 200.
pub const V1_KEEP: usize = 1024;

/// Shared read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Longest HTTP response head accepted from the hub.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

const SUBPROTOCOL: &str = "pushhub.v1";

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Where a client stands in the streams it receives (`None`: the stream
/// carries no positions, history is off for its kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Since {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<Pos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Pos>,
}

impl Since {
    fn is_empty(&self) -> bool {
        self.uid.is_none() && self.all.is_none()
    }
}

/// What this client sends, typed as the hub reads it.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp<'a> {
    Auth {
        #[serde(skip_serializing_if = "Option::is_none")]
        uid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        #[serde(skip_serializing_if = "Since::is_empty")]
        since: Since,
    },
    Sub {
        ch: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<Pos>,
    },
}

/// Which stream a `msg` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uid,
    Channel,
    All,
}

/// A frame of the hub, as this client reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to `auth`: the streams' positions, and what a `since` recovered.
    Welcome {
        pos: Since,
        recovered_uid: Option<bool>,
        recovered_all: Option<bool>,
    },
    /// The answer to `sub`.
    Subbed {
        pos: Option<Pos>,
        recovered: Option<bool>,
    },
    /// A message of a stream, with its position if it has one.
    Msg {
        kind: Kind,
        pos: Option<Pos>,
    },
    Error {
        code: u16,
        reason: String,
    },
    /// A close frame (its code, if any).
    Closed(Option<u16>),
    /// Any other frame (`pong`, `unsubbed`, ...).
    Other,
}

/// The answers with positions, as the hub writes them.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Answer {
    Welcome {
        #[serde(default)]
        pos: WirePositions,
        #[serde(default)]
        recovered: Option<WireRecovered>,
    },
    Subbed {
        #[serde(default)]
        pos: Option<String>,
        #[serde(default)]
        recovered: Option<bool>,
    },
    Error {
        code: u16,
        #[serde(default)]
        reason: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct WirePositions {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    all: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireRecovered {
    #[serde(default)]
    uid: Option<bool>,
    #[serde(default)]
    all: Option<bool>,
}

/// Reads one text message of the hub: its first bytes and its length.
pub fn read_text(prefix: &[u8], len: u64) -> Result<Incoming, String> {
    if let Some(rest) = prefix.strip_prefix(br#"{"op":"msg","#) {
        let kind = if rest.starts_with(br#""ch":"#) {
            Kind::Channel
        } else if rest.starts_with(br#""all":"#) {
            Kind::All
        } else {
            Kind::Uid
        };
        return Ok(Incoming::Msg {
            kind,
            pos: msg_pos(rest),
        });
    }
    if prefix.len() as u64 != len {
        return Err(format!(
            "an answer of {len} bytes, over the {V1_KEEP} this client reads: {}",
            String::from_utf8_lossy(prefix)
        ));
    }
    let answer: Answer = serde_json::from_slice(prefix)
        .map_err(|e| format!("not a v1 frame ({e}): {}", String::from_utf8_lossy(prefix)))?;
    let pos = |text: Option<String>| -> Result<Option<Pos>, String> {
        text.map(|t| Pos::parse(&t).ok_or(format!("a position that does not parse: {t:?}")))
            .transpose()
    };
    Ok(match answer {
        Answer::Welcome { pos: p, recovered } => {
            let recovered = recovered.unwrap_or_default();
            Incoming::Welcome {
                pos: Since {
                    uid: pos(p.uid)?,
                    all: pos(p.all)?,
                },
                recovered_uid: recovered.uid,
                recovered_all: recovered.all,
            }
        }
        Answer::Subbed { pos: p, recovered } => Incoming::Subbed {
            pos: pos(p)?,
            recovered,
        },
        Answer::Error { code, reason } => Incoming::Error { code, reason },
        Answer::Other => Incoming::Other,
    })
}

/// The `"pos":"…"` of a `msg`, from its first bytes (the hub writes `pos`
/// before `d`, so it is within them).
fn msg_pos(text: &[u8]) -> Option<Pos> {
    const KEY: &[u8] = br#""pos":""#;
    let at = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &text[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Pos::parse(std::str::from_utf8(&rest[..end]).ok()?)
}

/// One v1 connection.
pub struct V1Conn {
    socket: Async<TcpStream>,
    decoder: Decoder<V1_KEEP>,
    /// Frames decoded and not yet taken by [`V1Conn::next`].
    inbox: VecDeque<Incoming>,
    /// Pongs and the close reply, not yet written.
    out: Vec<u8>,
    /// A decoding error, reported by the next [`V1Conn::next`].
    broken: Option<String>,
}

impl V1Conn {
    /// Connects from `src` (with SO_RCVBUF `rcvbuf` if given) and upgrades,
    /// offering `pushhub.v1`.
    pub async fn connect(
        ws: SocketAddrV4,
        src: Ipv4Addr,
        rcvbuf: Option<usize>,
    ) -> Result<V1Conn, String> {
        let socket = net::connect_from(src, ws, rcvbuf)
            .await
            .map_err(|e| format!("connect from {src} to {ws}: {e}"))?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        );
        (&socket)
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the upgrade request: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let head_end = loop {
            let mut chunk = [0u8; 512];
            let n = socket
                .read_with(|s| std::io::Read::read(&mut &*s, &mut chunk))
                .await
                .map_err(|e| format!("reading the upgrade response: {e}"))?;
            if n == 0 {
                return Err("the hub closed the connection during the handshake".into());
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err("upgrade response head over 8 KiB".into());
            }
        };
        check_upgrade(&head[..head_end])?;
        let mut conn = V1Conn {
            socket,
            decoder: Decoder::default(),
            inbox: VecDeque::new(),
            out: Vec::new(),
            broken: None,
        };
        // Whatever followed the response head is already frames.
        conn.ingest(&head[head_end..]);
        Ok(conn)
    }

    /// Sends `auth` with the credential for `uid`, and `since` if not empty.
    pub async fn auth(
        &mut self,
        credential: &Credential,
        uid: &str,
        since: Since,
    ) -> Result<(), String> {
        let token = credential.token_for(uid);
        let op = ClientOp::Auth {
            uid: token.is_none().then_some(uid),
            token: token.as_deref(),
            since,
        };
        self.send(&op).await
    }

    /// Sends `sub` to channel `ch`, with `since` if given.
    pub async fn sub(&mut self, ch: &str, since: Option<Pos>) -> Result<(), String> {
        self.send(&ClientOp::Sub { ch, since }).await
    }

    async fn send(&mut self, op: &ClientOp<'_>) -> Result<(), String> {
        let text = serde_json::to_vec(op).expect("ops serialize");
        codec::encode(&mut self.out, OP_TEXT, &text, Some(MASK));
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        (&self.socket)
            .write_all(&self.out)
            .await
            .map_err(|e| format!("writing: {e}"))?;
        // Hold no memory while idle.
        self.out = Vec::new();
        Ok(())
    }

    /// The next frame of the hub; an error at EOF or on a broken frame.
    pub async fn next(&mut self) -> Result<Incoming, String> {
        loop {
            if let Some(frame) = self.inbox.pop_front() {
                return Ok(frame);
            }
            if let Some(e) = self.broken.take() {
                return Err(e);
            }
            self.flush().await?;
            let Self {
                socket,
                decoder,
                inbox,
                out,
                broken,
            } = self;
            let n = socket
                .read_with(|s| {
                    SCRATCH.with(|scratch| {
                        let mut buf = scratch.borrow_mut();
                        let n = std::io::Read::read(&mut &*s, &mut buf)?;
                        decode(decoder, &buf[..n], inbox, out, broken);
                        Ok(n)
                    })
                })
                .await
                .map_err(|e| format!("reading: {e}"))?;
            if n == 0 && self.inbox.is_empty() {
                return Err("the hub closed the connection".into());
            }
        }
    }

    fn ingest(&mut self, data: &[u8]) {
        decode(
            &mut self.decoder,
            data,
            &mut self.inbox,
            &mut self.out,
            &mut self.broken,
        );
    }
}

/// Decodes `data` into `inbox`, queueing pongs and the close reply in `out`.
fn decode(
    decoder: &mut Decoder<V1_KEEP>,
    data: &[u8],
    inbox: &mut VecDeque<Incoming>,
    out: &mut Vec<u8>,
    broken: &mut Option<String>,
) {
    if broken.is_some() {
        return;
    }
    let result = decoder.feed(data, &mut |event| match event {
        Event::Text { prefix, len } => match read_text(prefix, len) {
            Ok(frame) => inbox.push_back(frame),
            Err(e) => *broken = Some(e),
        },
        Event::Ping(payload) => codec::encode(out, OP_PONG, payload, Some(MASK)),
        Event::Close(code) => {
            let echo = code.map(u16::to_be_bytes);
            codec::encode(
                out,
                OP_CLOSE,
                echo.as_ref().map_or(&[], |c| &c[..]),
                Some(MASK),
            );
            inbox.push_back(Incoming::Closed(code));
        }
        Event::Binary { .. } | Event::Pong => inbox.push_back(Incoming::Other),
    });
    if let Err(e) = result {
        *broken = Some(e.to_string());
    }
}

/// Checks the upgrade response: `101`, and the subprotocol given back (a hub
/// that ignores it would speak the raw protocol to this client).
fn check_upgrade(head: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101 ") {
        return Err(format!("upgrade refused: {status}"));
    }
    let v1 = text.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("sec-websocket-protocol") && value.trim() == SUBPROTOCOL
        })
    });
    if !v1 {
        return Err(format!(
            "the hub did not take the {SUBPROTOCOL} subprotocol (a hub without it?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str) -> Pos {
        Pos::parse(text).unwrap()
    }

    #[test]
    fn reads_the_answers_with_positions() {
        let welcome = br#"{"op":"welcome","uid":"u1","conn":"8589934601","subs":[],"pos":{"uid":"9c1d2e3f4a5b6c7d:3","all":"1f2e3d4c5b6a7988:42"},"recovered":{"uid":true,"all":false}}"#;
        assert_eq!(
            read_text(welcome, welcome.len() as u64),
            Ok(Incoming::Welcome {
                pos: Since {
                    uid: Some(pos("9c1d2e3f4a5b6c7d:3")),
                    all: Some(pos("1f2e3d4c5b6a7988:42")),
                },
                recovered_uid: Some(true),
                recovered_all: Some(false),
            })
        );
        // History off: no positions, nothing recovered.
        let bare = br#"{"op":"welcome","uid":"u1","conn":"1","subs":[]}"#;
        assert_eq!(
            read_text(bare, bare.len() as u64),
            Ok(Incoming::Welcome {
                pos: Since::default(),
                recovered_uid: None,
                recovered_all: None,
            })
        );
        let subbed = br#"{"op":"subbed","ch":"c0","pos":"5a:9","recovered":false}"#;
        assert_eq!(
            read_text(subbed, subbed.len() as u64),
            Ok(Incoming::Subbed {
                pos: Some(pos("5a:9")),
                recovered: Some(false),
            })
        );
        let error =
            br#"{"op":"error","code":403,"reason":"no grant allows this channel","ch":"c0"}"#;
        assert_eq!(
            read_text(error, error.len() as u64),
            Ok(Incoming::Error {
                code: 403,
                reason: "no grant allows this channel".into()
            })
        );
        assert_eq!(read_text(br#"{"op":"pong"}"#, 13), Ok(Incoming::Other));
        // Cut short, or not JSON: refused.
        assert!(read_text(&welcome[..100], welcome.len() as u64).is_err());
        assert!(read_text(b"hello", 5).is_err());
    }

    #[test]
    fn reads_a_messages_stream_and_position_from_its_first_bytes() {
        let cases: [(&[u8], Kind, Option<&str>); 4] = [
            (
                br#"{"op":"msg","pos":"9c1d:1","d":"hello"}"#,
                Kind::Uid,
                Some("9c1d:1"),
            ),
            (
                br#"{"op":"msg","ch":"c0","pos":"5a:4","d":{"t":1}}"#,
                Kind::Channel,
                Some("5a:4"),
            ),
            (
                br#"{"op":"msg","all":true,"pos":"1f:42","d":"x"}"#,
                Kind::All,
                Some("1f:42"),
            ),
            (br#"{"op":"msg","d":"no history"}"#, Kind::Uid, None),
        ];
        for (text, kind, p) in cases {
            assert_eq!(
                read_text(text, 70_000),
                Ok(Incoming::Msg {
                    kind,
                    pos: p.map(pos)
                }),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn ops_are_written_as_the_hub_reads_them() {
        let since = Since {
            uid: Some(pos("ab:3")),
            all: None,
        };
        let auth = ClientOp::Auth {
            uid: Some("u1"),
            token: None,
            since,
        };
        assert_eq!(
            serde_json::to_string(&auth).unwrap(),
            r#"{"op":"auth","uid":"u1","since":{"uid":"ab:3"}}"#
        );
        let first = ClientOp::Auth {
            uid: Some("u1"),
            token: None,
            since: Since::default(),
        };
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            r#"{"op":"auth","uid":"u1"}"#
        );
        let sub = ClientOp::Sub {
            ch: "c0",
            since: Some(pos("5a:9")),
        };
        assert_eq!(
            serde_json::to_string(&sub).unwrap(),
            r#"{"op":"sub","ch":"c0","since":"5a:9"}"#
        );
    }

    #[test]
    fn the_upgrade_must_take_the_subprotocol() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                   sec-websocket-protocol: pushhub.v1\r\n\r\n";
        assert_eq!(check_upgrade(ok), Ok(()));
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert!(check_upgrade(raw).unwrap_err().contains("subprotocol"));
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\n";
        assert!(check_upgrade(refused).unwrap_err().contains("403"));
    }

    #[test]
    fn frames_decode_into_the_inbox_and_pings_are_answered() {
        let mut decoder = Decoder::<V1_KEEP>::default();
        let (mut inbox, mut out, mut broken) = (VecDeque::new(), Vec::new(), None);
        let mut bytes = Vec::new();
        for frame in [
            pushhub::ws::frame::Frame::text(r#"{"op":"msg","pos":"a:1","d":"x"}"#),
            pushhub::ws::frame::Frame::ping(),
            pushhub::ws::frame::Frame::close(1001, "bye"),
        ] {
            bytes.extend_from_slice(frame.as_bytes());
        }
        for piece in bytes.chunks(5) {
            decode(&mut decoder, piece, &mut inbox, &mut out, &mut broken);
        }
        assert_eq!(broken, None);
        assert_eq!(
            inbox.into_iter().collect::<Vec<_>>(),
            [
                Incoming::Msg {
                    kind: Kind::Uid,
                    pos: Some(pos("a:1"))
                },
                Incoming::Closed(Some(1001)),
            ]
        );
        let mut expected = Vec::new();
        codec::encode(&mut expected, OP_PONG, &[], Some(MASK));
        codec::encode(&mut expected, OP_CLOSE, &1001u16.to_be_bytes(), Some(MASK));
        assert_eq!(out, expected);
    }
}
