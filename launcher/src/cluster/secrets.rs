//! A cluster's secrets, made once and kept in `<state_dir>/<cluster>/secrets/`
//! (directory 0700, files 0600), loaded again on every later run:
//!
//! | file | what |
//! |---|---|
//! | `bootstrap-token` | the kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` |
//! | `certificate-key` | the key `kubeadm init --upload-certs` encrypts the shared certificates with: 32 random bytes, hex |
//! | `ca.crt`, `ca.key` | the cluster CA (ECDSA P-256, self-signed, 10 years), PEM |
//!
//! Joins pin the CA as Cluster API's kubeadm bootstrap does:
//! `caCertHashes` = `sha256:` + hex SHA-256 of the CA certificate's
//! SubjectPublicKeyInfo (DER). Randomness comes from the OS (`getrandom`).
//!
//! A new directory is written whole under a temporary name and renamed into
//! place, so a crash never leaves half of one; a directory that is there but
//! incomplete or corrupt is an error naming the file, never silently
//! regenerated (a new CA or token would cut the cluster's nodes off).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The token file's name.
pub const TOKEN_FILE: &str = "bootstrap-token";
/// The certificate key file's name.
pub const CERTIFICATE_KEY_FILE: &str = "certificate-key";
/// The CA certificate's file name.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key's file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's subject common name, as kubeadm names its own CA.
pub const CA_COMMON_NAME: &str = "kubernetes";
/// How long the CA is valid, days (kubeadm's CA: 10 years).
const CA_VALIDITY_DAYS: i64 = 3650;
/// `notBefore` this far in the past, for machines whose clocks lag.
const CA_BACKDATE_HOURS: i64 = 24;

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Everything a node needs to join this cluster and trust it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecrets {
    /// `abcdef.0123456789abcdef`.
    pub bootstrap_token: String,
    /// 64 hex digits.
    pub certificate_key: String,
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The CA private key, PKCS#8 PEM.
    pub ca_key_pem: String,
    /// `sha256:<64 hex digits>` of the CA's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
}

impl std::fmt::Debug for ClusterSecrets {
    /// Only the public parts: secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("token_id", &self.token_id())
            .field("ca_cert_hash", &self.ca_cert_hash)
            .finish_non_exhaustive()
    }
}

impl ClusterSecrets {
    /// The token's public half (before the dot).
    pub fn token_id(&self) -> &str {
        self.bootstrap_token
            .split_once('.')
            .map_or("", |(id, _)| id)
    }

    /// Makes new secrets from the OS's randomness.
    pub fn generate() -> io::Result<Self> {
        let bootstrap_token = format!("{}.{}", random_token_chars(6)?, random_token_chars(16)?);
        let mut key = [0u8; 32];
        fill_random(&mut key)?;
        let certificate_key = hex(&key);
        let (ca_cert_pem, ca_key_pem) = generate_ca()?;
        let key_pair = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(other)?;
        Ok(ClusterSecrets {
            bootstrap_token,
            certificate_key,
            ca_cert_pem,
            ca_key_pem,
            ca_cert_hash: spki_hash(&key_pair.public_key_der()),
        })
    }
}

/// Loads the secrets kept in `dir`, or makes and keeps new ones when `dir`
/// does not exist (its parent is created as needed).
pub fn load_or_create(dir: &Path) -> io::Result<ClusterSecrets> {
    match fs::symlink_metadata(dir) {
        Ok(_) => load(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secrets = ClusterSecrets::generate()?;
            match store(dir, &secrets) {
                Ok(()) => Ok(secrets),
                // Another run made it first: theirs are the cluster's.
                Err(_) if dir.is_dir() => load(dir),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(with_path(dir, e)),
    }
}

/// Reads and checks the secrets in `dir`: every file present and well
/// formed, and the CA certificate holding the CA key's public key.
pub fn load(dir: &Path) -> io::Result<ClusterSecrets> {
    let meta = fs::metadata(dir).map_err(|e| with_path(dir, e))?;
    if !meta.is_dir() {
        return Err(invalid(dir, "is not a directory"));
    }
    let token_path = dir.join(TOKEN_FILE);
    let bootstrap_token = read_line(&token_path)?;
    if !is_token(&bootstrap_token) {
        return Err(invalid(
            &token_path,
            "is not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})",
        ));
    }
    let key_path = dir.join(CERTIFICATE_KEY_FILE);
    let certificate_key = read_line(&key_path)?;
    if certificate_key.len() != 64 || !certificate_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(&key_path, "is not 64 hex digits"));
    }
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_key_pem = read(&ca_key_path)?;
    let key_pair = rcgen::KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| invalid(&ca_key_path, &format!("is not a PEM private key: {e}")))?;
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_cert_pem = read(&ca_cert_path)?;
    let cert = pem::parse(&ca_cert_pem)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE")
        .ok_or_else(|| invalid(&ca_cert_path, "is not a PEM certificate"))?;
    let spki = key_pair.public_key_der();
    if !contains(cert.contents(), &spki) {
        return Err(invalid(
            &ca_cert_path,
            &format!("does not hold the public key of {}", ca_key_path.display()),
        ));
    }
    Ok(ClusterSecrets {
        bootstrap_token,
        certificate_key,
        ca_cert_pem,
        ca_key_pem,
        ca_cert_hash: spki_hash(&spki),
    })
}

