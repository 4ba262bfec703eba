//! TLS inside the cluster: every member holds a certificate signed by the cluster's CA that
//! names its role, and every internal connection is mutually authenticated with it.
//!
//! A member's role travels in its certificate as a URI name, `spiffe://gatehouse/<role>`, so a
//! server admits a peer by what it is (a registry takes gateways, workers and API clients; a
//! gateway takes workers and API clients), not by a secret anyone who saw it could replay.
//! Every member certificate also carries the DNS name [`CLUSTER_NAME`], which is the name a
//! client checks: members dial each other by addresses that change (pods, NAT), and what is
//! worth verifying is "signed by our CA", which the private CA alone decides.
//!
//! [`generate`] makes a development CA and a certificate per role (`gatehouse cert`), so that
//! turning TLS on is one command.

use std::fmt;
use std::path::Path;

use gatehouse_proto::tonic::transport::{Certificate, ClientTlsConfig, Identity};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The DNS name every member certificate carries and every member client checks.
pub const CLUSTER_NAME: &str = "gatehouse.cluster";
/// The prefix of the URI name that carries a member's role.
const ROLE_URI: &str = "spiffe://gatehouse/";

/// What a cluster member is, as its certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Keeps membership and the routing table.
    Registry,
    /// Holds client connections.
    Gateway,
    /// Runs application handlers.
    Worker,
    /// Uses the cluster API without handling events (`gatehouse api`, a backend).
    Api,
}

impl Role {
    /// Every role, in the order `gatehouse cert` writes them.
    pub const ALL: [Role; 4] = [Role::Registry, Role::Gateway, Role::Worker, Role::Api];

    /// The role's name (`registry`, `gateway`, `worker`, `api`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Registry => "registry",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
            Role::Api => "api",
        }
    }

    /// The URI name that carries the role in a certificate.
    pub fn uri(self) -> String {
        format!("{ROLE_URI}{}", self.name())
    }

    fn from_uri(uri: &str) -> Option<Role> {
        let name = uri.strip_prefix(ROLE_URI)?;
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate, or no PEM private key.
    #[error("{0}")]
    Pem(String),
    /// The certificate names no gatehouse role.
    #[error("{0} names no gatehouse role (a URI name spiffe://gatehouse/<role>; make one with `gatehouse cert`)")]
    NoRole(String),
    /// The certificate's role is not the role of this process.
    #[error("{path} is the certificate of the {found} role, but this process runs the {expected} role")]
    WrongRole {
        /// The file.
        path: String,
        /// The role it names.
        found: Role,
        /// The role of the process.
        expected: Role,
    },
    /// Generating certificates failed.
    #[error("generating certificates failed: {0}")]
    Generate(String),
}

/// A member's TLS material: the cluster CA, its certificate and its key.
#[derive(Clone)]
pub struct ClusterTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    role: Role,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads the CA certificate, this member's certificate and key (PEM), and checks that the
    /// certificate names `role`.
    pub fn load(ca: &Path, cert: &Path, key: &Path, role: Role) -> Result<ClusterTls, TlsError> {
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        CertificateDer::from_pem_slice(&ca_pem)
            .map_err(|e| TlsError::Pem(format!("{} holds no PEM certificate: {e}", ca.display())))?;
        let leaf = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| TlsError::Pem(format!("{} holds no PEM certificate: {e}", cert.display())))?;
        rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::Pem(format!("{} holds no PEM private key: {e}", key.display())))?;
        let found = role_of_der(&leaf).ok_or_else(|| TlsError::NoRole(cert.display().to_string()))?;
        if found != role {
            return Err(TlsError::WrongRole {
                path: cert.display().to_string(),
                found,
                expected: role,
            });
        }
        Ok(ClusterTls {
            ca: ca_pem,
            cert: cert_pem,
            key: key_pem,
            role,
        })
    }

    /// The role this material proves.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The client side: trust only the cluster CA, check [`CLUSTER_NAME`], present ours.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(CLUSTER_NAME)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl ClusterTls {
    /// A rustls acceptor for the cluster's internal servers: present our certificate, require a
    /// client certificate signed by the cluster CA, speak HTTP/2.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let provider = ring_provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&self.ca) {
            let ca = ca.map_err(|e| TlsError::Pem(format!("cluster CA: {e}")))?;
            roots.add(ca).map_err(|e| TlsError::Pem(format!("cluster CA: {e}")))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| TlsError::Pem(format!("cluster CA: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pem(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| TlsError::Pem(format!("member certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}

/// rustls's crypto on ring. rustls 0.23.48 marks it deprecated because ring has no
/// post-quantum key exchange; the alternative, aws-lc, is a long C build on every fresh machine.
/// The classical suites (X25519, AES-GCM, ChaCha20) are what TLS deployments use today.
#[allow(deprecated)]
pub fn ring_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM chain.
pub(crate) fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate chain: {e}")))
}

/// The private key of a PEM file.
pub(crate) fn key(pem: &[u8]) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsError> {
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem(format!("private key: {e}")))
}

