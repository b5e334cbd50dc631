//! Test certificates, made at test time with the openssl crate: the fake APNs
//! server's, and the hub's for wss.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: Vec<u8>,
    /// The private key, unencrypted PKCS#8.
    pub key_pem: Vec<u8>,
}

impl TestCert {
    pub fn new() -> TestCert {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        builder.set_serial_number(&serial).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(san).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        TestCert {
            cert_pem: builder.build().to_pem().unwrap(),
            key_pem: key.private_key_to_pem_pkcs8().unwrap(),
        }
    }

    fn key(&self) -> PKey<Private> {
        PKey::private_key_from_pem(&self.key_pem).unwrap()
    }

    fn x509(&self) -> X509 {
        X509::from_pem(&self.cert_pem).unwrap()
    }

    /// The certificate, for a TLS client to trust.
    pub fn certificate(&self) -> native_tls::Certificate {
        native_tls::Certificate::from_pem(&self.cert_pem).unwrap()
    }

    /// The certificate's DER, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        self.x509().to_der().unwrap()
    }

    /// The certificate and its key in a PKCS#12 archive (DER) under `password`.
    pub fn pkcs12(&self, password: &str) -> Vec<u8> {
        Pkcs12::builder()
            .name("pushhub test")
            .pkey(&self.key())
            .cert(&self.x509())
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap()
    }

    /// The private key as encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`).
    pub fn encrypted_key_pem(&self, password: &str) -> Vec<u8> {
        self.key()
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), password.as_bytes())
            .unwrap()
    }
}
