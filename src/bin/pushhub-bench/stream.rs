//! A client's byte stream: the plain socket, or TLS over it (`--tls`, wss).
//!
//! TLS is native-tls (OpenSSL here) driven by hand on the non-blocking socket,
//! not async-native-tls: the latter's public `TlsConnector` builds a new
//! OpenSSL context, loading the system's CA bundle, on every connect (about
//! 50 ms each on the benchmark machine), which thousands of connections cannot
//! afford. Here one [`TlsConnector`] per process serves every connection, and a
//! TLS connection waits for the readiness OpenSSL last asked for ([`Sock`]).
//!
//! The client's code is generic over [`Wire`], so that a plain connection makes
//! the same system calls, and keeps the same state (a unit test in
//! [`crate::client`] checks its size), as before `--tls` existed.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use native_tls::{HandshakeError, TlsConnector};
use smol::Async;
use smol::io::AsyncWriteExt;

/// The name the client asks for (SNI), as a client of a named host would. The
/// certificate is not checked against it (see [`connector`]).
const SERVER_NAME: &str = "localhost";

/// A TLS connection, boxed: OpenSSL's state is behind a pointer anyway.
pub type Tls = Box<native_tls::TlsStream<Sock>>;

/// An open connection of either kind, while it is handed around (opened,
/// parked).
pub enum Stream {
    Plain(Async<TcpStream>),
    Tls(Tls),
}

/// What the client does with its byte stream.
pub trait Wire: Sized + 'static {
    /// The stream over a connected socket: the socket itself, or TLS over it
    /// with these settings.
    fn start(
        socket: Async<TcpStream>,
        tls: Option<&TlsConnector>,
    ) -> impl Future<Output = Result<Self, String>>;

    /// Runs `op` on the stream's reader until it does not block, waiting for
    /// readiness in between, as `Async::read_with` does.
    fn read_with<T>(
        &mut self,
        op: impl FnMut(&mut dyn Read) -> io::Result<T>,
    ) -> impl Future<Output = io::Result<T>>;

    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;

    fn into_stream(self) -> Stream;
}

impl Wire for Async<TcpStream> {
    async fn start(socket: Async<TcpStream>, _: Option<&TlsConnector>) -> Result<Self, String> {
        Ok(socket)
    }

    fn read_with<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn Read) -> io::Result<T>,
    ) -> impl Future<Output = io::Result<T>> {
        Async::read_with(self, move |s| op(&mut &*s))
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut writer = &*self;
        writer.write_all(buf).await
    }

    fn into_stream(self) -> Stream {
        Stream::Plain(self)
    }
}

impl Wire for Tls {
    async fn start(socket: Async<TcpStream>, tls: Option<&TlsConnector>) -> Result<Self, String> {
        let connector = tls.ok_or("no TLS settings")?;
        tls_handshake(connector, socket)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }

    // OpenSSL may hold decrypted bytes the socket no longer shows as readable:
    // always try first, wait only when it would block.
    async fn read_with<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn Read) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            match op(&mut **self) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.get_ref().ready().await?,
                done => return done,
            }
        }
    }

    // A write that would block is retried with the same bytes, as OpenSSL
    // requires.
    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.get_ref().ready().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn into_stream(self) -> Stream {
        Stream::Tls(self)
    }
}

/// The TLS settings of every `--tls` connection of this process: TLS 1.2 or
/// 1.3, and **no verification of the hub's certificate** (a loopback hub's is
/// self-signed), hence no CA store either.
pub fn connector() -> Result<TlsConnector, String> {
    TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .disable_built_in_roots(true)
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// The TLS handshake over a connected socket.
pub async fn tls_handshake(connector: &TlsConnector, io: Async<TcpStream>) -> io::Result<Tls> {
    let mut step = connector.connect(SERVER_NAME, Sock::new(io));
    loop {
        match step {
            Ok(tls) => return Ok(Box::new(tls)),
            Err(HandshakeError::Failure(e)) => return Err(io::Error::other(e)),
            Err(HandshakeError::WouldBlock(mid)) => {
                mid.get_ref().ready().await?;
                step = mid.handshake();
            }
        }
    }
}

/// The socket under OpenSSL: non-blocking reads and writes that remember
/// which of the two would block last, so that the task waits for that.
pub struct Sock {
    io: Async<TcpStream>,
    wants_write: bool,
}

impl Sock {
    fn new(io: Async<TcpStream>) -> Sock {
        Sock {
            io,
            wants_write: false,
        }
    }

    /// Waits until the socket can do what OpenSSL last found it could not.
    async fn ready(&self) -> io::Result<()> {
        if self.wants_write {
            self.io.writable().await
        } else {
            self.io.readable().await
        }
    }

    fn note<T>(&mut self, result: io::Result<T>, write: bool) -> io::Result<T> {
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.wants_write = write;
        }
        result
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = (&mut self.io.get_ref()).read(buf);
        self.note(result, false)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = (&mut self.io.get_ref()).write(buf);
        self.note(result, true)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509, X509NameBuilder};
    use smol::Timer;

    use super::*;

    /// A throwaway self-signed P-256 certificate for localhost: (cert, key) PEM.
    fn self_signed() -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        cert.set_serial_number(&serial).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = cert.build().to_pem().unwrap();
        (cert, key.private_key_to_pem_pkcs8().unwrap())
    }

    /// A handshake with a self-signed server, then more bytes each way than
    /// the sockets hold at once, so that writes and reads both block midway.
    #[test]
    fn tls_round_trip() {
        const BIG: usize = 4 << 20;
        let (cert, key) = self_signed();
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
        let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server reads everything, then sends it back.
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            socket
                .set_write_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut tls = acceptor.accept(socket).unwrap();
            let mut got = vec![0; BIG];
            tls.read_exact(&mut got).unwrap();
            tls.write_all(&got).unwrap();
        });
        let data: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
        let client = async {
            let socket = Async::<TcpStream>::connect(addr).await.unwrap();
            let mut stream = tls_handshake(&connector().unwrap(), socket).await.unwrap();
            Wire::write_all(&mut stream, &data).await.unwrap();
            let mut back = Vec::with_capacity(BIG);
            while back.len() < BIG {
                let mut chunk = [0u8; 16 * 1024];
                let n = Wire::read_with(&mut stream, |r| r.read(&mut chunk))
                    .await
                    .unwrap();
                assert!(n > 0, "EOF after {} bytes", back.len());
                back.extend_from_slice(&chunk[..n]);
            }
            back
        };
        let back = smol::block_on(smol::future::or(client, async {
            Timer::after(Duration::from_secs(20)).await;
            panic!("the round trip took over 20 s");
        }));
        assert!(back == data, "the bytes came back changed");
        server.join().unwrap();
    }
}