/// How long a TLS handshake on an internal port may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS connections of `listener`: every handshake runs in a task of its own (a slow peer
/// delays only itself) under a timeout, and a refused peer — a certificate from another CA, no
/// certificate, no TLS at all — is logged with its address and why.
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    service: &'static str,
) -> impl futures_util::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(service, %error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        let why = handshake_failure(&error);
                        tracing::warn!(service, %peer, %error, "refused a connection: {why}");
                    }
                    Err(_) => tracing::warn!(service, %peer, "refused a connection: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Where a public listener's certificate chain and private key live (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Words for the operator about why a member's TLS handshake failed.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("InvalidContentType") || text.contains("InvalidMessage") {
        "the peer does not speak TLS (a member started without cluster TLS?)"
    } else if text.contains("NoCertificatesPresented") || text.contains("CertificateRequired") {
        "the peer presented no certificate (cluster TLS needs --cluster-cert on every member)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") || text.contains("DecryptError") {
        "the peer and this member trust different CAs (a certificate from another cluster?)"
    } else {
        "TLS handshake failed"
    }
}

/// TLS on a public listener (a gateway's `wss://`): a certificate and key from files, reloaded
/// without a restart when the files change (checked every few seconds) or on SIGHUP, so that
/// renewing a certificate (ACME, cert-manager) never drops a client.
pub struct PublicTls {
    resolver: std::sync::Arc<ReloadingCert>,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// The current certificate, swapped atomically on reload; handshakes read it without a lock.
#[derive(Debug)]
struct ReloadingCert {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    /// The files' modification times when last loaded.
    loaded: std::sync::Mutex<(Option<std::time::SystemTime>, Option<std::time::SystemTime>)>,
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// How often the certificate files are checked for a change.
const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl PublicTls {
    /// Loads `cert` (a PEM chain) and `key`, offering the ALPN protocols `alpn` (`http/1.1`
    /// for WebSockets).
    pub fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<PublicTls, TlsError> {
        let resolver = std::sync::Arc::new(ReloadingCert {
            current: arc_swap::ArcSwap::from_pointee(certified_key(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: std::sync::Mutex::new((modified(cert), modified(key))),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pem(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(PublicTls {
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
            resolver,
        })
    }

    /// The acceptor (it always presents the latest certificate loaded).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Loads the files again if they changed since the last load (or if `force`); returns
    /// whether the certificate changed. A file that cannot be read or parsed keeps the old
    /// certificate in service and is an error.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let resolver = &self.resolver;
        let stamps = (modified(&resolver.cert), modified(&resolver.key));
        {
            let loaded = resolver.loaded.lock().expect("stamps poisoned");
            if !force && *loaded == stamps {
                return Ok(false);
            }
        }
        let fresh = certified_key(&resolver.cert, &resolver.key)?;
        resolver.current.store(std::sync::Arc::new(fresh));
        *resolver.loaded.lock().expect("stamps poisoned") = stamps;
        Ok(true)
    }

    /// Reloads on file changes and on SIGHUP until `token` is cancelled, logging each reload.
    pub fn keep_fresh(self: std::sync::Arc<Self>, token: tokio_util::sync::CancellationToken) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(RELOAD_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                let force = tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = signalled => true,
                };
                match self.reload(force) {
                    Ok(true) => tracing::info!(cert = %self.resolver.cert.display(), "tls certificate reloaded"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "tls certificate not reloaded; the previous one stays in service")
                    }
                }
            }
        });
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = certs(&read(cert)?)?;
    if chain.is_empty() {
        return Err(TlsError::Pem(format!("{} holds no PEM certificate", cert.display())));
    }
    let key = self::key(&read(key)?)?;
    let signing = ring_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert.display())))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    // A renewal that replaced one file but not yet the other must not go into service.
    certified
        .keys_match()
        .map_err(|e| TlsError::Pem(format!("{} and its key do not match: {e}", cert.display())))?;
    Ok(certified)
}

/// The role a certificate (DER) names, if any.
pub fn role_of_der(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Role::from_uri(uri),
        _ => None,
    })
}

/// The role of the peer of an incoming call, from its client certificate (`None` without TLS
/// or without a role).
pub fn peer_role<T>(request: &gatehouse_proto::tonic::Request<T>) -> Option<Role> {
    let certs = request.peer_certs()?;
    role_of_der(certs.first()?.as_ref())
}

/// The files [`generate`] writes, relative to its directory.
pub mod files {
    /// The CA certificate every member trusts.
    pub const CA: &str = "ca.pem";
    /// The CA's key: keep it offline; it is needed only to issue more certificates.
    pub const CA_KEY: &str = "ca-key.pem";
    /// The public listeners' certificate (gateways' `wss://`), for the given host names.
    pub const SERVER: &str = "server.pem";
    /// Its key.
    pub const SERVER_KEY: &str = "server-key.pem";

    /// A role's certificate file.
    pub fn cert(role: super::Role) -> String {
        format!("{}.pem", role.name())
    }

    /// A role's key file.
    pub fn key(role: super::Role) -> String {
        format!("{}-key.pem", role.name())
    }
}

