//! The outbound config file: the shipped example loads, errors name file, line and
//! field, and a reload with a bad file changes nothing.

use mta_worker::config::ConfigError;
use mta_worker::shaping::{self, ShapingHandle, TlsPolicy};
use std::path::Path;
use std::time::Duration;

const MIN: &str = "[dns]\nservers = [\"127.0.0.1:53\"]\n\n[[pool]]\nname = \"default\"\n[[pool.source]]\nname = \"s\"\nip = \"127.0.0.1\"\nehlo = \"e.test\"\n";

#[test]
fn example_file_loads_with_providers_and_rules() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shaping.toml");
    let c = shaping::load(&p).unwrap_or_else(|e| panic!("{e}"));
    let g = c.shaping("google");
    assert_eq!(g.max_connections, 20);
    assert_eq!(g.tls, TlsPolicy::Required);
    assert_eq!(
        g.max_age,
        Duration::from_secs(5 * 86400),
        "inherited from [defaults]"
    );
    assert_eq!(c.shaping("elsewhere").max_connections, 10);
    assert_eq!(c.rules.len(), 4, "two configured plus two built-in");
    assert_eq!(
        c.provider_by_mx(["alt1.aspmx.l.google.com"]).unwrap().name,
        "google"
    );
    assert!(c.provider_by_mx(["mx.example.net"]).is_none());
}

fn invalid(text: &str) -> (usize, String, String) {
    match shaping::parse(Path::new("/etc/x/shaping.toml"), text) {
        Err(ConfigError::Invalid {
            file,
            line,
            field,
            message,
        }) => {
            assert_eq!(file, Path::new("/etc/x/shaping.toml"));
            (line, field, message)
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("accepted: {text}"),
    }
}

#[test]
fn errors_name_line_and_field() {
    let (line, field, msg) = invalid(&format!("{MIN}[defaults]\nmessage_rate = \"lots\"\n"));
    assert_eq!((line, field.as_str()), (11, "defaults.message_rate"));
    assert!(msg.contains("rate \"lots\""), "{msg}");
    let (line, field, msg) = invalid(&format!("{MIN}[defaults]\nmax_conections = 3\n"));
    assert_eq!((line, field.as_str()), (11, "defaults.max_conections"));
    assert!(msg.contains("unknown field `max_conections`"), "{msg}");
    let (line, field, msg) = invalid(&format!("{MIN}[[backoff]]\ncode = \"421\"\ntext = \"(unclosed\"\naction = \"suspend\"\nduration = \"1m\"\n"));
    assert_eq!((line, field.as_str()), (11, "backoff"));
    assert!(msg.contains("regex"), "{msg}");
    let (_, field, _) = invalid(&format!("default_pool = \"nope\"\n{MIN}"));
    assert_eq!(field, "default_pool");
    let (_, field, msg) = invalid(&format!("{MIN}[transport]\n\"a.test\" = \"no-port\"\n"));
    assert_eq!(field, "transport.a.test");
    assert!(msg.contains("host:port"));
    let (_, _, msg) = invalid(&format!(
        "{MIN}[[backoff]]\ncode = \"421\"\naction = \"suspend\"\n"
    ));
    assert!(msg.contains("needs a duration"));
}

#[test]
fn reload_validates_first_and_keeps_the_old_config_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shaping.toml");
    std::fs::write(&p, format!("{MIN}[defaults]\nmax_connections = 3\n")).unwrap();
    let h = ShapingHandle::new(shaping::load(&p).unwrap());
    assert_eq!(h.get().shaping("x").max_connections, 3);
    std::fs::write(
        &p,
        format!("{MIN}[defaults]\nmax_connections = \"three\"\n"),
    )
    .unwrap();
    let e = h.reload(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains("shaping.toml:11: defaults.max_connections"),
        "{e}"
    );
    assert_eq!(h.get().shaping("x").max_connections, 3, "unchanged");
    std::fs::write(&p, format!("{MIN}[defaults]\nmax_connections = 7\n")).unwrap();
    h.reload(&p).unwrap();
    assert_eq!(h.get().shaping("x").max_connections, 7);
}

#[test]
fn every_shipped_outbound_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "shaping.toml" || (name.contains("outbound") && name.ends_with(".toml")) {
            shaping::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1);
}
