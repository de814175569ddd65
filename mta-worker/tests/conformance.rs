//! Real clients against the worker: swaks (plain, STARTTLS + AUTH, implicit TLS) and
//! Postfix's smtp-source (concurrent sessions, dot-stuffing of a pre-formatted file).
//! The spool must hold exactly what was sent.

mod common;

use common::{Worker, PASSWORD, USER};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

type R = anyhow::Result<()>;

async fn run(cmd: &mut Command) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {text}");
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain_starttls_auth_and_smtps() -> R {
    let w = Worker::start_with("\"127.0.0.0/8\"", "").await?;
    let msg = "From: a@x.test\r\nTo: b@y.test\r\nSubject: swaks\r\n\r\nline one\r\n.dot line\r\nÜmlaut 8-bit\r\n";
    let file = w.material.path("msg.eml");
    std::fs::write(&file, msg)?;
    // One swaks run: server, recipient, then the TLS mode and AUTH arguments.
    let swaks = |server: std::net::SocketAddr, to: &str, extra: &[&str]| {
        let mut c = Command::new("swaks");
        c.args(["--server", &format!("{}:{}", server.ip(), server.port())])
            .args(["--from", "a@x.test", "--to", to])
            .args(extra)
            .arg("--data")
            .arg(&file);
        c
    };
    let auth = |mech: &'static str, password: &'static str| {
        [
            "--auth",
            mech,
            "--auth-user",
            USER,
            "--auth-password",
            password,
        ]
    };
    // Plain relay from a trusted network.
    run(&mut swaks(w.relay, "b@y.test", &["--helo", "swaks.test"])).await?;
    // Submission: STARTTLS then AUTH PLAIN.
    let tls_plain = [&["-tls"][..], &auth("PLAIN", PASSWORD)].concat();
    run(&mut swaks(w.submission, "c@z.test", &tls_plain)).await?;
    // Implicit TLS with AUTH LOGIN.
    let smtps_login = [&["--tls-on-connect"][..], &auth("LOGIN", PASSWORD)].concat();
    run(&mut swaks(w.smtps, "d@z.test", &smtps_login)).await?;
    // Wrong password: swaks must fail and nothing is spooled for it.
    let tls_wrong = [&["-tls"][..], &auth("PLAIN", "wrong")].concat();
    let bad = run(&mut swaks(w.submission, "e@z.test", &tls_wrong)).await;
    assert!(bad.is_err());
    let s = w.spooled();
    assert_eq!(s.len(), 3);
    let mut rcpts: Vec<String> = s.iter().map(|(e, _)| e.recipients[0].clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["b@y.test", "c@z.test", "d@z.test"]);
    // swaks always sends "\r\n." after the data, so a file ending in CRLF arrives with
    // one more empty line: that is what was on the wire, byte for byte.
    let sent = format!("{msg}\r\n");
    for (env, body) in &s {
        assert_eq!(String::from_utf8_lossy(body), sent, "{env:?}");
    }
    assert_eq!(
        s.iter()
            .filter(|(e, _)| e.auth_user.as_deref() == Some(USER))
            .count(),
        2
    );
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_source_concurrent_sessions() -> R {
    let w = Worker::start("").await?;
    let file = w.material.path("preformatted.eml");
    // smtp-source converts LF to CRLF and dot-stuffs lines starting with '.'.
    let text = "Subject: smtp-source\n\n.leading dot\n..two\nbody line\n";
    std::fs::write(&file, text)?;
    let target = format!("{}:{}", w.relay.ip(), w.relay.port());
    run(Command::new("/usr/sbin/smtp-source")
        .args([
            "-s",
            "8",
            "-m",
            "200",
            "-f",
            "src@x.test",
            "-t",
            "dst@y.test",
        ])
        .arg("-F")
        .arg(&file)
        .arg(&target))
    .await?;
    let s = w.spooled();
    assert_eq!(s.len(), 200);
    // Like swaks, smtp-source sends "\r\n.\r\n" after the file's last line end.
    let want = text.replace('\n', "\r\n") + "\r\n";
    for (env, body) in &s {
        assert_eq!(env.sender, "src@x.test");
        assert_eq!(env.recipients, ["dst@y.test"]);
        assert_eq!(String::from_utf8_lossy(body), want);
    }
    // Generated bodies of a given size, several messages per connection (-d).
    run(Command::new("/usr/sbin/smtp-source")
        .args([
            "-d",
            "-s",
            "4",
            "-m",
            "100",
            "-l",
            "4096",
            "-f",
            "src@x.test",
            "-t",
            "dst@y.test",
        ])
        .arg(&target))
    .await?;
    let s = w.spooled();
    assert_eq!(s.len(), 300);
    let generated: Vec<_> = s
        .iter()
        .filter(|(_, b)| !b.starts_with(b"Subject: smtp-source"))
        .collect();
    assert_eq!(generated.len(), 100);
    for (_, b) in generated {
        let body = &b[b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let payload: usize = body.iter().filter(|&&c| c != b'\r' && c != b'\n').count();
        assert!(
            payload >= 4096 - 200 && body.len() <= 4096 + 200,
            "payload {payload}"
        );
    }
    assert_eq!(
        w.shared
            .metrics
            .messages_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        300
    );
    w.stop().await;
    Ok(())
}
