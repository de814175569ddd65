//! One health check against one backend: SMTP (banner 220, EHLO → 250, QUIT) or a bare
//! TCP connect. The SMTP check proves that the MTA process answers, not only the kernel's
//! listen queue, and 4xx/5xx banners (a full or refusing MTA) count as failures.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::HealthMode;

/// Longest reply line accepted: a misbehaving peer cannot make us buffer without bound.
const MAX_LINE: usize = 2048;
/// Most lines in one multi-line reply.
const MAX_LINES: usize = 64;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("connect to {target} failed: {message}")]
    Connect { target: SocketAddr, message: String },
    #[error("no answer within {timeout:?} (during {stage})")]
    Timeout {
        stage: &'static str,
        timeout: Duration,
    },
    #[error("connection closed during {stage}")]
    Closed { stage: &'static str },
    #[error("{stage}: expected {expected}, got {line:?}")]
    Reply {
        stage: &'static str,
        expected: u16,
        line: String,
    },
    #[error("{stage}: {message}")]
    Io {
        stage: &'static str,
        message: String,
    },
}

/// Runs one check; `Ok` means healthy.
pub async fn check(
    target: SocketAddr,
    mode: HealthMode,
    ehlo_name: &str,
    timeout: Duration,
) -> Result<(), CheckError> {
    // Where the conversation was when the deadline hit, for the log line.
    let stage = Mutex::new("connect");
    let conv = conversation(target, mode, ehlo_name, &stage);
    match tokio::time::timeout(timeout, conv).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout {
            stage: *stage.lock().unwrap_or_else(|e| e.into_inner()),
            timeout,
        }),
    }
}

async fn conversation(
    target: SocketAddr,
    mode: HealthMode,
    ehlo_name: &str,
    stage: &Mutex<&'static str>,
) -> Result<(), CheckError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| CheckError::Connect {
            target,
            message: e.to_string(),
        })?;
    if mode == HealthMode::Tcp {
        return Ok(());
    }
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    set(stage, "banner");
    expect(&mut r, "banner", 220).await?;
    set(stage, "EHLO");
    write(&mut w, format!("EHLO {ehlo_name}\r\n").as_bytes(), "EHLO").await?;
    expect(&mut r, "EHLO", 250).await?;
    set(stage, "QUIT");
    // Be polite so the MTA does not log a lost connection; its answer does not matter.
    if write(&mut w, b"QUIT\r\n", "QUIT").await.is_ok() {
        let _ = read_reply(&mut r, "QUIT").await;
    }
    Ok(())
}

fn set(stage: &Mutex<&'static str>, now: &'static str) {
    *stage.lock().unwrap_or_else(|e| e.into_inner()) = now;
}

async fn write(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
    stage: &'static str,
) -> Result<(), CheckError> {
    w.write_all(data).await.map_err(|e| CheckError::Io {
        stage,
        message: e.to_string(),
    })
}

/// Reads a whole (possibly multi-line) reply; returns its code and last line.
async fn read_reply<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    stage: &'static str,
) -> Result<(u16, String), CheckError> {
    for _ in 0..MAX_LINES {
        let mut buf = Vec::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| CheckError::Io {
                stage,
                message: e.to_string(),
            })?;
        if n == 0 {
            return Err(CheckError::Closed { stage });
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c));
        let Some(code) = code else {
            return Err(CheckError::Reply {
                stage,
                expected: 0,
                line,
            });
        };
        match line.as_bytes().get(3) {
            Some(b'-') => continue,
            _ => return Ok((code, line)),
        }
    }
    Err(CheckError::Io {
        stage,
        message: format!("reply longer than {MAX_LINES} lines"),
    })
}

async fn expect<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    stage: &'static str,
    expected: u16,
) -> Result<(), CheckError> {
    let (code, line) = read_reply(r, stage).await.map_err(|e| match e {
        CheckError::Reply { stage, line, .. } => CheckError::Reply {
            stage,
            expected,
            line,
        },
        other => other,
    })?;
    if code == expected {
        Ok(())
    } else {
        Err(CheckError::Reply {
            stage,
            expected,
            line,
        })
    }
}
