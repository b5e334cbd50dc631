//! What a client may do with channels: the grants its token carries, and the
//! rule that turns them (with `--public-channel` and user channels) into a
//! yes or a no.
//!
//! Pure: the session asks, the hub is not consulted. Deny by default: a
//! client with no grant may subscribe only to its own user channels and the
//! public ones, and may publish nowhere.

use crate::channel::{Pattern, is_user_channel_of};

/// A token's `channels`, `publish` and `subs` claims, validated. The default
/// grants nothing: what a plain-uid client, or a token without claims, has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Patterns the client may subscribe to.
    pub channels: Vec<Pattern>,
    /// Patterns the client may publish to.
    pub publish: Vec<Pattern>,
    /// Channel names the connection is subscribed to as it connects. The
    /// backend signed them, so no other grant is needed for them.
    pub subs: Vec<String>,
}

impl Grants {
    /// True when the token granted nothing at all.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.publish.is_empty() && self.subs.is_empty()
    }
}

/// Whether `uid` may subscribe itself to the channel `ch` (a checked name):
/// its token's `channels` allow it, `ch` is one of its user channels, or a
/// `--public-channel` pattern (`public`) matches.
pub fn may_subscribe(grants: &Grants, public: &[Pattern], uid: &str, ch: &str) -> bool {
    grants.channels.iter().any(|p| p.matches(ch))
        || is_user_channel_of(ch, uid)
        || public.iter().any(|p| p.matches(ch))
}

/// Whether a client may publish to `ch`: only a `publish` pattern allows it.
/// A user channel or a public one is not enough, or any subscriber could
/// speak in the name of the backend.
pub fn may_publish(grants: &Grants, ch: &str) -> bool {
    grants.publish.iter().any(|p| p.matches(ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Vec<Pattern> {
        texts.iter().map(|t| Pattern::parse(t).unwrap()).collect()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = Grants::default();
        assert!(none.is_empty());
        assert!(!may_subscribe(&none, &[], "u1", "news"));
        assert!(!may_subscribe(&none, &[], "u1", "room:1"));
        assert!(!may_publish(&none, "news"));
    }

    #[test]
    fn the_channels_claim_grants_names_and_prefixes() {
        let grants = Grants {
            channels: patterns(&["news", "room:*"]),
            ..Grants::default()
        };
        assert!(!grants.is_empty());
        assert!(may_subscribe(&grants, &[], "u1", "news"));
        assert!(may_subscribe(&grants, &[], "u1", "room:42"));
        assert!(!may_subscribe(&grants, &[], "u1", "news2"));
        assert!(!may_subscribe(&grants, &[], "u1", "room"));
        // Subscribing is not publishing.
        assert!(!may_publish(&grants, "news"));
    }

    #[test]
    fn a_user_channel_is_its_uid_s_only() {
        let none = Grants::default();
        assert!(may_subscribe(&none, &[], "u1", "notifications#u1"));
        assert!(!may_subscribe(&none, &[], "u2", "notifications#u1"));
        assert!(!may_subscribe(&none, &[], "u1", "notifications#u12"));
        assert!(!may_publish(&none, "notifications#u1"));
    }

    #[test]
    fn public_channels_are_anyone_s() {
        let none = Grants::default();
        let public = patterns(&["lobby", "ticker:*"]);
        assert!(may_subscribe(&none, &public, "anyone", "lobby"));
        assert!(may_subscribe(&none, &public, "anyone", "ticker:EURUSD"));
        assert!(!may_subscribe(&none, &public, "anyone", "lobby2"));
        assert!(!may_publish(&none, "lobby"));
    }

    #[test]
    fn the_publish_claim_grants_publishing_only() {
        let grants = Grants {
            publish: patterns(&["chat:*"]),
            ..Grants::default()
        };
        assert!(may_publish(&grants, "chat:1"));
        assert!(!may_publish(&grants, "chats"));
        assert!(!may_subscribe(&grants, &[], "u1", "chat:1"));
        let everything = Grants {
            publish: patterns(&["*"]),
            ..Grants::default()
        };
        assert!(may_publish(&everything, "anything"));
    }

    #[test]
    fn subs_grant_nothing_else() {
        let grants = Grants {
            subs: vec!["news".to_string()],
            ..Grants::default()
        };
        assert!(!grants.is_empty());
        assert!(!may_subscribe(&grants, &[], "u1", "news"));
        assert!(!may_publish(&grants, "news"));
    }
}
