//! One origin's lane: its queue, and its connection: one HTTP/2 connection
//! shared by the lane's workers (a keeper task connects, drives it and
//! reconnects with backoff), or, for an origin that turns HTTP/2 down, a few
//! HTTP/1.1 connections that workers take one at a time and hand back.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use async_native_tls::TlsConnector;
use smol::{Timer, channel};

use super::origin::{self, ConnectError, Origin, Tls};
use super::{Config, Request, Watch};
use crate::push::http1::{Http1, Http1Error};
use crate::push::http2::{self, Http2, Response};

/// A connection a worker holds for one request.
pub enum Conn {
    /// The lane's shared HTTP/2 connection, and which one it is.
    Http2 {
        http2: Http2,
        generation: u64,
    },
    Http1(Box<Http1<Tls>>),
}

/// Why a request got no response.
#[derive(Debug)]
pub enum PostError {
    /// The request could not be made; sending it again would not help.
    Invalid(String),
    /// The stream alone failed; the connection still serves.
    Stream(String),
    /// The connection failed.
    Connection(String),
}

impl Conn {
    pub async fn post(&mut self, request: &Request) -> Result<Response, PostError> {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let body = request.body.clone();
        match self {
            Conn::Http2 { http2, .. } => {
                http2
                    .post(&request.path, &headers, body)
                    .await
                    .map_err(|e| match e {
                        http2::PostError::Invalid(e) => PostError::Invalid(e.to_string()),
                        http2::PostError::Http2(e) if e.is_reset() && !e.is_go_away() => {
                            PostError::Stream(e.to_string())
                        }
                        http2::PostError::Http2(e) => PostError::Connection(e.to_string()),
                    })
            }
            Conn::Http1(http1) => http1
                .post(&request.path, &headers, body)
                .await
                .map_err(|e| match e {
                    Http1Error::Invalid(why) => PostError::Invalid(why),
                    e => PostError::Connection(e.to_string()),
                }),
        }
    }

    /// The HTTP/2 connection's generation; HTTP/1.1 ones are not shared.
    pub fn generation(&self) -> Option<u64> {
        match self {
            Conn::Http2 { generation, .. } => Some(*generation),
            Conn::Http1(_) => None,
        }
    }
}

/// What [`Lane::take`] found.
enum Take {
    Ready(Conn),
    /// A slot for one more HTTP/1.1 connection, counted as open: connect it.
    Connect,
    /// Every HTTP/1.1 connection (this many) is busy.
    WaitHttp1(usize),
    /// No HTTP/2 connection but the one of this generation (or none).
    WaitHttp2(u64),
}

/// The connection as the workers see it.
#[derive(Default)]
struct Link {
    /// Counts HTTP/2 connection attempts, successful or not: a worker waiting
    /// for a connection wakes when it changes.
    generation: u64,
    /// The sending half while the HTTP/2 connection is up.
    http2: Option<Http2>,
    /// Why the last connection attempt failed, or the last connection ended.
    last_error: String,
    /// A worker found the connection dead: the keeper drops it.
    abandoned: bool,
    /// The origin turned HTTP/2 down: workers use HTTP/1.1 connections.
    http1: bool,
    /// HTTP/1.1 connections between requests, and how many are open.
    idle_http1: Vec<Http1<Tls>>,
    open_http1: usize,
}

pub struct Lane<J> {
    pub origin: Origin,
    jobs: channel::Sender<J>,
    taken: channel::Receiver<J>,
    /// Whether HTTP/1.1 may be used when the origin turns HTTP/2 down.
    http1_allowed: bool,
    link: RefCell<Link>,
    changed: Watch,
    /// Jobs being delivered now.
    busy: Cell<usize>,
    last_active: Cell<Instant>,
    /// A `Retry-After` holds every request of the lane until then.
    paused_until: Cell<Option<Instant>>,
}

impl<J> Lane<J> {
    pub fn new(origin: Origin, http1_allowed: bool) -> Lane<J> {
        // Unbounded: the sender bounds all lanes' jobs together.
        let (jobs, taken) = channel::unbounded();
        Lane {
            origin,
            jobs,
            taken,
            http1_allowed,
            link: RefCell::default(),
            changed: Watch::default(),
            busy: Cell::new(0),
            last_active: Cell::new(Instant::now()),
            paused_until: Cell::new(None),
        }
    }

    pub fn push(&self, job: J) {
        self.last_active.set(Instant::now());
        let _ = self.jobs.try_send(job);
    }