/// `sha256:` + hex SHA-256 of a SubjectPublicKeyInfo (DER): a kubeadm
/// `caCertHashes` entry.
pub fn spki_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(spki_der)))
}

/// Writes `secrets` to a sibling temporary directory, then renames it to
/// `dir`.
fn store(dir: &Path, secrets: &ClusterSecrets) -> io::Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| invalid(dir, "has no parent directory"))?;
    fs::create_dir_all(parent).map_err(|e| with_path(parent, e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| invalid(dir, "has no file name"))?;
    let tmp = parent.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        super::state::temp_suffix()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| with_path(&tmp, e))?;
    let written = (|| {
        // The mode given to mkdir is masked by the umask; set it outright.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(&tmp, e))?;
        for (file, text) in [
            (TOKEN_FILE, format!("{}\n", secrets.bootstrap_token)),
            (
                CERTIFICATE_KEY_FILE,
                format!("{}\n", secrets.certificate_key),
            ),
            (CA_CERT_FILE, secrets.ca_cert_pem.clone()),
            (CA_KEY_FILE, secrets.ca_key_pem.clone()),
        ] {
            write_private(&tmp.join(file), text.as_bytes())?;
        }
        let sync = |d: &Path| fs::File::open(d).and_then(|f| f.sync_all());
        sync(&tmp).map_err(|e| with_path(&tmp, e))?;
        fs::rename(&tmp, dir).map_err(|e| with_path(dir, e))?;
        sync(parent).map_err(|e| with_path(parent, e))
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    written
}

/// Creates `path` with mode 0600 and `bytes` in it, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| with_path(path, e))?;
    f.write_all(bytes).map_err(|e| with_path(path, e))?;
    f.sync_all().map_err(|e| with_path(path, e))
}

/// A self-signed CA: (certificate PEM, PKCS#8 key PEM).
fn generate_ca() -> io::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().map_err(other)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(CA_BACKDATE_HOURS);
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    let mut serial = [0u8; 16];
    fill_random(&mut serial)?;
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(other)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::getrandom(buf).map_err(|e| io::Error::other(format!("getrandom: {e}")))
}

/// `n` characters of [a-z0-9], uniformly (bytes that would bias the
/// choice are drawn again).
fn random_token_chars(n: usize) -> io::Result<String> {
    let limit = 256 - 256 % TOKEN_ALPHABET.len();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        fill_random(&mut buf)?;
        for &b in &buf {
            if usize::from(b) < limit && out.len() < n {
                out.push(char::from(
                    TOKEN_ALPHABET[usize::from(b) % TOKEN_ALPHABET.len()],
                ));
            }
        }
    }
    Ok(out)
}

/// Whether `s` has a bootstrap token's shape.
pub fn is_token(s: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn read(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| with_path(path, e))
}

fn read_line(path: &Path) -> io::Result<String> {
    Ok(read(path)?.trim_end_matches('\n').to_string())
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} {what}", path.display()),
    )
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot make the cluster CA: {e}"))
}

/// The secrets directory of a cluster: `<state_dir>/<cluster>/secrets`.
pub fn secrets_dir(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join(cluster).join("secrets")
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
