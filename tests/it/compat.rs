//! Client compatibility: the real aws CLI, boto3, s3cmd and rclone drive the real binary. The
//! scripts in `tests/compat/` hold the client-side steps and checks; `scripts/install-clients.sh`
//! installs the clients (the README's test command runs it first).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    let bin = root().join(".venv/bin");
    assert!(
        bin.join("aws").exists() && bin.join("s3cmd").exists(),
        "the client tools are missing: run scripts/install-clients.sh (the README's test command does)"
    );
    bin
}

fn run(program: &str, script: &str, key: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), "");
    run_against(p.endpoint(), dir.path(), program, script, key, &[]);
    p.stop();
}

pub(crate) fn run_against(
    endpoint: String,
    dir: &std::path::Path,
    program: &str,
    script: &str,
    key: (&str, &str),
    env: &[(&str, String)],
) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin = bin();
    let program = if program == "python" {
        bin.join("python").display().to_string()
    } else {
        program.to_string()
    };
    let out = Command::new(program)
        .arg(root().join("tests/compat").join(script))
        .env("ENDPOINT", endpoint)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AK", key.0)
        .env("SK", key.1)
        .env("WORK", &work)
        .env("BIN", &bin)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    eprintln!("{text}");
}

#[test]
fn aws_cli() {
    run("bash", "awscli.sh", ACME);
}

#[test]
fn boto3() {
    run("python", "boto3_suite.py", GLOBEX);
}

#[test]
fn sigv2_presigned_urls_from_boto3() {
    run("python", "presign_v2.py", ACME);
}

#[test]
fn s3cmd() {
    run("bash", "s3cmd.sh", ACME);
}

#[test]
fn rclone() {
    run("bash", "rclone.sh", GLOBEX);
}

/// Over TLS, current SDKs send aws-chunked bodies with a checksum trailer
/// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`): boto3 against the TLS listener exercises that path.
#[test]
fn boto3_over_tls_with_chunked_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let TestCert { ca, cert, key } = TestCert::make(dir.path());
    let tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    let p = Proc::start_with(dir.path(), &tls, "");
    let endpoint = format!("https://127.0.0.1:{}", p.addr.port());
    run_against(
        endpoint,
        dir.path(),
        "python",
        "boto3_tls.py",
        ACME,
        &[("CA_BUNDLE", ca.display().to_string())],
    );
    p.stop();
}
