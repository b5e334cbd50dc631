//! The monitoring endpoint, on its own internal address: `GET /metrics` in the
//! Prometheus text format, `GET /healthz` for liveness checks. Anything else
//! gets a 404; a request that is not HTTP, or too slow, is closed.

use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use log::debug;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{Gauges, render};
use crate::shared::Shared;
use crate::time::timeout;

/// The longest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 4096;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers one request on `stream`, then closes it.
pub(crate) async fn serve(shared: Rc<Shared>, mut stream: Async<TcpStream>) {
    let Some(Some(head)) = timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await else {
        debug!("metrics: no request in time, or not HTTP");
        return;
    };
    let response = match route(&head) {
        Some("/metrics") => {
            let body = {
                let hub = shared.hub.borrow();
                let mut stats = hub.stats();
                let senders = shared.senders();
                stats.apns = senders.apns.map(|s| s.stats());
                stats.fcm = senders.fcm.map(|s| s.stats());
                stats.webpush = senders.webpush.map(|s| s.stats());
                stats.cluster = shared
                    .cluster
                    .as_deref()
                    .map(crate::cluster::Cluster::stats);
                render(
                    &stats,
                    &Gauges {
                        queued_bytes: hub.queued_bytes(),
                        open_fds: open_fds(),
                    },
                )
            };
            respond("200 OK", "text/plain; version=0.0.4; charset=utf-8", &body)
        }
        // In a cluster, a hub cut off from Redis still serves its own
        // clients, but backends elsewhere cannot reach them: a load
        // balancer should send new clients to a hub that is whole.
        Some("/healthz") => match shared
            .cluster
            .as_deref()
            .map(crate::cluster::Cluster::is_up)
        {
            Some(false) => respond("503 Service Unavailable", "text/plain", "redis down\n"),
            _ => respond("200 OK", "text/plain", "ok\n"),
        },
        Some(_) => respond(
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n",
        ),
        None => respond("400 Bad Request", "text/plain", "bad request\n"),
    };
    let _ = stream.write_all(response.as_bytes()).await;
}

/// Reads until the end of the request head; `None` if the client closes first
/// or sends too much.
async fn read_head(stream: &mut Async<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

/// The path of a `GET` request, or `None` for anything else.
fn route(head: &[u8]) -> Option<&str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) if request.method == Some("GET") => {
            let path = request.path?;
            Some(path.split('?').next().unwrap_or(path))
        }
        _ => None,
    }
}

fn respond(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// This process's open file descriptors, from /proc; 0 where unavailable.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(
            route(b"GET /healthz?full=1 HTTP/1.1\r\n\r\n"),
            Some("/healthz")
        );
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(route(b"\x16\x03\x01 garbage\r\n\r\n"), None);
        let response = respond("200 OK", "text/plain", "ok\n");
        assert!(response.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\nok\n"));
    }
}
