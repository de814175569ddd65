//! `mta-worker check-config`: the example parses (its paths aside), and errors name
//! file, line and field.

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta-worker"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn example_config_is_valid_apart_from_missing_files() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worker.toml");
    let (ok, out) = check(&example);
    // The example points at /etc paths that do not exist here: the first such field is named.
    assert!(!ok);
    assert!(out.contains("worker.toml:33: tls.cert:"), "{out}");
    // With TLS/AUTH and their listeners removed, it is fully valid.
    let text = std::fs::read_to_string(&example).unwrap();
    let cut: String = text
        .split("\n[")
        .filter(|s| !s.starts_with("tls]") && !s.starts_with("auth]") && !s.contains("role = \"s"))
        .collect::<Vec<_>>()
        .join("\n[");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, cut).unwrap();
    let (ok, out) = check(&p);
    assert!(ok, "{out}");
}

#[test]
fn errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "hostname = \"mx.test\"\n[spool]\ndir = \"/tmp/s\"\n[limits]\nmax_recipients = 5\nmax_recipeints = 6\n[[listener]]\nrole = \"relay\"\naddresses = [\"127.0.0.1:25\"]\n",
    )
    .unwrap();
    let (ok, out) = check(&p);
    assert!(!ok);
    assert!(
        out.contains("bad.toml:6: max_recipeints: unknown field"),
        "{out}"
    );
    std::fs::write(
        &p,
        "hostname = \"mx.test\"\n[spool]\ndir = \"/tmp/s\"\n[relay]\nnetworks = [\"10.0.0.0/33\"]\n[[listener]]\nrole = \"relay\"\naddresses = [\"127.0.0.1:25\"]\n",
    )
    .unwrap();
    let (ok, out) = check(&p);
    assert!(!ok && out.contains("bad.toml:5:"), "{out}");
}
