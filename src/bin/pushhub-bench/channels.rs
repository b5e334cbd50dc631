//! The channels of the channel benches (`subs`, `publish`): which client is
//! subscribed to which channel, and the `subscribe` requests that set it up
//! through the text port, pipelined. It neither publishes nor reads the
//! clients: the benches do.
//!
//! Client `i` (uid `u<i>`) is in the `per_client` channels
//! `c<(i*per_client + j) % channels>`, `j < per_client`: neighbours share
//! channels, and every channel has about `n*per_client/channels` members.

use crate::textport::{Backend, Stats, subscribe_line, subscribed};

/// Who is in which channel.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub n: u32,
    pub per_client: u32,
    pub channels: u32,
}

/// The name of channel `ch`.
pub fn name(ch: u32) -> String {
    format!("c{ch}")
}

impl Plan {
    pub fn new(n: u32, per_client: u32, channels: u32) -> Result<Plan, String> {
        if n == 0 || per_client == 0 || channels == 0 {
            return Err("--n, --per-client and --channels must be at least 1".into());
        }
        if per_client > channels {
            return Err(format!(
                "--per-client {per_client} is more than the {channels} channels: a client \
                 would be in one channel twice"
            ));
        }
        Ok(Plan {
            n,
            per_client,
            channels,
        })
    }

    /// Client `i`'s `j`-th channel.
    pub fn channel(&self, i: u32, j: u32) -> u32 {
        ((u64::from(i) * u64::from(self.per_client) + u64::from(j)) % u64::from(self.channels))
            as u32
    }

    /// Whether client `i` is in channel `ch`: whether `ch` is among the
    /// `per_client` channels from client `i`'s first one on, modulo `channels`.
    pub fn is_member(&self, i: u32, ch: u32) -> bool {
        let c = u64::from(self.channels);
        let first = u64::from(self.channel(i, 0));
        (u64::from(ch) + c - first) % c < u64::from(self.per_client)
    }

    /// How many clients are in channel `ch`.
    pub fn members(&self, ch: u32) -> u32 {
        (0..self.n).filter(|&i| self.is_member(i, ch)).count() as u32
    }

    pub fn subscriptions(&self) -> u64 {
        u64::from(self.n) * u64::from(self.per_client)
    }

    /// Clients `i` and `i + period` are in the same channels, since
    /// `period * per_client` is a multiple of `channels`.
    fn period(&self) -> u32 {
        self.channels / gcd(self.per_client, self.channels)
    }

    /// Channels with at least one member.
    pub fn used_channels(&self) -> u64 {
        let mut used = vec![false; self.channels as usize];
        for i in 0..self.n.min(self.period()) {
            for j in 0..self.per_client {
                used[self.channel(i, j) as usize] = true;
            }
        }
        used.iter().filter(|&&u| u).count() as u64
    }