    /// Jobs waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.taken.len()
    }

    /// The next job, or `None` once the lane is closed.
    pub async fn next(&self) -> Option<J> {
        let job = self.taken.recv().await.ok()?;
        self.busy.set(self.busy.get() + 1);
        Some(job)
    }

    /// A job taken by [`Lane::next`] is done.
    pub fn done(&self) {
        self.busy.set(self.busy.get().saturating_sub(1));
        self.last_active.set(Instant::now());
    }

    /// How long the lane has had nothing to do.
    pub fn idle_for(&self) -> Duration {
        if self.busy.get() > 0 || !self.taken.is_empty() {
            return Duration::ZERO;
        }
        self.last_active.get().elapsed()
    }

    /// Ends the workers (once the queue is empty: see [`Lane::idle_for`]).
    pub fn close(&self) {
        self.jobs.close();
    }

    /// Holds the lane's requests for `after` (a `Retry-After`).
    pub fn pause(&self, after: Duration) {
        let until = Instant::now() + after;
        if self.paused_until.get().is_none_or(|t| t < until) {
            self.paused_until.set(Some(until));
        }
    }

    pub async fn unpaused(&self) {
        while let Some(until) = self.paused_until.get() {
            if Instant::now() >= until {
                self.paused_until.set(None);
                break;
            }
            Timer::at(until).await;
        }
    }

    /// A connection other than HTTP/2 generation `not`. Each failed
    /// connection attempt meanwhile counts as one of `attempts`; past the
    /// limit, the last attempt's error.
    pub async fn connection(
        &self,
        config: &Config,
        tls_http1: Option<&TlsConnector>,
        connections: &Cell<u64>,
        not: Option<u64>,
        attempts: &mut u32,
    ) -> Result<Conn, String> {
        let max_attempts = config.max_attempts.max(1);
        loop {
            match self.take(config, not) {
                Take::Ready(conn) => return Ok(conn),
                Take::Connect => {
                    let connected = match tls_http1 {
                        Some(tls) => self.connect_http1(config, tls).await,
                        None => Err(ConnectError::Resolve("HTTP/1.1 not allowed".into())),
                    };
                    match connected {
                        Ok(http1) => {
                            connections.set(connections.get() + 1);
                            return Ok(Conn::Http1(Box::new(http1)));
                        }
                        Err(e) => {
                            self.link.borrow_mut().open_http1 -= 1;
                            self.changed.notify();
                            *attempts += 1;
                            if *attempts >= max_attempts {
                                return Err(e.to_string());
                            }
                            Timer::after(config.backoff(*attempts)).await;
                        }
                    }
                }
                // HTTP/1.1 with every connection busy: wait for one back.
                Take::WaitHttp1(open) => {
                    let back = || {
                        let link = self.link.borrow();
                        !link.idle_http1.is_empty() || link.open_http1 < open
                    };
                    self.changed.until(back).await;
                }
                Take::WaitHttp2(seen) => {
                    let changed = || {
                        let link = self.link.borrow();
                        link.generation != seen || link.http1
                    };
                    self.changed.until(changed).await;
                    let link = self.link.borrow();
                    if link.http2.is_none() && !link.http1 {
                        *attempts += 1;
                        if *attempts >= max_attempts {
                            return Err(link.last_error.clone());
                        }
                    }
                }
            }
        }
    }

    /// What the link offers a worker now, without waiting.
    fn take(&self, config: &Config, not: Option<u64>) -> Take {
        let mut link = self.link.borrow_mut();
        if link.http1 {
            if let Some(http1) = link.idle_http1.pop() {
                return Take::Ready(Conn::Http1(Box::new(http1)));
            }
            if link.open_http1 < config.max_http1_connections.max(1) {
                link.open_http1 += 1;
                return Take::Connect;
            }
            return Take::WaitHttp1(link.open_http1);
        }
        match &link.http2 {
            Some(http2) if Some(link.generation) != not => Take::Ready(Conn::Http2 {
                http2: http2.clone(),
                generation: link.generation,
            }),
            _ => Take::WaitHttp2(link.generation),
        }
    }

    async fn connect_http1(
        &self,
        config: &Config,
        tls: &TlsConnector,
    ) -> Result<Http1<Tls>, ConnectError> {
        let limit = config.connect_timeout;
        crate::time::timeout(limit, origin::connect_h1(&self.origin, tls))
            .await
            .unwrap_or(Err(ConnectError::TimedOut(limit)))
    }

    /// Hands a connection back after a request; `healthy` says whether it
    /// may serve another.
    pub fn release(&self, conn: Conn, healthy: bool) {
        if let Conn::Http1(http1) = conn {
            let mut link = self.link.borrow_mut();
            if healthy && http1.reusable() {
                link.idle_http1.push(*http1);
            } else {
                link.open_http1 -= 1;
            }
            drop(link);
            self.changed.notify();
        }
    }

    /// Drops a connection a request got no answer on: an HTTP/2 one is
    /// replaced for every worker, if it is still the current one.
    pub fn abandon(&self, conn: Conn) {
        match conn {
            Conn::Http2 { generation, .. } => {
                let mut link = self.link.borrow_mut();
                if link.generation == generation && link.http2.is_some() && !link.abandoned {
                    link.abandoned = true;
                    drop(link);
                    self.changed.notify();
                }
            }
            http1 => self.release(http1, false),
        }
    }

    /// Connects, drives the HTTP/2 connection until it ends, and again;
    /// waits before a new attempt once an attempt failed, or a connection
    /// ended soon without answering anything. Stops trying once the origin
    /// turned HTTP/2 down (if HTTP/1.1 is allowed).
    pub async fn keep_connected(
        &self,
        config: &Config,
        tls: &TlsConnector,
        connections: &Cell<u64>,
        answers: &Cell<u64>,
        name: &str,
    ) {
        let mut failures = 0;
        loop {
            if failures > 0 {
                Timer::after(config.backoff(failures)).await;
            }
            let limit = config.connect_timeout;
            let connected = crate::time::timeout(limit, origin::connect_h2(&self.origin, tls))
                .await
                .unwrap_or(Err(ConnectError::TimedOut(limit)));
            let driver = match connected {
                Ok((http2, driver)) => {
                    connections.set(connections.get() + 1);
                    let mut link = self.link.borrow_mut();
                    link.generation += 1;
                    link.http2 = Some(http2);
                    link.abandoned = false;
                    driver
                }
                Err(e) if self.http1_allowed && turned_http2_down(&e) => {
                    log::info!(
                        "{name}: {} does not speak HTTP/2 ({e}); HTTP/1.1",
                        self.origin
                    );
                    self.switch_to_http1();
                    return std::future::pending().await;
                }
                Err(e) => {
                    log::warn!("{name}: {}: {e}", self.origin);
                    failures += 1;
                    let mut link = self.link.borrow_mut();
                    link.generation += 1;
                    link.http2 = None;
                    link.last_error = e.to_string();
                    drop(link);
                    self.changed.notify();
                    continue;
                }
            };
            self.changed.notify();
            let answered_before = answers.get();
            let since = Instant::now();
            let ended = async {
                match driver.await {
                    Ok(()) => "connection closed by the server".to_string(),
                    Err(e) => format!("connection lost: {e}"),
                }
            };
            let abandoned = async {
                self.changed.until(|| self.link.borrow().abandoned).await;
                "connection dropped: a request got no answer in time".to_string()
            };
            // Dropping the driver ends the connection's streams with errors.
            let ended = smol::future::or(ended, abandoned).await;
            log::info!("{name}: {ended}");
            {
                let mut link = self.link.borrow_mut();
                link.http2 = None;
                link.last_error = ended;
            }
            // A connection that served, or lived long (services close idle
            // ones), worked: the next attempt is at once.
            let worked = answers.get() != answered_before || since.elapsed() >= config.backoff_max;
            if worked {
                failures = 0;
            } else {
                failures += 1;
            }
        }
    }
}

impl<J> Lane<J> {
    /// From now on, workers make HTTP/1.1 connections of their own.
    fn switch_to_http1(&self) {
        {
            let mut link = self.link.borrow_mut();
            link.generation += 1;
            link.http1 = true;
        }
        self.changed.notify();
    }
}

/// Whether a connection failed because the server does not speak HTTP/2:
/// its answer to the HTTP/2 preface was not HTTP/2 (HTTP/1.1 text), it
/// closed the connection at the preface, or TLS refused the protocol we
/// asked for. A server that does speak HTTP/2 but failed at that moment
/// gets HTTP/1.1 until its lane is idle: slower, never wrong, since push
/// services speak HTTP/1.1 too.
fn turned_http2_down(e: &ConnectError) -> bool {
    match e {
        ConnectError::Http2(_) | ConnectError::Http2Closed => true,
        ConnectError::Tls(e) => e.to_string().contains("no application protocol"),
        _ => false,
    }
}
