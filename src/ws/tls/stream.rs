//! A server-side TLS stream for smol, on rustls's unbuffered connection: the
//! buffers are ours, so an idle connection holds none. Bytes are read into and
//! sealed in buffers shared by every connection of the thread; a connection
//! keeps bytes of its own only while a record is half received, decrypted
//! data is half read, or sealed data is half sent.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// The most plaintext sealed per write: one TLS record.
const RECORD: usize = 16 * 1024;
/// What sealing adds to a record, at most: its header, the inner content
/// type, and the AEAD tag (and TLS 1.2's explicit nonce).
const RECORD_OVERHEAD: usize = 5 + 1 + 16 + 8;
/// How much is read from the socket at once: a few records.
const READ: usize = 32 * 1024;
/// Received bytes kept while they do not yet make a whole message: a record
/// (16 KiB and its overhead), or a handshake message spread over records,
/// which rustls bounds at 64 KiB.
const MAX_PENDING: usize = 64 * 1024 + RECORD + 2 * RECORD_OVERHEAD;

thread_local! {
    static RECEIVED: RefCell<Vec<u8>> = RefCell::new(vec![0; READ]);
    static SEALED: RefCell<Vec<u8>> = RefCell::new(vec![0; RECORD + RECORD_OVERHEAD]);
}

pub struct TlsStream {
    socket: Async<TcpStream>,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed: the start of a record.
    pending: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet.
    plaintext: Vec<u8>,
    /// Sealed bytes the socket has not taken yet.
    outgoing: Vec<u8>,
    /// The client sent its close_notify, or closed the socket.
    eof: bool,
}

/// What to do once the handshake allows application data.
enum Then<'a> {
    Nothing,
    /// Seal these bytes into the shared buffer; the length sealed is returned.
    Seal(&'a [u8]),
    CloseNotify,
}

