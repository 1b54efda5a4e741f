//! Transport security of the remote engine: TLS for `grpcs://` URLs (rustls,
//! a private CA from `tls_ca_file` or the system roots) and the connect
//! errors that explain a TLS/plaintext mismatch. Kept apart from the engine
//! so its logic stays about messaging; the bearer token's metadata lives in
//! `crate::wire`, shared with the broker.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::engine::EngineConfig;
use crate::error::{Error, Result};
use crate::wire::chain;

/// Adds the client's TLS settings to an `https://` endpoint.
pub fn configure(endpoint: Endpoint, url: &str, cfg: &EngineConfig, timeout: Duration) -> Result<Endpoint> {
    let mut tls = ClientTlsConfig::new().timeout(timeout);
    tls = match &cfg.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::invalid(format!("option tls_ca_file: cannot read {path}: {e}")))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::invalid(format!("option tls_ca_file: {path} holds no PEM certificate")));
            }
            // A private CA replaces the system roots: trust exactly what was asked.
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let Some(name) = &cfg.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    endpoint.tls_config(tls).map_err(|e| Error::invalid(format!("TLS settings for {url}: {}", chain(&e))))
}

fn hint(tls: bool) -> &'static str {
    if tls {
        "is the broker serving plaintext? then use grpc://"
    } else {
        "is the broker serving TLS? then use grpcs://"
    }
}

/// What a `CaUsedAsEndEntity` refusal means and how to fix it: the usual
/// quick self-signed certificate is a CA certificate, which rustls (like
/// browsers) does not accept as a server's own certificate.
const CA_AS_SERVER_CERT: &str = "the broker serves a CA certificate as its own certificate, as a self-signed \
     `openssl req -x509` certificate is by default (basicConstraints CA:TRUE); TLS clients accept only a \
     server certificate signed by a CA: make a CA and a server certificate with \
     `flowmesh tls dev-certs --host <broker host> --out DIR`, serve `--tls-cert DIR/server.pem --tls-key \
     DIR/server-key.pem` and connect with the option tls_ca_file=DIR/ca.pem";

/// A failed connect, with the likely cause when it looks like a TLS mismatch.
pub fn connect_error(url: &str, tls: bool, e: &tonic::transport::Error) -> Error {
    let detail = chain(e);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("connection refused") || lower.contains("dns error") || lower.contains("failed to lookup") {
        return Error::Unavailable(format!("cannot connect to broker at {url}: {detail}"));
    }
    if lower.contains("causedasendentity") {
        return Error::Unavailable(format!("cannot connect to broker at {url}: {detail} ({CA_AS_SERVER_CERT})"));
    }
    let hint = if lower.contains("certificate") || lower.contains("notvalidforname") {
        "the broker's certificate is not trusted: check tls_ca_file and tls_server_name"
    } else {
        hint(tls)
    };
    Error::Unavailable(format!("cannot connect to broker at {url}: {detail} ({hint})"))
}

/// The first call after connecting: a transport failure there (not an
/// answer from the broker) is most likely a TLS/plaintext mismatch.
pub fn first_call_error(url: &str, tls: bool, e: Error) -> Error {
    match e {
        Error::Disconnected(m) | Error::Unavailable(m) | Error::Internal(m)
            if m.to_ascii_lowercase().contains("causedasendentity") =>
        {
            Error::Unavailable(format!("broker at {url} did not answer: {m} ({CA_AS_SERVER_CERT})"))
        }
        Error::Disconnected(m) | Error::Unavailable(m) | Error::Internal(m) => {
            Error::Unavailable(format!("broker at {url} did not answer: {m} ({})", hint(tls)))
        }
        other => other,
    }
}
