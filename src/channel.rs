//! Channel names and the patterns that grant them: the rules every part that
//! names a channel shares (the text port, the v1 protocol, tokens, flags).
//!
//! A name is 1 to [`MAX_NAME_LEN`] bytes of printable ASCII without spaces, so
//! it is safe in logs, replies and URLs as it is. `*` is reserved: it ends a
//! pattern (`room:*`) and never appears in a name.

use std::fmt;

/// Longest channel name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a channel name or pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    Empty,
    TooLong,
    /// A byte that is not printable ASCII, or a space.
    NotPrintable,
    /// `*` in a name, or anywhere but at the end of a pattern.
    Star,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadName::Empty => "a channel name must not be empty",
            BadName::TooLong => "a channel name is at most 255 bytes",
            BadName::NotPrintable => {
                "a channel name is printable ASCII without spaces or control characters"
            }
            BadName::Star => "`*` is reserved: it may only end a pattern, as in room:*",
        })
    }
}

impl std::error::Error for BadName {}

/// Checks a channel name.
pub fn check_name(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BadName::TooLong);
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadName::NotPrintable);
    }
    if name.contains('*') {
        return Err(BadName::Star);
    }
    Ok(())
}

/// A channel, or every channel that starts with a prefix (`room:*`); `*`
/// alone is every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, BadName> {
        match text.strip_suffix('*') {
            Some(prefix) => {
                if prefix.contains('*') {
                    return Err(BadName::Star);
                }
                if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(BadName::NotPrintable);
                }
                if prefix.len() >= MAX_NAME_LEN {
                    return Err(BadName::TooLong);
                }
                Ok(Pattern::Prefix(prefix.to_string()))
            }
            None => check_name(text).map(|()| Pattern::Exact(text.to_string())),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// Whether `name` is a user channel of `uid`: it ends in `#<uid>`
/// (`notifications#u1`), and only that uid may subscribe to it. An
/// anonymous connection (no uid, given as "") has none.
pub fn is_user_channel_of(name: &str, uid: &str) -> bool {
    !uid.is_empty()
        && name
            .strip_suffix(uid)
            .is_some_and(|rest| rest.ends_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("room:1"), Ok(()));
        assert_eq!(check_name("a\"b\\c#{}"), Ok(()));
        assert_eq!(check_name(&"x".repeat(255)), Ok(()));
        assert_eq!(check_name(""), Err(BadName::Empty));
        assert_eq!(check_name(&"x".repeat(256)), Err(BadName::TooLong));
        assert_eq!(check_name("a b"), Err(BadName::NotPrintable));
        assert_eq!(check_name("a\tb"), Err(BadName::NotPrintable));
        assert_eq!(check_name("café"), Err(BadName::NotPrintable));
        assert_eq!(check_name("room:*"), Err(BadName::Star));
    }

    #[test]
    fn patterns() {
        let room = Pattern::parse("room:*").unwrap();
        assert!(room.matches("room:1") && room.matches("room:") && !room.matches("roo"));
        let all = Pattern::parse("*").unwrap();
        assert!(all.matches("anything"));
        let exact = Pattern::parse("news").unwrap();
        assert!(exact.matches("news") && !exact.matches("news2"));
        assert_eq!(Pattern::parse("a*b*"), Err(BadName::Star));
        assert_eq!(Pattern::parse("a*b"), Err(BadName::Star));
        assert_eq!(Pattern::parse("a b*"), Err(BadName::NotPrintable));
        assert_eq!(room.to_string(), "room:*");
    }

    #[test]
    fn user_channels() {
        assert!(is_user_channel_of("notifications#u1", "u1"));
        assert!(is_user_channel_of("#u1", "u1"));
        assert!(!is_user_channel_of("notifications#", ""));
        assert!(!is_user_channel_of("notifications#u12", "u1"));
        assert!(!is_user_channel_of("notifications#xu1", "u1"));
        assert!(!is_user_channel_of("u1", "u1"));
    }
}
