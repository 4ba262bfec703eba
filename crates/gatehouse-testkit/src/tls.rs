//! [`TestTls`]: certificates made by `gatehouse cert` (the same command a newcomer runs), and the
//! client side of `wss://` that trusts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::process::gatehouse_bin;

/// A directory of certificates from `gatehouse cert`: a CA, one certificate per role and one
/// for public listeners (valid for `localhost` and `127.0.0.1`). Removed on drop.
pub struct TestTls {
    dir: PathBuf,
}

impl TestTls {
    /// Runs `gatehouse cert` into a fresh temporary directory.
    pub fn generate() -> Result<TestTls> {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}", rand::random::<u64>()));
        let output = std::process::Command::new(gatehouse_bin())
            .args(["cert", "--out"])
            .arg(&dir)
            .output()
            .context("running gatehouse cert")?;
        if !output.status.success() {
            bail!("gatehouse cert failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(TestTls { dir })
    }

    /// Takes over a directory `gatehouse cert` wrote elsewhere (the compose file's `certs`
    /// service); it is removed on drop like a generated one.
    pub fn adopt(dir: PathBuf) -> TestTls {
        TestTls { dir }
    }

    /// The directory (`--cluster-tls-dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the directory (`ca.pem`, `server.pem`, `worker-key.pem`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A rustls client configuration that trusts only this CA, as a client given `ca.pem` would.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.file("ca.pem"))? {
            roots.add(cert?)?;
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

impl Drop for TestTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
