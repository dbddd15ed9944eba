use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use mercury_tests::TempDir;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn made_once_then_loaded_unchanged() {
    let tmp = TempDir::new("secrets");
    let dir = secrets_dir(tmp.path(), "edge1");
    let first = load_or_create(&dir).unwrap();
    assert!(
        is_token(&first.bootstrap_token),
        "{}",
        first.bootstrap_token
    );
    assert_eq!(first.certificate_key.len(), 64);
    assert!(first
        .certificate_key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(first.ca_cert_hash.starts_with("sha256:"));
    assert_eq!(first.ca_cert_hash.len(), "sha256:".len() + 64);
    assert_eq!(mode(&dir), 0o700);
    for file in [TOKEN_FILE, CERTIFICATE_KEY_FILE, CA_CERT_FILE, CA_KEY_FILE] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let again = load_or_create(&dir).unwrap();
    assert!(again == first, "a second run must load, not regenerate");
    // Nothing left over from the temporary directory.
    let names: Vec<_> = fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secrets"]);
}

#[test]
fn two_clusters_get_different_secrets() {
    let a = ClusterSecrets::generate().unwrap();
    let b = ClusterSecrets::generate().unwrap();
    assert_ne!(a.bootstrap_token, b.bootstrap_token);
    assert_ne!(a.certificate_key, b.certificate_key);
    assert_ne!(a.ca_cert_hash, b.ca_cert_hash);
}

#[test]
fn debug_output_hides_the_secrets() {
    let s = ClusterSecrets::generate().unwrap();
    let text = format!("{s:?}");
    let secret_half = s.bootstrap_token.split_once('.').unwrap().1;
    assert!(!text.contains(secret_half), "{text}");
    assert!(!text.contains(&s.certificate_key), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains(s.token_id()), "{text}");
}

#[test]
fn missing_or_corrupt_files_are_named_not_regenerated() {
    let tmp = TempDir::new("secrets-bad");
    let dir = tmp.path().join("secrets");
    let good = load_or_create(&dir).unwrap();

    fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
    let e = load_or_create(&dir).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("secrets/ca.key"), "{e}");
    assert!(!dir.join(CA_KEY_FILE).exists(), "must not be regenerated");
    fs::write(dir.join(CA_KEY_FILE), &good.ca_key_pem).unwrap();
    assert!(load(&dir).unwrap() == good);

    fs::write(dir.join(TOKEN_FILE), "ABCDEF.0123456789abcdef\n").unwrap();
    let e = load(&dir).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("bootstrap-token"), "{e}");
    fs::write(dir.join(TOKEN_FILE), format!("{}\n", good.bootstrap_token)).unwrap();

    fs::write(dir.join(CERTIFICATE_KEY_FILE), "abc\n").unwrap();
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("certificate-key"), "{e}");
    fs::write(dir.join(CERTIFICATE_KEY_FILE), &good.certificate_key).unwrap();

    fs::write(dir.join(CA_CERT_FILE), "not a certificate").unwrap();
    let e = load(&dir).unwrap_err();
    assert!(
        e.to_string().contains("ca.crt is not a PEM certificate"),
        "{e}"
    );

    // Another CA's certificate beside this CA's key.
    let other = ClusterSecrets::generate().unwrap();
    fs::write(dir.join(CA_CERT_FILE), &other.ca_cert_pem).unwrap();
    let e = load(&dir).unwrap_err();
    assert!(
        e.to_string()
            .contains("ca.crt does not hold the public key"),
        "{e}"
    );
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// The pin equals `openssl x509 -pubkey | openssl pkey -pubin -outform der
/// | sha256sum`, kubeadm's documented way to compute it, and the
/// certificate is a CA for 10 years.
#[test]
fn ca_hash_matches_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP: openssl is not installed");
        return;
    }
    let s = ClusterSecrets::generate().unwrap();
    let pubkey = openssl(&["x509", "-pubkey", "-noout"], s.ca_cert_pem.as_bytes());
    let der = openssl(&["pkey", "-pubin", "-outform", "der"], &pubkey);
    assert_eq!(
        s.ca_cert_hash,
        format!("sha256:{}", hex(&Sha256::digest(&der)))
    );
    let text = String::from_utf8(openssl(
        &["x509", "-noout", "-text"],
        s.ca_cert_pem.as_bytes(),
    ))
    .unwrap();
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("CN = kubernetes"), "{text}");
    let end = String::from_utf8(openssl(
        &["x509", "-noout", "-enddate"],
        s.ca_cert_pem.as_bytes(),
    ))
    .unwrap();
    let year: i32 = end.trim().rsplit(' ').nth(1).unwrap().parse().unwrap();
    assert!(year >= time::OffsetDateTime::now_utc().year() + 9, "{end}");
    // The key is the certificate's.
    let key_pub = openssl(&["pkey", "-pubout"], s.ca_key_pem.as_bytes());
    assert_eq!(key_pub, pubkey);
}

#[test]
fn tokens_have_kubeadms_shape() {
    assert!(is_token("abcdef.0123456789abcdef"));
    for bad in [
        "abcdef0123456789abcdef",
        "abcde.0123456789abcdef",
        "abcdef.0123456789abcde",
        "abcDef.0123456789abcdef",
        "abcdef.0123456789abcdef.",
    ] {
        assert!(!is_token(bad), "{bad}");
    }
    for _ in 0..50 {
        assert!(is_token(
            &ClusterSecrets::generate().unwrap().bootstrap_token
        ));
    }
}

/// Two runs making the secrets at once agree on one set.
#[test]
fn concurrent_first_runs_agree() {
    let tmp = TempDir::new("secrets-race");
    let dir = tmp.path().join("edge1/secrets");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || load_or_create(&dir).unwrap())
        })
        .collect();
    let got: Vec<ClusterSecrets> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let kept = load(&dir).unwrap();
    assert!(got.iter().all(|s| *s == kept));
}
