//! `flowmesh tls dev-certs`: a private CA and a server certificate signed by
//! it, for development and tests. A self-signed certificate made the quick
//! way (`openssl req -x509`) is a CA certificate, which TLS clients refuse as
//! a server's own certificate; this makes the pair they accept.

use std::io::Write;
use std::path::{Path, PathBuf};

use flowmesh::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Files written into `--out`, in this order.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

/// Writes the CA and the server certificate for `hosts` (DNS names or IP
/// addresses) into `out`, and returns what to tell the user.
pub fn dev_certs(hosts: &[String], out: &Path, days: u32, force: bool) -> Result<String> {
    if hosts.is_empty() {
        return Err(Error::InvalidArgument("--host: name at least one host name or IP address".into()));
    }
    if days == 0 {
        return Err(Error::InvalidArgument("--days must be at least 1".into()));
    }
    let files: Vec<PathBuf> = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY].iter().map(|f| out.join(f)).collect();
    if !force {
        if let Some(existing) = files.iter().find(|f| f.exists()) {
            return Err(Error::AlreadyExists(format!(
                "{} exists: choose another --out, or pass --force to replace the certificates there",
                existing.display()
            )));
        }
    }
    let now = OffsetDateTime::now_utc();
    // Backdated a little: a clock slightly behind must not reject a fresh certificate.
    let not_before = now - Duration::hours(1);

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, format!("flowmesh development CA ({})", hosts[0]));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(i64::from(days));
    let ca_key = KeyPair::generate().map_err(|e| bad("CA key", e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| bad("CA certificate", e))?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(hosts.to_vec()).map_err(|e| bad("--host", e))?;
    server.is_ca = IsCa::ExplicitNoCa;
    server.distinguished_name.push(DnType::CommonName, hosts[0].clone());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = now + Duration::days(i64::from(days));
    let server_key = KeyPair::generate().map_err(|e| bad("server key", e))?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(|e| bad("server certificate", e))?;

    std::fs::create_dir_all(out).map_err(|e| bad(&format!("cannot create {}", out.display()), e))?;
    write(&files[0], ca_cert.pem().as_bytes(), false)?;
    write(&files[1], ca_key_pem.as_bytes(), true)?;
    write(&files[2], server_cert.pem().as_bytes(), false)?;
    write(&files[3], server_key.serialize_pem().as_bytes(), true)?;

    let d = out.display();
    Ok(format!(
        "wrote {d}/{CA_CERT} (the private CA), {d}/{CA_KEY}, {d}/{SERVER_CERT} (for {}), {d}/{SERVER_KEY}, \
         valid {days} days\n\
         serve:   flowmesh serve --tls-cert {d}/{SERVER_CERT} --tls-key {d}/{SERVER_KEY} ...\n\
         connect: grpcs://{}:PORT with the option tls_ca_file={d}/{CA_CERT}\n\
         keep {CA_KEY} private: whoever holds it can make certificates this CA vouches for",
        hosts.join(", "),
        hosts[0],
    ))
}

/// Writes a file; private keys are created readable by their owner only.
fn write(path: &Path, data: &[u8], private: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if private {
        open.mode(0o600);
    }
    let fail = |e: std::io::Error| Error::Internal(format!("cannot write {}: {e}", path.display()));
    let mut f = open.open(path).map_err(fail)?;
    if private {
        // An existing file (--force) keeps its mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    f.write_all(data).and_then(|_| f.sync_all()).map_err(fail)
}
