//! TLS termination for the public listener (rustls), with certificates that reload.
//!
//! The certificate and key are loaded when a config is compiled, so a config whose
//! files are missing or do not match is rejected like any other bad config and the
//! running certificate stays. The listener's [`SnapshotCertResolver`] reads the
//! certificate from the current config snapshot at each handshake, so a reload (the
//! watcher also watches the certificate files) swaps it without a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::state::GatewayState;

/// Load a PEM certificate chain and private key, and check that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("listen.tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("listen.tls.cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "listen.tls.cert {}: no certificate found",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("listen.tls.key {}: {e}", key.display()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| format!("listen.tls.key {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("listen.tls: certificate and key do not match: {e}"))?;
    Ok(Arc::new(ck))
}

/// Serves the certificate of the current config snapshot.
#[derive(Debug)]
pub struct SnapshotCertResolver {
    pub state: Arc<GatewayState>,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayState")
    }
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.snapshot.load().config.tls_key.clone()
    }
}
