//! Session tests over real sockets on 127.0.0.1: every command, limit and reply code.

mod common;

use base64::Engine;
use common::{dot_stuff, Client, Worker, PASSWORD, USER};

type R = anyhow::Result<()>;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_transaction_and_simple_commands() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    let ehlo = c.hello().await?;
    assert_eq!(ehlo.code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
    ] {
        assert!(
            ehlo.lines.iter().any(|l| l == ext),
            "{ext} missing in {ehlo:?}"
        );
    }
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered without TLS"
    );
    assert!(c.cmd("NOOP").await?.is(250, "2.0.0"));
    assert!(c.cmd("VRFY alice").await?.is(252, "2.5.2"));
    assert!(c.cmd("HELP").await?.is(502, "5.5.1"));
    assert!(c.cmd("XYZZY").await?.is(500, "5.5.1"));
    assert!(c.cmd("RCPT TO:<a@b.test>").await?.is(503, "5.5.1"));
    assert!(c.cmd("DATA").await?.is(503, "5.5.1"));
    assert!(c.cmd("MAIL FROM:<s@a.test>").await?.is(250, "2.1.0"));
    assert!(c.cmd("MAIL FROM:<s@a.test>").await?.is(503, "5.5.1"));
    assert!(c.cmd("DATA").await?.is(503, "5.5.1"), "DATA without RCPT");
    assert!(c.cmd("RSET").await?.is(250, "2.0.0"));
    assert!(
        c.cmd("RCPT TO:<a@b.test>").await?.is(503, "5.5.1"),
        "RSET cleared MAIL"
    );
    let body = b"Subject: hi\r\n\r\nHello.\r\n";
    let r = c
        .send_mail("s@a.test", &["r1@b.test", "r2@c.test"], body)
        .await?;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let id = r.lines[0].rsplit(' ').next().unwrap().to_string();
    assert!(r.lines[0].starts_with("2.0.0 Ok: queued as "), "{r:?}");
    assert!(c.cmd("QUIT").await?.is(221, "2.0.0"));
    assert!(c.closed().await);

    let spooled = w.spooled();
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].1, body);
    assert_eq!(spooled[0].0.sender, "s@a.test");
    assert_eq!(spooled[0].0.recipients, vec!["r1@b.test", "r2@c.test"]);
    let (_, raw) = w.shared.spool.load(id.parse().unwrap())?;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(200)]);
    assert!(
        head.starts_with("Received: from client.test ([127.0.0.1])"),
        "{head}"
    );
    assert!(head.contains(&format!("id {id}")), "{head}");
    let log = w.reception_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["queue_id"], id.as_str());
    assert_eq!(log[0]["code"], 250);
    assert_eq!(log[0]["outcome"], "accepted");
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_role_on_several_addresses() -> R {
    let w = Worker::start("").await?;
    assert_ne!(w.relay.ip(), w.relay2.ip());
    for addr in [w.relay, w.relay2] {
        let mut c = Client::connect(addr).await?;
        c.hello().await?;
        assert!(c
            .send_mail("s@a.test", &["r@b.test"], b"x\r\n")
            .await?
            .is(250, "2.0.0"));
    }
    assert_eq!(w.spooled().len(), 2);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_and_commands_before_helo() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.read().await?;
    assert!(c.cmd("MAIL FROM:<s@a.test>").await?.is(503, "5.5.1"));
    let r = c.cmd("HELO old.test").await?;
    assert_eq!(r.code, 250);
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], b"x\r\n")
        .await?
        .is(250, "2.0.0"));
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_get_replies_in_order() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    // Everything up to DATA in one write, then the body and the next transaction too.
    c.send_raw(b"MAIL FROM:<p@a.test>\r\nRCPT TO:<x@b.test>\r\nRCPT TO:<y@b.test>\r\nDATA\r\n")
        .await?;
    assert!(c.read().await?.is(250, "2.1.0"));
    assert!(c.read().await?.is(250, "2.1.5"));
    assert!(c.read().await?.is(250, "2.1.5"));
    assert_eq!(c.read().await?.code, 354);
    c.send_raw(b"one\r\n.\r\nMAIL FROM:<q@a.test>\r\nRCPT TO:<z@b.test>\r\nDATA\r\n")
        .await?;
    assert!(c.read().await?.is(250, "2.0.0"));
    assert!(c.read().await?.is(250, "2.1.0"));
    assert!(c.read().await?.is(250, "2.1.5"));
    assert_eq!(c.read().await?.code, 354);
    c.send_raw(b"two\r\n.\r\nQUIT\r\n").await?;
    assert!(c.read().await?.is(250, "2.0.0"));
    assert!(c.read().await?.is(221, "2.0.0"));
    let mut bodies: Vec<Vec<u8>> = w.spooled().into_iter().map(|(_, b)| b).collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stuffing_both_ways() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    let body: &[u8] =
        b"Subject: dots\r\n\r\n.starts with dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n. \r\n";
    let stuffed = dot_stuff(body);
    assert!(stuffed.windows(5).any(|w| w == b"\n...t"), "client stuffed");
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], body)
        .await?
        .is(250, "2.0.0"));
    // An empty message is legal too.
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], b"")
        .await?
        .is(250, "2.0.0"));
    let mut got: Vec<Vec<u8>> = w.spooled().into_iter().map(|(_, b)| b).collect();
    got.sort();
    assert_eq!(got, vec![Vec::new(), body.to_vec()]);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_and_utf8_addresses() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    // A UTF-8 address needs SMTPUTF8 on MAIL.
    assert!(c
        .cmd("MAIL FROM:<jörg@exämple.test>")
        .await?
        .is(553, "5.6.7"));
    assert!(c
        .cmd("MAIL FROM:<jörg@exämple.test> SMTPUTF8 BODY=8BITMIME")
        .await?
        .is(250, "2.1.0"));
    assert!(c.cmd("RCPT TO:<用户@例子.test>").await?.is(250, "2.1.5"));
    assert_eq!(c.cmd("DATA").await?.code, 354);
    let body = "Subject: grüße\r\n\r\nKäse, 日本語 and raw 8-bit bytes\r\n".as_bytes();
    c.send_raw(body).await?;
    assert!(c.cmd(".").await?.is(250, "2.0.0"));
    let s = w.spooled();
    assert_eq!(s[0].1, body);
    assert_eq!(s[0].0.sender, "jörg@exämple.test");
    assert_eq!(s[0].0.recipients, vec!["用户@例子.test"]);
    assert!(s[0].0.smtputf8 && s[0].0.body_8bit);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_declared_and_actual() -> R {
    let w = Worker::start("max_message_size = 1000").await?;
    let mut c = Client::connect(w.relay).await?;
    let e = c.hello().await?;
    assert!(e.lines.iter().any(|l| l == "SIZE 1000"));
    assert!(c
        .cmd("MAIL FROM:<s@a.test> SIZE=5000")
        .await?
        .is(552, "5.3.4"));
    let big = "x".repeat(90) + "\r\n";
    let r = c
        .send_mail("s@a.test", &["r@b.test"], big.repeat(20).as_bytes())
        .await?;
    assert!(r.is(552, "5.3.4"), "{r:?}");
    // The session is still usable and a small message goes through.
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], big.as_bytes())
        .await?
        .is(250, "2.0.0"));
    assert_eq!(w.spooled().len(), 1);
    let log = w.reception_log();
    assert!(log
        .iter()
        .any(|r| r["code"] == 552 && r["outcome"] == "rejected"));
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_limit() -> R {
    let w = Worker::start("max_recipients = 2").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    c.cmd("MAIL FROM:<s@a.test>").await?;
    assert!(c.cmd("RCPT TO:<1@b.test>").await?.is(250, "2.1.5"));
    assert!(c.cmd("RCPT TO:<2@b.test>").await?.is(250, "2.1.5"));
    assert!(c.cmd("RCPT TO:<3@b.test>").await?.is(452, "4.5.3"));
    assert_eq!(c.cmd("DATA").await?.code, 354);
    c.send_raw(b"x\r\n").await?;
    assert!(c.cmd(".").await?.is(250, "2.0.0"));
    assert_eq!(w.spooled()[0].0.recipients.len(), 2);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_length_in_commands_and_data() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    let long = format!("NOOP {}", "a".repeat(2000));
    assert!(c.cmd(&long).await?.is(500, "5.5.2"));
    assert!(
        c.cmd("NOOP").await?.is(250, "2.0.0"),
        "session recovers after a long line"
    );
    // 998 characters + CRLF = 1000: allowed; 999 + CRLF: refused.
    let ok = "y".repeat(998) + "\r\n";
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], ok.as_bytes())
        .await?
        .is(250, "2.0.0"));
    let bad = "y".repeat(999) + "\r\n";
    assert!(c
        .send_mail("s@a.test", &["r@b.test"], bad.as_bytes())
        .await?
        .is(500, "5.5.2"));
    assert_eq!(w.spooled().len(), 1);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_and_cr_rejected_never_spooled() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    // Classic smuggling: LF.LF (or LF.CRLF) ends the data on lenient servers.
    for payload in [
        &b"Subject: a\r\n\r\nhi\n.\nMAIL FROM:<evil@a.test>\r\n"[..],
        b"Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<evil@a.test>\r\n",
        b"Subject: a\r\n\r\nhi\r.\r\nMAIL FROM:<evil@a.test>\r\n",
        b"bare\rcr in a line\r\n",
    ] {
        c.cmd("MAIL FROM:<s@a.test>").await?;
        c.cmd("RCPT TO:<r@b.test>").await?;
        assert_eq!(c.cmd("DATA").await?.code, 354);
        c.send_raw(payload).await?;
        let r = c.cmd(".").await?;
        assert!(r.is(550, "5.6.11"), "{payload:?}: {r:?}");
    }
    assert!(
        c.cmd("NOOP").await?.is(250, "2.0.0"),
        "smuggled MAIL was not executed as a command"
    );
    assert_eq!(w.spooled().len(), 0);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_chunking() -> R {
    let w = Worker::start("max_message_size = 100").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    c.cmd("MAIL FROM:<s@a.test>").await?;
    c.cmd("RCPT TO:<r@b.test>").await?;
    c.send_raw(b"BDAT 8\r\nHello,\r\n").await?;
    assert!(c.read().await?.is(250, "2.0.0"));
    c.send_raw(b"BDAT 9 LAST\r\n.world.\r\n").await?;
    assert!(c.read().await?.is(250, "2.0.0"));
    assert_eq!(w.spooled()[0].1, b"Hello,\r\n.world.\r\n");
    // Too big: the chunk is still consumed, then refused.
    c.cmd("MAIL FROM:<s@a.test>").await?;
    c.cmd("RCPT TO:<r@b.test>").await?;
    let mut big = b"BDAT 200 LAST\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'z', 198));
    big.extend(b"\r\n");
    c.send_raw(&big).await?;
    assert!(c.read().await?.is(552, "5.3.4"));
    // BDAT without a transaction.
    c.send_raw(b"BDAT 3 LAST\r\nabc").await?;
    assert!(c.read().await?.is(503, "5.5.1"));
    assert!(c.cmd("NOOP").await?.is(250, "2.0.0"));
    assert_eq!(w.spooled().len(), 1);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_relay_refused() -> R {
    // Loopback is not a relay network here.
    let w = Worker::start_with("\"10.0.0.0/8\"", "").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    c.cmd("MAIL FROM:<s@a.test>").await?;
    assert!(c
        .cmd("RCPT TO:<victim@elsewhere.test>")
        .await?
        .is(554, "5.7.1"));
    assert!(c.cmd("DATA").await?.is(503, "5.5.1"));
    assert_eq!(
        w.shared
            .metrics
            .rejected(mta_worker::metrics::RejectReason::Relay),
        1
    );
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refused_without_tls() -> R {
    let w = Worker::start_with("\"10.0.0.0/8\"", "").await?;
    let mut c = Client::connect(w.submission).await?;
    c.hello().await?;
    let plain = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(c
        .cmd(&format!("AUTH PLAIN {plain}"))
        .await?
        .is(538, "5.7.11"));
    assert!(
        c.cmd("MAIL FROM:<s@a.test>").await?.is(530, "5.7.0"),
        "submission needs TLS first"
    );
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_auth_plain_and_login_then_relay() -> R {
    let w = Worker::start_with("\"10.0.0.0/8\"", "").await?;
    let cert = w.material.cert_der.clone();
    let mut c = Client::connect(w.submission).await?;
    c.hello().await?;
    assert_eq!(c.cmd("STARTTLS").await?.code, 220);
    let mut c = c.upgrade(&cert).await?;
    // Fresh EHLO required after STARTTLS.
    assert!(c.cmd("MAIL FROM:<s@a.test>").await?.is(503, "5.5.1"));
    let e = c.cmd("EHLO client.test").await?;
    assert!(
        e.lines
            .iter()
            .any(|l| l == "AUTH LOGIN PLAIN" || l == "AUTH PLAIN LOGIN"),
        "{e:?}"
    );
    assert!(!e.lines.iter().any(|l| l == "STARTTLS"));
    assert!(c.cmd("STARTTLS").await?.is(503, "5.5.1"));
    assert!(
        c.cmd("MAIL FROM:<s@a.test>").await?.is(530, "5.7.0"),
        "AUTH required"
    );
    let wrong = b64(format!("\0{USER}\0nope").as_bytes());
    assert!(c
        .cmd(&format!("AUTH PLAIN {wrong}"))
        .await?
        .is(535, "5.7.8"));
    assert_eq!(c.cmd("AUTH PLAIN").await?.code, 334);
    assert!(c
        .cmd(&b64(format!("\0{USER}\0{PASSWORD}").as_bytes()))
        .await?
        .is(235, "2.7.0"));
    let r = c
        .send_mail("s@a.test", &["r@anywhere.test"], b"authed\r\n")
        .await?;
    assert!(
        r.is(250, "2.0.0"),
        "authenticated sessions may relay: {r:?}"
    );
    let s = w.spooled();
    assert_eq!(s[0].0.auth_user.as_deref(), Some(USER));

    // LOGIN over implicit TLS (465 role).
    let mut c = Client::connect_tls(w.smtps, &cert).await?;
    let e = c.hello().await?;
    assert!(!e.lines.iter().any(|l| l == "STARTTLS"));
    assert_eq!(c.cmd("AUTH LOGIN").await?.code, 334);
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await?.code, 334);
    assert!(c.cmd(&b64(PASSWORD.as_bytes())).await?.is(235, "2.7.0"));
    assert!(c
        .send_mail("s@a.test", &["r@x.test"], b"smtps\r\n")
        .await?
        .is(250, "2.0.0"));
    let (_, raw) = w
        .shared
        .spool
        .load(w.shared.spool.recover().last().unwrap().0)?;
    assert!(String::from_utf8_lossy(&raw[..raw.len().min(200)]).contains("with ESMTPSA"));
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_discards_pipelined_plaintext() -> R {
    let w = Worker::start("").await?;
    let cert = w.material.cert_der.clone();
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    // Injection attempt: a command pipelined behind STARTTLS in the plaintext phase.
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@a.test>\r\n")
        .await?;
    assert_eq!(c.read().await?.code, 220);
    let mut c = c.upgrade(&cert).await?;
    c.cmd("EHLO again.test").await?;
    assert!(
        c.cmd("MAIL FROM:<real@a.test>").await?.is(250, "2.1.0"),
        "no MAIL was pending"
    );
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_close_with_421() -> R {
    let w = Worker::start(
        "command_timeout = \"300ms\"\ndata_timeout = \"600ms\"\nidle_timeout = \"10s\"",
    )
    .await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    // Command timeout: a partial line that never ends.
    c.send_raw(b"NO").await?;
    assert!(c.read().await?.is(421, "4.4.2"));
    assert!(c.closed().await);
    // DATA timeout: a body trickling forever.
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    c.cmd("MAIL FROM:<s@a.test>").await?;
    c.cmd("RCPT TO:<r@b.test>").await?;
    c.cmd("DATA").await?;
    let mut got = None;
    for _ in 0..20 {
        if c.send_raw(b"x\r\n").await.is_err() {
            break;
        }
        if let Ok(Ok(r)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), c.read()).await
        {
            got = Some(r);
            break;
        }
    }
    assert!(got.expect("421 within 2s").is(421, "4.4.2"));
    assert_eq!(w.spooled().len(), 0);
    w.stop().await;

    let w = Worker::start("idle_timeout = \"300ms\"").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    assert!(c.read().await?.is(421, "4.4.2"), "idle timeout");
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() -> R {
    let w = Worker::start("max_connections = 3\nmax_connections_per_ip = 2").await?;
    let mut a = Client::connect(w.relay).await?;
    a.read().await?;
    let mut b = Client::connect(w.relay).await?;
    b.read().await?;
    // 127.0.0.1 has 2: refused per address.
    let mut c = Client::connect(w.relay).await?;
    assert!(c.read().await?.is(421, "4.7.0"));
    // Another loopback address is a different client; it takes the 3rd slot.
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind("127.0.0.2:0".parse()?)?;
    let _third = s.connect(w.relay).await?;
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind("127.0.0.3:0".parse()?)?;
    let fourth = s.connect(w.relay).await?;
    let mut d = Client::from_stream(fourth);
    assert!(d.read().await?.is(421, "4.7.0"), "total limit");
    // Closing one frees a slot.
    a.cmd("QUIT").await?;
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut e = Client::connect(w.relay).await?;
    assert_eq!(e.read().await?.code, 220);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_bad_commands_disconnects() -> R {
    let w = Worker::start("max_bad_commands = 3").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    assert!(c.cmd("BOGUS").await?.is(500, "5.5.1"));
    assert_eq!(c.cmd("MAIL FROM:bad").await?.code, 501);
    c.send_raw(b"BOGUS\r\n").await?;
    assert!(c.read().await?.is(500, "5.5.1"));
    assert!(c.read().await?.is(421, "4.7.0"));
    assert!(c.closed().await);
    w.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_endpoints() -> R {
    let w = Worker::start("").await?;
    let mut c = Client::connect(w.relay).await?;
    c.hello().await?;
    for to in [&["a@one.test", "b@two.test"][..], &["c@one.test"]] {
        assert!(c
            .send_mail("s@a.test", to, b"m\r\n")
            .await?
            .is(250, "2.0.0"));
    }
    let status: serde_json::Value =
        serde_json::from_str(&common::http_get(w.admin, "/status").await?)?;
    assert_eq!(status["queue_depth"], 2);
    assert_eq!(status["queue_depth_by_domain"]["one.test"], 2);
    assert_eq!(status["queue_depth_by_domain"]["two.test"], 1);
    assert_eq!(status["active_sessions"], 1);
    assert_eq!(status["active_deliveries"], 0);
    assert!(status["spool_bytes"].as_u64().unwrap() > 6);
    let m = common::http_get(w.admin, "/metrics").await?;
    assert!(m.contains("mta_messages_accepted_total 2"), "{m}");
    assert!(m.contains("mta_sessions_active 1"));
    assert!(m.contains("mta_spool_commit_batch_size_count"));
    assert!(m.contains("mta_rejected_total{reason=\"relay_denied\"} 0"));
    // remove() is reflected in the status.
    let first = w.shared.spool.recover().next().unwrap().0;
    w.shared.spool.remove(first)?;
    let status: serde_json::Value =
        serde_json::from_str(&common::http_get(w.admin, "/status").await?)?;
    assert_eq!(status["queue_depth"], 1);
    w.stop().await;
    Ok(())
}
