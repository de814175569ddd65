//! The spool API the outbound side builds on: store/recover/load/remove/subscribe, group
//! commit under concurrency, and recovery that drops half-written and damaged files.

use mta_worker::spool::{Envelope, QueueId, Spool};
use std::collections::HashSet;

fn env(rcpt: &str) -> Envelope {
    Envelope {
        sender: "s@a.test".into(),
        recipients: vec![rcpt.into()],
        peer: "127.0.0.1:1".into(),
        helo: "h.test".into(),
        auth_user: None,
        received_at: 1,
        body_8bit: false,
        smtputf8: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recover_load_remove_and_notify() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path())?;
    let mut events = spool.subscribe();
    // 64 concurrent stores: they share group commits and all get distinct ids.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = spool.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("message {i}\r\n").repeat(i + 1);
            let id = s
                .store(env(&format!("r{i}@d{}.test", i % 3)), body.as_bytes())
                .await
                .unwrap();
            (id, body)
        }));
    }
    let mut stored = Vec::new();
    for t in tasks {
        stored.push(t.await?);
    }
    let ids: HashSet<QueueId> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 64);
    for _ in 0..64 {
        let a = events.recv().await.unwrap();
        assert!(ids.contains(&a.id));
    }
    assert_eq!(spool.queue_depth(), 64);
    assert_eq!(spool.depth_by_domain()["d0.test"], 22);
    drop(spool);

    // A batch torn by a crash at the end of the newest segment, and a damaged older segment.
    let shard = dir.path().join("segments");
    let newest = std::fs::read_dir(&shard)?
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .parse::<QueueId>()
                .is_ok()
        })
        .max()
        .unwrap();
    let good_len = std::fs::metadata(&newest)?.len();
    let mut torn = std::fs::OpenOptions::new().append(true).open(&newest)?;
    std::io::Write::write_all(
        &mut torn,
        b"MTAQ2 00064C0000000000 40 1000 deadbeef\n{\"sender\":",
    )?;
    drop(torn);
    std::fs::write(
        shard.join("00000000000000B0"),
        b"MTAQ2 00000000000000B0 2 100\n{}\nshort",
    )?;
    let spool = Spool::open(dir.path())?;
    assert!(dir.path().join("quarantine/00000000000000B0").exists());
    assert_eq!(std::fs::metadata(&newest)?.len(), good_len, "torn tail cut");
    let recovered: Vec<_> = spool.recover().collect();
    assert_eq!(recovered.len(), 64);
    assert!(
        recovered.windows(2).all(|w| w[0].0 < w[1].0),
        "arrival order"
    );
    for (id, body) in &stored {
        let (e, data) = spool.load(*id)?;
        assert_eq!(data, body.as_bytes());
        assert_eq!(e.sender, "s@a.test");
    }
    let (first, _) = stored[0];
    spool.remove(first)?;
    assert!(spool.load(first).is_err());
    assert_eq!(spool.queue_depth(), 63);
    // Removals survive a restart; removing everything deletes the segment files.
    drop(spool);
    let spool = Spool::open(dir.path())?;
    assert_eq!(spool.queue_depth(), 63);
    assert!(spool.load(first).is_err());
    for (id, _) in spool.recover().collect::<Vec<_>>() {
        spool.remove(id)?;
    }
    let left: Vec<_> = std::fs::read_dir(&shard)?
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "removed.log")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(spool);
    let spool = Spool::open(dir.path())?;
    assert_eq!(spool.queue_depth(), 0);
    // Ids keep increasing across restarts.
    let next = spool.store(env("x@y.test"), b"x\r\n").await?;
    assert!(ids.iter().all(|id| *id < next));
    Ok(())
}