impl TlsStream {
    /// The server's side of the handshake, with the settings of `config`.
    pub async fn accept(
        config: Arc<ServerConfig>,
        socket: Async<TcpStream>,
    ) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = TlsStream {
            socket,
            conn,
            pending: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            eof: false,
        };
        std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Reads what the socket has and runs it through the connection: `Ready`
    /// once something was read (which may have produced no plaintext, only
    /// handshake messages to send), or at the end.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let read = RECEIVED.with_borrow_mut(|received| {
                let n = match self.socket.get_ref().read(received) {
                    Ok(0) => {
                        self.eof = true;
                        return Ok(true);
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    // Nothing read, and the caller tries again.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                    Err(e) => return Err(e),
                };
                if self.pending.is_empty() {
                    // The usual case: whole records, processed where they
                    // were read; only an incomplete one's start is kept.
                    let used = self.process(&mut received[..n], Then::Nothing)?.0;
                    self.pending.extend_from_slice(&received[used..n]);
                } else {
                    self.pending.extend_from_slice(&received[..n]);
                    let mut pending = std::mem::take(&mut self.pending);
                    let used = self.process(&mut pending, Then::Nothing)?.0;
                    pending.drain(..used);
                    self.pending = pending;
                }
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                } else if self.pending.len() > MAX_PENDING {
                    return Err(invalid("a TLS message larger than the limit"));
                }
                Ok(true)
            })?;
            if read {
                return Poll::Ready(Ok(()));
            }
            ready!(self.socket.poll_readable(cx))?;
        }
    }

    /// Runs the connection over `received` until it needs more bytes: what
    /// it decrypts goes to `plaintext`, what it has to send to `outgoing`,
    /// and `then` is done once application data may flow. Returns how much
    /// of `received` was used, and what `then` sealed.
    fn process(&mut self, received: &mut [u8], mut then: Then<'_>) -> io::Result<(usize, usize)> {
        let mut used = 0;
        let mut sealed = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut received[used..]);
            let mut blocked = false;
            match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let at = self.outgoing.len();
                    self.outgoing.resize(at + 4096, 0);
                    let n = match encode.encode(&mut self.outgoing[at..]) {
                        Err(EncodeError::InsufficientSize(size)) => {
                            self.outgoing.resize(at + size.required_size, 0);
                            encode.encode(&mut self.outgoing[at..])
                        }
                        done => done,
                    };
                    self.outgoing.truncate(at + n.map_err(invalid)?);
                }
                // Sent by the caller, from `outgoing`, once this returns.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(mut traffic) => {
                    match std::mem::replace(&mut then, Then::Nothing) {
                        Then::Nothing => {}
                        Then::Seal(data) => {
                            sealed = SEALED.with_borrow_mut(|buf| {
                                let n = traffic.encrypt(data, buf).map_err(encrypt_error)?;
                                // Sent from the shared buffer: only what the
                                // socket does not take is copied, to wait.
                                let sent = match self.outgoing.is_empty() {
                                    true => send_some(&self.socket, &buf[..n])?,
                                    false => 0,
                                };
                                self.outgoing.extend_from_slice(&buf[sent..n]);
                                Ok::<_, io::Error>(data.len())
                            })?;
                        }
                        Then::CloseNotify => {
                            SEALED.with_borrow_mut(|buf| {
                                let n = traffic.queue_close_notify(buf).map_err(encrypt_error)?;
                                self.outgoing.extend_from_slice(&buf[..n]);
                                Ok::<_, io::Error>(())
                            })?;
                        }
                    }
                    blocked = true;
                }
                ConnectionState::BlockedHandshake => blocked = true,
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.eof = true;
                    blocked = true;
                }
                // Early data is not enabled (`max_early_data_size` is 0).
                _ => return Err(invalid("an unexpected TLS state")),
            }
            used += discard;
            if blocked {
                return Ok((used, sealed));
            }
        }
    }

    /// Hands `outgoing` to the socket: `Ready` once it is all sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let sent = send_some(&self.socket, &self.outgoing)?;
            self.outgoing.drain(..sent);
            if !self.outgoing.is_empty() {
                ready!(self.socket.poll_writable(cx))?;
            }
        }
        // Sent: nothing stays allocated for an idle connection.
        self.outgoing = Vec::new();
        Poll::Ready(Ok(()))
    }
}

/// Writes what the socket takes of `bytes` now; how much.
fn send_some(socket: &Async<TcpStream>, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match socket.get_ref().write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encrypt_error(e: EncryptError) -> io::Error {
    // The shared buffer holds a whole record: never too small.
    io::Error::other(e.to_string())
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let tls = self.get_mut();
        loop {
            if !tls.plaintext.is_empty() {
                let n = buf.len().min(tls.plaintext.len());
                buf[..n].copy_from_slice(&tls.plaintext[..n]);
                tls.plaintext.drain(..n);
                if tls.plaintext.is_empty() {
                    tls.plaintext = Vec::new();
                }
                return Poll::Ready(Ok(n));
            }
            if tls.eof {
                return Poll::Ready(Ok(0));
            }
            // What reading produced to send (a TLS 1.3 key update's answer)
            // goes now if the socket takes it, else with the next write.
            if let Poll::Ready(Err(e)) = tls.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(tls.poll_receive(cx))?;
        }
    }
}

impl AsyncWrite for TlsStream {
    /// Seals up to a record of `buf` once what was sealed before is sent:
    /// `Pending` takes none of it.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tls = self.get_mut();
        ready!(tls.poll_send(cx))?;
        let data = &buf[..buf.len().min(RECORD)];
        let (_, sealed) = tls.process(&mut [], Then::Seal(data))?;
        // The socket is tried at once; what it does not take waits in
        // `outgoing`, and the next write or flush sends it first.
        if let Poll::Ready(Err(e)) = tls.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(sealed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    /// Sends the close_notify; the client's is not waited for.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tls = self.get_mut();
        ready!(tls.poll_send(cx))?;
        tls.process(&mut [], Then::CloseNotify)?;
        tls.poll_send(cx)
    }
}
