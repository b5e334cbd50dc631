//! What hubs say to each other through Redis.
//!
//! A **request** is published to the route it is for (a uid's, a
//! channel's, or every hub's): `<origin> <request> <part>\n` and then the
//! backend's line exactly as it came, so every hub acts on it with the
//! text port's own parser. The channel it arrives on says which uid or
//! channel of the line it is for. A message of a stream with history also
//! carries the position Redis gave it (`<origin> <request> <part>
//! <epoch>:<offset>\n`, written by the `PUBLISH` script of `streams`).
//!
//! An **answer** is published to the origin's own channel: lines of
//! `<request> <part> <partial>`, where the partial is JSON; a hub batches
//! every answer for one origin from one read into one message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::hub::Pos;

/// One hub's share of an answer, as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub enum Partial {
    /// Connections that took a push, publication or broadcast.
    #[serde(rename = "d")]
    Delivered(usize),
    /// Connections of a uid.
    #[serde(rename = "o")]
    Online(usize),
    #[serde(rename = "k")]
    Kicked(usize),
    /// Connections newly subscribed, and refusals by reason.
    #[serde(rename = "s")]
    Subscribed(usize, BTreeMap<String, usize>),
    #[serde(rename = "u")]
    Unsubscribed(usize),
    /// A channel's uids and its connections.
    #[serde(rename = "m")]
    Members(Vec<String>, usize),
    /// Channels with their connections.
    #[serde(rename = "c")]
    Channels(Vec<(String, usize)>),
    /// Each hub's stats.
    #[serde(rename = "n")]
    Nodes(Vec<Box<RawValue>>),
    /// A connection acknowledged the push (`ack_timeout`): sent on its own,
    /// after the push's answer, by the hub that holds the connection.
    #[serde(rename = "a")]
    Acked,
}

impl Partial {
    /// Adds another hub's share. Shares of another kind (from a hub of
    /// another version) are ignored rather than mixed in.
    pub fn merge(&mut self, other: Partial) {
        use Partial::*;
        match (self, other) {
            (Delivered(a), Delivered(b))
            | (Online(a), Online(b))
            | (Kicked(a), Kicked(b))
            | (Unsubscribed(a), Unsubscribed(b)) => *a += b,
            (Subscribed(a, refused), Subscribed(b, more)) => {
                *a += b;
                for (reason, n) in more {
                    *refused.entry(reason).or_insert(0) += n;
                }
            }
            (Members(uids, a), Members(more, b)) => {
                uids.extend(more);
                uids.sort_unstable();
                uids.dedup();
                *a += b;
            }
            (Channels(list), Channels(more)) => {
                let mut all: BTreeMap<String, usize> = std::mem::take(list).into_iter().collect();
                for (ch, n) in more {
                    *all.entry(ch).or_insert(0) += n;
                }
                *list = all.into_iter().collect();
            }
            (Nodes(a), Nodes(b)) => a.extend(b),
            _ => {}
        }
    }
}

/// A request's header, as published.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub origin: &'a str,
    pub request: u64,
    pub part: u32,
    /// The message's position in its stream, when it has one.
    pub pos: Option<Pos>,
}

/// Appends a request's header but for its position and the newline: what
/// the `PUBLISH` script completes.
pub fn head(out: &mut Vec<u8>, header: &Header) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{} {} {}", header.origin, header.request, header.part);
}

/// Appends a request: its header, then the line.
pub fn request(out: &mut Vec<u8>, header: &Header, line: &[u8]) {
    head(out, header);
    if let Some(pos) = header.pos {
        out.push(b' ');
        out.extend_from_slice(pos.to_string().as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(line);
}

/// Splits a request into its header and its line; `None` if it is not one.
pub fn parse_request(message: &[u8]) -> Option<(Header<'_>, &[u8])> {
    let end = message.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&message[..end]).ok()?;
    let mut fields = head.split(' ');
    let header = Header {
        origin: fields.next().filter(|o| !o.is_empty())?,
        request: fields.next()?.parse().ok()?,
        part: fields.next()?.parse().ok()?,
        pos: None,
    };
    let header = match fields.next() {
        Some(pos) => Header {
            pos: Some(Pos::parse(pos)?),
            ..header
        },
        None => header,
    };
    fields
        .next()
        .is_none()
        .then_some((header, &message[end + 1..]))
}

/// Appends one answer line to a batch for one origin.
pub fn answer(out: &mut Vec<u8>, request: u64, part: u32, partial: &Partial) {
    use std::io::Write;
    let _ = write!(out, "{request} {part} ");
    // Our partials are plain data with string keys: they always serialize.
    serde_json::to_writer(&mut *out, partial).expect("partials serialize");
    out.push(b'\n');
}

/// The answers of one batch; lines that do not parse are skipped (and
/// counted by the caller as what they are: a hub that does not answer).
pub fn parse_answers(batch: &[u8]) -> impl Iterator<Item = (u64, u32, Partial)> + '_ {
    batch.split(|&b| b == b'\n').filter_map(|line| {
        let text = std::str::from_utf8(line).ok()?;
        let mut fields = text.splitn(3, ' ');
        let request = fields.next()?.parse().ok()?;
        let part = fields.next()?.parse().ok()?;
        let partial = serde_json::from_str(fields.next()?).ok()?;
        Some((request, part, partial))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_the_line_verbatim() {
        let mut out = Vec::new();
        let header = Header {
            origin: "node-a",
            request: 42,
            part: 3,
            pos: None,
        };
        let line = b"{\"uid\":\"u 1\",\"x\":\"a\\nb\"}";
        request(&mut out, &header, line);
        let (parsed, rest) = parse_request(&out).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(rest, line);
        let header = Header {
            pos: Pos::parse("1f:7"),
            ..header
        };
        out.clear();
        request(&mut out, &header, line);
        assert!(out.starts_with(b"node-a 42 3 1f:7\n"));
        assert_eq!(parse_request(&out), Some((header, &line[..])));
        for bad in [
            &b"no newline"[..],
            b"a 1\n{}",
            b"a x 1\n{}",
            b" 1 2\n",
            b"a 1 2 3\n",
            b"a 1 2 3:4 5\n",
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_batch_and_skip_garbage() {
        let mut batch = Vec::new();
        answer(&mut batch, 7, 0, &Partial::Delivered(2));
        batch.extend_from_slice(b"garbage line\n9 1 {\"zz\":1}\n");
        answer(&mut batch, 8, 1, &Partial::Members(vec!["u1".into()], 1));
        let answers: Vec<_> = parse_answers(&batch).collect();
        assert_eq!(answers.len(), 2);
        assert!(matches!(answers[0], (7, 0, Partial::Delivered(2))));
        assert!(matches!(&answers[1], (8, 1, Partial::Members(u, 1)) if u == &["u1"]));
    }

    #[test]
    fn partials_merge_by_kind() {
        let mut d = Partial::Delivered(1);
        d.merge(Partial::Delivered(2));
        d.merge(Partial::Kicked(5));
        assert!(matches!(d, Partial::Delivered(3)));
        let mut m = Partial::Members(vec!["b".into(), "a".into()], 2);
        m.merge(Partial::Members(vec!["a".into(), "c".into()], 2));
        assert!(matches!(&m, Partial::Members(u, 4) if u == &["a", "b", "c"]));
        let mut c = Partial::Channels(vec![("x".into(), 1)]);
        c.merge(Partial::Channels(vec![("a".into(), 2), ("x".into(), 3)]));
        assert!(
            matches!(&c, Partial::Channels(l) if l == &[("a".to_string(), 2), ("x".to_string(), 4)])
        );
    }
}