    /// The requests of round `j`, each client's `j`-th channel: one per group
    /// of at most `batch` clients that share it. Returns the lines and how many
    /// requests they are.
    pub fn round(&self, j: u32, batch: u32) -> (Vec<u8>, usize) {
        let (mut lines, mut count) = (Vec::new(), 0);
        let period = self.period();
        for first in 0..self.n.min(period) {
            let ch = name(self.channel(first, j));
            let group: Vec<u32> = (first..self.n).step_by(period as usize).collect();
            for uids in group.chunks(batch.max(1) as usize) {
                lines.extend_from_slice(&subscribe_line(uids.iter().copied(), &[&ch]));
                count += 1;
            }
        }
        (lines, count)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Subscribes every client to its `j`-th channel, pipelined, and checks that
/// the replies count one new subscription per client.
pub async fn subscribe_round(
    backend: &mut Backend,
    plan: &Plan,
    j: u32,
    batch: u32,
) -> Result<(), String> {
    let (lines, count) = plan.round(j, batch);
    let mut added = 0;
    backend
        .pipeline(&lines, count, |reply| {
            added += subscribed(reply)?;
            Ok(())
        })
        .await?;
    if added != u64::from(plan.n) {
        return Err(format!(
            "round {j} subscribed {added} connections of {} (clients missing from the hub?)",
            plan.n
        ));
    }
    Ok(())
}

/// Checks the hub's `stats` against the plan, once every round is done.
pub async fn check_counts(backend: &mut Backend, plan: &Plan) -> Result<Stats, String> {
    let stats = backend.stats().await?;
    if stats.subscriptions != plan.subscriptions() || stats.channels != plan.used_channels() {
        return Err(format!(
            "the hub counts {} subscriptions in {} channels; expected {} in {}",
            stats.subscriptions,
            stats.channels,
            plan.subscriptions(),
            plan.used_channels()
        ));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The subscriptions a round's requests make, as (uid, channel) pairs.
    fn pairs(plan: &Plan, j: u32, batch: u32) -> Vec<(u32, u32)> {
        let (lines, count) = plan.round(j, batch);
        let requests: Vec<Value> = lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(requests.len(), count);
        let mut pairs = Vec::new();
        for r in &requests {
            assert_eq!(r["cmd"], "subscribe");
            let uids = r["uids"].as_array().unwrap();
            assert!(uids.len() <= batch as usize);
            for uid in uids {
                for ch in r["chs"].as_array().unwrap() {
                    let uid = uid.as_str().unwrap()[1..].parse().unwrap();
                    let ch = ch.as_str().unwrap()[1..].parse().unwrap();
                    pairs.push((uid, ch));
                }
            }
        }
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn rounds_subscribe_each_client_to_its_channels_once() {
        for (n, k, c) in [(2000, 10, 1000), (37, 7, 100), (5, 3, 3), (10, 1, 1)] {
            let plan = Plan::new(n, k, c).unwrap();
            let mut all = Vec::new();
            for j in 0..k {
                let round = pairs(&plan, j, 50);
                let expected: Vec<(u32, u32)> = (0..n).map(|i| (i, plan.channel(i, j))).collect();
                assert_eq!(round, expected, "n {n} k {k} c {c} round {j}");
                all.extend(round);
            }
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len() as u64, plan.subscriptions(), "no pair twice");
        }
    }

    #[test]
    fn channels_are_shared_as_planned() {
        let plan = Plan::new(2000, 10, 1000).unwrap();
        assert_eq!((plan.channel(0, 0), plan.channel(0, 9)), (0, 9));
        assert_eq!(plan.channel(100, 3), 3);
        assert_eq!(plan.channel(199, 9), 999);
        // 2000 × 10 subscriptions over 1000 channels: 20 members each.
        assert_eq!(plan.members(0), 20);
        assert_eq!(plan.members(999), 20);
        assert_eq!(plan.used_channels(), 1000);
        assert!(plan.is_member(0, 9) && !plan.is_member(0, 10) && plan.is_member(1, 10));
        for i in 0..2000 {
            for ch in 0..1000 {
                let by_channel = (0..10).any(|j| plan.channel(i, j) == ch);
                assert_eq!(plan.is_member(i, ch), by_channel);
            }
        }
        // Client 1's three channels of four wrap around: c3, c0, c1.
        let wrap = Plan::new(5, 3, 4).unwrap();
        assert!(wrap.is_member(1, 3) && wrap.is_member(1, 0) && !wrap.is_member(1, 2));
        assert_eq!(Plan::new(2, 10, 1000).unwrap().used_channels(), 20);
    }

    #[test]
    fn requests_are_batched() {
        let plan = Plan::new(18000, 10, 1000).unwrap();
        // 100 groups of 180 clients share their channels.
        assert_eq!(plan.round(0, 500).1, 100);
        assert_eq!(plan.round(0, 100).1, 200);
        // One channel for everyone: 36 requests of 500 uids.
        let one = Plan::new(18000, 1, 1).unwrap();
        assert_eq!(one.round(0, 500).1, 36);
    }

    #[test]
    fn bad_plans() {
        assert!(Plan::new(0, 1, 1).is_err());
        assert!(Plan::new(1, 0, 1).is_err());
        assert!(Plan::new(1, 1, 0).is_err());
        assert!(Plan::new(1, 11, 10).is_err());
    }
}