/// Writes a development CA, one certificate per role, and a public server certificate for
/// `hosts` (DNS names or IP addresses) into `dir`, valid for `days`. Refuses to overwrite
/// unless `force`.
pub fn generate(dir: &Path, hosts: &[String], days: u32, force: bool) -> Result<Vec<String>, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    let err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gatehouse cluster CA");
    ca_params.not_before = now.into();
    ca_params.not_after = until.into();
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    outputs.push((files::CA.to_owned(), ca_cert.pem()));
    outputs.push((files::CA_KEY.to_owned(), issuer.key().serialize_pem()));

    let leaf = |names: Vec<SanType>, common: &str| -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = names;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common);
        params.not_before = now.into();
        params.not_after = until.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    for role in Role::ALL {
        let names = vec![
            SanType::DnsName(CLUSTER_NAME.try_into().map_err(err)?),
            SanType::URI(role.uri().try_into().map_err(err)?),
        ];
        let (cert, key) = leaf(names, &format!("gatehouse {role}"))?;
        outputs.push((files::cert(role), cert));
        outputs.push((files::key(role), key));
    }
    let mut server_names = Vec::new();
    for host in hosts {
        server_names.push(match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.as_str().try_into().map_err(err)?),
        });
    }
    let (cert, key) = leaf(server_names, hosts.first().map_or("gatehouse", String::as_str))?;
    outputs.push((files::SERVER.to_owned(), cert));
    outputs.push((files::SERVER_KEY.to_owned(), key));

    if !force {
        for (name, _) in &outputs {
            let path = dir.join(name);
            if path.exists() {
                return Err(TlsError::Generate(format!(
                    "{} exists; pass --force to overwrite",
                    path.display()
                )));
            }
        }
    }
    for (name, contents) in outputs {
        let path = dir.join(&name);
        write_private(&path, contents.as_bytes(), name.ends_with("-key.pem")).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Writes a file; keys are readable by their owner only.
fn write_private(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)
}

fn time_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_name_their_roles_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path(), &["localhost".into(), "127.0.0.1".into()], 30, false).unwrap();
        assert_eq!(written.len(), 12);
        for role in Role::ALL {
            let tls = ClusterTls::load(
                &dir.path().join(files::CA),
                &dir.path().join(files::cert(role)),
                &dir.path().join(files::key(role)),
                role,
            )
            .unwrap();
            assert_eq!(tls.role(), role);
        }
        let wrong = ClusterTls::load(
            &dir.path().join(files::CA),
            &dir.path().join(files::cert(Role::Worker)),
            &dir.path().join(files::key(Role::Worker)),
            Role::Gateway,
        );
        assert!(matches!(
            wrong,
            Err(TlsError::WrongRole {
                found: Role::Worker,
                ..
            })
        ));
        let server = ClusterTls::load(
            &dir.path().join(files::CA),
            &dir.path().join(files::SERVER),
            &dir.path().join(files::SERVER_KEY),
            Role::Gateway,
        );
        assert!(
            matches!(server, Err(TlsError::NoRole(_))),
            "the public certificate is no member's"
        );
        assert!(
            generate(dir.path(), &["localhost".into()], 30, false).is_err(),
            "no silent overwrite"
        );
        assert!(generate(dir.path(), &["localhost".into()], 30, true).is_ok());
    }

    #[test]
    fn a_public_certificate_is_reloaded_when_its_files_change_and_a_broken_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &["localhost".into()], 30, false).unwrap();
        let (cert, key) = (dir.path().join(files::SERVER), dir.path().join(files::SERVER_KEY));
        let tls = PublicTls::load(&cert, &key, &[b"http/1.1"]).unwrap();
        let first = tls.resolver.current.load_full();
        assert!(!tls.reload(false).unwrap(), "unchanged files: nothing to do");
        let other = tempfile::tempdir().unwrap();
        generate(other.path(), &["localhost".into()], 30, false).unwrap();
        std::fs::copy(other.path().join(files::SERVER), &cert).unwrap();
        std::fs::copy(other.path().join(files::SERVER_KEY), &key).unwrap();
        assert!(tls.reload(true).unwrap());
        assert_ne!(
            tls.resolver.current.load_full().cert,
            first.cert,
            "the new certificate is served"
        );
        let third = tempfile::tempdir().unwrap();
        generate(third.path(), &["localhost".into()], 30, false).unwrap();
        std::fs::copy(third.path().join(files::SERVER), &cert).unwrap();
        let half = tls.reload(true).unwrap_err().to_string();
        assert!(
            half.contains("do not match"),
            "a certificate without its key is not taken: {half}"
        );
        std::fs::write(&cert, b"garbage").unwrap();
        assert!(tls.reload(true).is_err());
        assert!(
            !tls.resolver.current.load_full().cert.is_empty(),
            "the previous certificate stays"
        );
    }

    #[test]
    fn roles_round_trip_through_their_uri() {
        for role in Role::ALL {
            assert_eq!(Role::from_uri(&role.uri()), Some(role));
        }
        assert_eq!(Role::from_uri("spiffe://other/worker"), None);
        assert_eq!(Role::from_uri("spiffe://gatehouse/admin"), None);
    }
}
