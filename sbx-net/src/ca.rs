//! The per-proxy interception CA and the leaf certificates it mints.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::policy::Host;

/// Leaves cached per CA before the cache is flushed.
const LEAF_CACHE_MAX: usize = 1024;
/// Common name of every CA this crate makes; loading relies on it (see [`CertificateAuthority::from_pem`]).
const CA_COMMON_NAME: &str = "sbx egress proxy CA";
const CA_ORGANIZATION: &str = "sbx";

/// A certificate authority used to terminate TLS inside allowed tunnels.
///
/// Each leaf has its own freshly generated key (the CA key signs, it is never served), a SAN
/// for the DNS name or IP literal, a notBefore backdated by a day for clock skew, and a 30-day
/// lifetime. Leaves are cached per host. The CA key stays in this process; only the CA
/// certificate is meant for sandboxes' trust stores. `Debug` never prints key material.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: SecretString,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    leaves: Mutex<HashMap<Host, Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("common_name", &CA_COMMON_NAME)
            .field(
                "cached_leaves",
                &self.leaves.lock().map(|l| l.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails if the OS RNG is unavailable; a zero serial is still valid DER.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Generates a new CA (ECDSA P-256, valid 10 years, backdated a day).
    pub fn generate() -> Result<CertificateAuthority> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let key_pem = SecretString::from(key.serialize_pem());
        Ok(Self::assemble(cert.pem(), cert.der().clone(), key_pem, key))
    }

    /// Loads a CA previously made by this crate (its certificate and PKCS#8 key in PEM).
    ///
    /// Leaves are issued under the subject name this crate gives its CAs, so a CA made by
    /// another tool will not chain; the key must match the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretString) -> Result<CertificateAuthority> {
        use rustls_pki_types::pem::PemObject;
        let cert_der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or(Error::InvalidPem("no certificate"))?
            .map_err(|_| Error::InvalidPem("unreadable certificate"))?;
        let key = KeyPair::from_pem(key_pem.expose_secret())
            .map_err(|_| Error::InvalidPem("unreadable ca key"))?;
        let spki = key.subject_public_key_info();
        if !cert_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(Error::InvalidPem("ca key does not match the certificate"));
        }
        Ok(Self::assemble(
            cert_pem.to_string(),
            cert_der,
            key_pem.clone(),
            key,
        ))
    }

    /// Loads `DIR/ca.pem` and `DIR/ca-key.pem`, or creates them (the key file mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<CertificateAuthority> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if cert_path.exists() && key_path.exists() {
            let cert = fs::read_to_string(&cert_path)?;
            let key = SecretString::from(fs::read_to_string(&key_path)?);
            return Self::from_pem(&cert, &key);
        }
        fs::create_dir_all(dir)?;
        let ca = Self::generate()?;
        write_private(&key_path, ca.key_pem.expose_secret().as_bytes())?;
        let tmp = dir.join(".ca.pem.tmp");
        fs::write(&tmp, ca.cert_pem.as_bytes())?;
        fs::rename(&tmp, &cert_path)?;
        Ok(ca)
    }

    fn assemble(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key_pem: SecretString,
        key: KeyPair,
    ) -> CertificateAuthority {
        CertificateAuthority {
            cert_pem,
            cert_der,
            key_pem,
            issuer: Issuer::new(ca_params(), key),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(HashMap::new()),
        }
    }

    /// The CA certificate in PEM, for sandboxes' trust stores.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate and key served for `host`, minted on first use and cached.
    pub fn leaf_for(&self, host: &Host) -> Result<Arc<CertifiedKey>> {
        if let Some(hit) = self.leaves.lock().ok().and_then(|l| l.get(host).cloned()) {
            return Ok(hit);
        }
        let leaf = Arc::new(self.mint(host)?);
        if let Ok(mut cache) = self.leaves.lock() {
            if cache.len() >= LEAF_CACHE_MAX {
                cache.clear();
            }
            cache.insert(host.clone(), leaf.clone());
        }
        Ok(leaf)
    }

    fn mint(&self, host: &Host) -> Result<CertifiedKey> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host {
            Host::Name(n) => SanType::DnsName(n.clone().try_into()?),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(30);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = self.provider.key_provider.load_private_key(key_der)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signer,
        ))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_cached_and_have_their_own_key() {
        let ca = CertificateAuthority::generate().unwrap();
        let h = Host::parse("example.com").unwrap();
        let a = ca.leaf_for(&h).unwrap();
        let b = ca.leaf_for(&h).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.cert.len(), 2);
        let ip = ca.leaf_for(&Host::parse("127.0.0.1").unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&a, &ip));
        // The leaf's public key is not the CA's.
        let ca_spki = ca.issuer.key().subject_public_key_info();
        assert!(!a.cert[0]
            .windows(ca_spki.len())
            .any(|w| w == ca_spki.as_slice()));
    }

    #[test]
    fn round_trips_through_files() {
        let dir = std::env::temp_dir().join(format!("sbx-net-ca-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = CertificateAuthority::load_or_create(&dir).unwrap();
        let b = CertificateAuthority::load_or_create(&dir).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        let other = CertificateAuthority::generate().unwrap();
        let err = CertificateAuthority::from_pem(other.cert_pem(), &b.key_pem).unwrap_err();
        assert!(err.to_string().contains("does not match"));
        assert!(!format!("{a:?}").contains("PRIVATE"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
