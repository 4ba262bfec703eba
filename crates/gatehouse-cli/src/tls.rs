//! The flags every role shares for proving cluster membership and encrypting its listeners,
//! and `gatehouse cert`, which makes the files they name.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use gatehouse_core::tls::{CertFiles, ClusterTls, Role, files};
use gatehouse_core::{ClusterSecret, Credentials};

/// How a process proves it belongs to the cluster: the shared secret, a certificate from the
/// cluster CA naming its role (mutual TLS on every internal link), or both.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Shared secret of the cluster; every internal call carries it and is refused without it.
    /// Optional with cluster TLS (a member is then admitted by its certificate).
    #[arg(long = "cluster-secret", env = "GATEHOUSE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Directory written by `gatehouse cert`: takes `ca.pem`, `<role>.pem` and
    /// `<role>-key.pem` from it (the explicit flags below override single files).
    #[arg(long, env = "GATEHOUSE_CLUSTER_TLS_DIR")]
    pub cluster_tls_dir: Option<PathBuf>,
    /// The cluster CA certificate (PEM): peers must present a certificate it signed.
    #[arg(long, env = "GATEHOUSE_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// This member's certificate (PEM), naming its role (`spiffe://gatehouse/<role>`).
    #[arg(long, env = "GATEHOUSE_CLUSTER_CERT")]
    pub cluster_cert: Option<PathBuf>,
    /// This member's private key (PEM).
    #[arg(long, env = "GATEHOUSE_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// Listen without TLS on non-loopback addresses anyway: only where the network itself is
    /// private and trusted (a service mesh, TLS ending at a proxy in front).
    #[arg(long, env = "GATEHOUSE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

impl ClusterArgs {
    /// The credentials of a process of `role`: at least one of the secret and the TLS files.
    pub fn credentials(&self, role: Role) -> Result<Credentials> {
        let secret = match self.cluster_secret.as_deref() {
            Some(secret) => Some(ClusterSecret::new(secret)?),
            None => None,
        };
        let tls = self.cluster_tls(role)?;
        if secret.is_none() && tls.is_none() {
            bail!(
                "no cluster credentials: set GATEHOUSE_CLUSTER_SECRET (--cluster-secret), or cluster TLS files \
                 (--cluster-tls-dir from `gatehouse cert`, or --cluster-ca/--cluster-cert/--cluster-key), the \
                 same CA or secret on every process"
            );
        }
        Ok(Credentials::new(secret, tls)?)
    }

    /// The cluster TLS material, if any of its flags is given (then all three files must be).
    fn cluster_tls(&self, role: Role) -> Result<Option<ClusterTls>> {
        let from_dir = |name: String| self.cluster_tls_dir.as_ref().map(|dir| dir.join(name));
        let ca = self.cluster_ca.clone().or_else(|| from_dir(files::CA.to_owned()));
        let cert = self.cluster_cert.clone().or_else(|| from_dir(files::cert(role)));
        let key = self.cluster_key.clone().or_else(|| from_dir(files::key(role)));
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                let tls = ClusterTls::load(&ca, &cert, &key, role).context("loading the cluster TLS files")?;
                Ok(Some(tls))
            }
            _ => {
                bail!("cluster TLS needs all of --cluster-ca, --cluster-cert and --cluster-key (or --cluster-tls-dir)")
            }
        }
    }
}

/// TLS on a public listener.
#[derive(Args, Debug, Clone)]
pub struct PublicTlsArgs {
    /// Certificate chain (PEM) of the public listener; turns on TLS (`wss://`, `https://`).
    /// Reloaded without a restart when the file changes or on SIGHUP.
    #[arg(long, env = "GATEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the public listener's certificate.
    #[arg(long, env = "GATEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl PublicTlsArgs {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<CertFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// `gatehouse cert`: a development CA, a certificate per role and one for the public listeners.
#[derive(Args, Debug)]
pub struct CertArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "gatehouse-tls")]
    pub out: PathBuf,
    /// Names the public certificate (`server.pem`) is valid for: DNS names or IP addresses,
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Writes the files and says how to use them.
pub fn run_cert(args: &CertArgs) -> Result<()> {
    if args.hosts.iter().any(|h| h.trim().is_empty()) {
        bail!("--hosts holds an empty name");
    }
    let written = gatehouse_core::tls::generate(&args.out, &args.hosts, args.days, args.force)?;
    for path in &written {
        println!("wrote {path}");
    }
    let dir = args.out.display();
    println!();
    println!("Cluster TLS: start every role with --cluster-tls-dir {dir} (each picks its own <role>.pem).");
    println!(
        "Public TLS: gateway --tls-cert {dir}/{} --tls-key {dir}/{} (valid for {}).",
        files::SERVER,
        files::SERVER_KEY,
        args.hosts.join(", ")
    );
    println!(
        "Clients trust {dir}/{}; keep {dir}/{} offline: it signs members.",
        files::CA,
        files::CA_KEY
    );
    Ok(())
}
