//! The state every task of the server shares: the configuration, the hub, the
//! push services, the wss acceptor of the moment, and the count of open
//! WebSocket sockets against `--max-connections` (and per client address).
//!
//! Single-threaded: `Rc` and `RefCell`, and no borrow is ever held across an
//! await. The tasks that use it (`server`, `ws`, `text_port`, `metrics::http`)
//! depend on this module, never on each other.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::credentials::log_expiry;
use crate::hub::{Hub, Limits};
use crate::push::Registry;
use crate::push::route::Senders;
use crate::push::{apns, fcm, webpush};
use crate::ws::tls::Acceptor;

/// State every task of the server shares. Single-threaded: `Rc` and `RefCell`,
/// and no borrow is ever held across an await.
pub(crate) struct Shared {
    pub config: Config,
    pub hub: RefCell<Hub>,
    /// The device registry, with `--devices-db` (or in Redis, with `--redis`).
    pub registry: Option<Rc<Registry>>,
    /// The push services' senders, as their flags ask.
    pub push: PushSenders,
    /// Cluster mode (`--redis`): the link to the other hubs.
    pub cluster: Option<Rc<Cluster>>,
    /// wss: the acceptor new connections get (replaced on SIGHUP).
    pub tls: RefCell<Option<Arc<ServerConfig>>>,
    /// WebSocket sockets open, including those still in their handshake.
    sockets: Cell<usize>,
    /// The same, per client address, when `--max-connections-per-ip` is set.
    per_ip: RefCell<HashMap<IpAddr, usize>>,
}

/// The senders of the push services the hub is configured for.
#[derive(Default, Clone)]
pub(crate) struct PushSenders {
    pub apns: Option<Rc<apns::sender::Sender>>,
    pub fcm: Option<Rc<fcm::sender::Sender>>,
    pub webpush: Option<Rc<webpush::sender::Sender>>,
}

impl Shared {
    /// The senders, as the text port hands them on.
    pub(crate) fn senders(&self) -> Senders<'_> {
        Senders {
            apns: self.push.apns.as_deref(),
            fcm: self.push.fcm.as_deref(),
            webpush: self.push.webpush.as_deref(),
        }
    }

    pub(crate) fn new(
        config: Config,
        registry: Option<Rc<Registry>>,
        push: PushSenders,
        cluster: Option<Rc<Cluster>>,
    ) -> Shared {
        let mut hub = Hub::new(Limits::from_config(&config));
        if let Some(cluster) = &cluster {
            hub.track_routes();
            hub.listeners.join_cluster(cluster.node());
        }
        Shared {
            hub: RefCell::new(hub),
            cluster,
            registry,
            push,
            tls: RefCell::new(None),
            config,
            sockets: Cell::new(0),
            per_ip: RefCell::new(HashMap::new()),
        }
    }

    /// Puts `built` in use for new wss connections (at start and on SIGHUP),
    /// and publishes and logs when its certificate expires.
    pub(crate) fn install(&self, built: Acceptor) {
        *self.tls.borrow_mut() = Some(built.acceptor);
        self.hub.borrow_mut().counters.tls_certificate_expires_at = Some(built.expires_at);
        log_expiry("the wss certificate", built.expires_at);
    }

    /// WebSocket sockets open, including those still in their handshake.
    pub(crate) fn sockets_open(&self) -> usize {
        self.sockets.get()
    }

    /// Counts one more WebSocket socket from `ip`, or says which limit it hits.
    pub(crate) fn claim_slot(self: &Rc<Self>, ip: IpAddr) -> Result<SocketSlot, Refusal> {
        if self.sockets.get() >= self.config.max_connections {
            return Err(Refusal::Full);
        }
        let counted = match self.config.max_connections_per_ip {
            Some(limit) => {
                let mut per_ip = self.per_ip.borrow_mut();
                let n = per_ip.entry(ip).or_insert(0);
                if *n >= limit {
                    return Err(Refusal::PerIp);
                }
                *n += 1;
                Some(ip)
            }
            None => None,
        };
        self.sockets.set(self.sockets.get() + 1);
        Ok(SocketSlot {
            shared: Rc::clone(self),
            ip: counted,
        })
    }
}

/// Why an accepted socket is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// At `--max-connections`.
    Full,
    /// At `--max-connections-per-ip` for its address.
    PerIp,
}

/// A WebSocket socket counted against `--max-connections` while it lives.
pub(crate) struct SocketSlot {
    shared: Rc<Shared>,
    /// The address it counts against, when addresses are counted.
    ip: Option<IpAddr>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.sockets.set(shared.sockets.get() - 1);
        if let Some(ip) = self.ip
            && let Ok(mut per_ip) = shared.per_ip.try_borrow_mut()
            && let Some(n) = per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}
