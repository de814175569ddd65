//! STARTTLS policies against real TLS servers, and DKIM signatures checked by mail-auth's
//! verifier with the public keys served from DNS (dnsmasq TXT records).

mod outbound_common;

use base64::Engine;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mta_worker::shaping::SystemClock;
use outbound_common::*;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A CA and a server certificate it signed for `name`.
fn ca_signed(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Outbound Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .unwrap();
    (ca.pem(), Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_vs_opportunistic_vs_off() {
    let dns = Dnsmasq::start(&[
        "--mx-host=opp.test,mx.self.test,10".into(),
        "--mx-host=req.test,mx.self.test,10".into(),
        "--mx-host=off.test,mx.self.test,10".into(),
        "--mx-host=reqok.test,mx.reqok.test,10".into(),
        "--host-record=mx.self.test,127.0.0.91".into(),
        "--host-record=mx.reqok.test,127.0.0.92".into(),
    ]);
    let (port, mut ls) = bind_same_port(&[ip("127.0.0.91"), ip("127.0.0.92")]).await;
    let (ca_pem, ca_tls) = ca_signed("mx.reqok.test");
    let good = Sink::on(
        port,
        vec![ls.pop().unwrap()],
        Script {
            tls: Some(ca_tls),
            ..Default::default()
        },
    );
    let selfsigned = Sink::on(
        port,
        ls,
        Script {
            tls: Some(self_signed_tls("mx.self.test")),
            ..Default::default()
        },
    );
    let tables = "[tls]\nca_file = \"@DIR@/ca.pem\"\n\n[[provider]]\nname = \"opp\"\ndomains = [\"opp.test\"]\n[provider.shaping]\ntls = \"opportunistic\"\n\n[[provider]]\nname = \"req\"\ndomains = [\"req.test\"]\n[provider.shaping]\ntls = \"required\"\nretry = [\"1h\"]\n\n[[provider]]\nname = \"off\"\ndomains = [\"off.test\"]\n[provider.shaping]\ntls = \"off\"\n\n[[provider]]\nname = \"reqok\"\ndomains = [\"reqok.test\"]\n[provider.shaping]\ntls = \"required\"\n";
    let toml = config(
        dns.addr,
        port,
        &[("default", &[("s", "127.0.0.93", "s.worker.test")])],
        "",
        tables,
    );
    let w = Worker::start_with_files(
        &toml,
        Arc::new(SystemClock),
        &[("ca.pem", ca_pem.as_bytes())],
    );
    for d in ["opp.test", "req.test", "off.test", "reqok.test"] {
        w.submit("s@x.test", &[&format!("u@{d}")], d, "").await;
    }
    assert!(
        wait_for(15, || selfsigned.rec.msgs().len() == 2
            && good.rec.msgs().len() == 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sub = |m: &Msg| {
        String::from_utf8_lossy(&m.data)
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap()
            .to_string()
    };
    let ss = selfsigned.rec.msgs();
    let opp = ss
        .iter()
        .find(|m| sub(m) == "Subject: opp.test")
        .expect("opportunistic accepts a self-signed cert");
    assert!(opp.tls);
    let off = ss
        .iter()
        .find(|m| sub(m) == "Subject: off.test")
        .expect("off delivers");
    assert!(!off.tls, "tls = off never starts TLS although offered");
    assert!(
        !ss.iter().any(|m| sub(m) == "Subject: req.test"),
        "required + untrusted cert: not sent"
    );
    let ok = &good.rec.msgs()[0];
    assert!(
        ok.tls && sub(ok) == "Subject: reqok.test",
        "required + valid chain and name: sent over TLS"
    );
    let log = w.log();
    let rec = |d: &str| {
        log.iter()
            .find(|r| r["domain"] == d && r["event"] != "reception")
            .unwrap()
            .clone()
    };
    assert!(
        rec("opp.test")["tls"]
            .as_str()
            .unwrap()
            .starts_with("tls TLSv1_3"),
        "{}",
        rec("opp.test")
    );
    assert_eq!(rec("off.test")["tls"], "off");
    let req = rec("req.test");
    assert_eq!(req["event"], "transient", "deferred, not bounced: {req}");
    assert_eq!(req["enhanced"], "4.7.5");
    assert!(req["tls"].as_str().unwrap().starts_with("failed"), "{req}");
    assert_eq!(
        w.handle.depth(),
        1,
        "the required-TLS message waits for its retry"
    );
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signatures_verify_with_mail_auth() {
    let keys = tempfile::tempdir().unwrap();
    // Ed25519 key (PKCS#8 PEM) from rcgen, RSA-2048 from openssl.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_path = keys.path().join("ed.pem");
    std::fs::write(&ed_path, ed.serialize_pem()).unwrap();
    let ed_pub = base64::engine::general_purpose::STANDARD.encode(ed.public_key_raw());
    let rsa_path = keys.path().join("rsa.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa_path.to_str().unwrap(),
    ]);
    let rsa_der = openssl(&[
        "pkey",
        "-in",
        rsa_path.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let rsa_pub = base64::engine::general_purpose::STANDARD.encode(rsa_der);
    let rsa_txt = format!("v=DKIM1; k=rsa; p={rsa_pub}");
    let chunks: Vec<String> = rsa_txt
        .as_bytes()
        .chunks(200)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect();
    let dns = Dnsmasq::start(&[
        "--mx-host=dest.test,mx.dest.test,10".into(),
        "--host-record=mx.dest.test,127.0.0.95".into(),
        // dnsmasq takes the strings of a TXT record comma-separated, verbatim (no quoting).
        format!("--txt-record=ed1._domainkey.eds.test,v=DKIM1; k=ed25519; p={ed_pub}"),
        format!("--txt-record=rs1._domainkey.rsas.test,{}", chunks.join(",")),
    ]);
    let sink = Sink::start(&[ip("127.0.0.95")], Script::default()).await;
    let tables = format!(
        "[[dkim]]\ndomain = \"eds.test\"\nselector = \"ed1\"\nkey_file = \"{}\"\nalgorithm = \"ed25519-sha256\"\n\n[[dkim]]\ndomain = \"rsas.test\"\nselector = \"rs1\"\nkey_file = \"{}\"\nalgorithm = \"rsa-sha256\"\n",
        ed_path.display(),
        rsa_path.display()
    );
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("s", "127.0.0.96", "s.worker.test")])],
        "",
        &tables,
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    w.submit("alice@eds.test", &["u@dest.test"], "ed", "").await;
    w.submit("bob@rsas.test", &["u@dest.test"], "rsa", "").await;
    w.submit("carol@nokey.test", &["u@dest.test"], "unsigned", "")
        .await;
    assert!(wait_for(15, || sink.rec.msgs().len() == 3).await);
    let mut ns_udp = ConnectionConfig::udp();
    ns_udp.port = dns.addr.port();
    let resolver_cfg = ResolverConfig::from_parts(
        None,
        vec![],
        vec![NameServerConfig::new(dns.addr.ip(), true, vec![ns_udp])],
    );
    let auth = MessageAuthenticator::new(resolver_cfg, ResolverOpts::default()).unwrap();
    for m in sink.rec.msgs() {
        let text = String::from_utf8_lossy(&m.data).to_string();
        let parsed = AuthenticatedMessage::parse(&m.data).unwrap();
        let results = auth.verify_dkim(&parsed).await;
        if text.contains("Subject: unsigned") {
            assert!(!text.contains("DKIM-Signature"), "no key for nokey.test");
            continue;
        }
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert_eq!(results.len(), 1, "{text}");
        assert_eq!(results[0].result(), &DkimResult::Pass, "{text}");
        let want = if text.contains("Subject: ed") {
            "a=ed25519-sha256"
        } else {
            "a=rsa-sha256"
        };
        assert!(text.contains(want), "{text}");
    }
    // Tampering breaks it: the verifier really checks.
    let m = sink
        .rec
        .msgs()
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("Subject: ed"))
        .unwrap();
    let tampered = String::from_utf8_lossy(&m.data).replace("Hello ed.", "Hello tampered.");
    let parsed = AuthenticatedMessage::parse(tampered.as_bytes()).unwrap();
    assert_ne!(
        auth.verify_dkim(&parsed).await[0].result(),
        &DkimResult::Pass
    );
}
