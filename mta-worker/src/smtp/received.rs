//! The `Received:` trace header (RFC 5321 §4.4) prepended to every accepted message.

use std::time::{SystemTime, UNIX_EPOCH};

/// Facts about the transaction the header records.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub peer_ip: std::net::IpAddr,
    pub hostname: &'a str,
    /// "ESMTP", "ESMTPS", "ESMTPSA" ... (RFC 3848).
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// Named only for single-recipient messages, to not disclose Bcc recipients.
    pub recipient: Option<&'a str>,
    pub unix_time: u64,
}

pub fn header(t: &Trace<'_>) -> Vec<u8> {
    let ip = match t.peer_ip {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    // The HELO name is client-supplied: keep it printable so it cannot break the header.
    let helo: String = t
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let mut h = format!(
        "Received: from {helo} ([{ip}])\r\n\tby {} (mta-worker) with {} id {}",
        t.hostname, t.protocol, t.queue_id
    );
    if let Some(r) = t.recipient {
        let r: String = r.chars().filter(|c| !c.is_control()).collect();
        h.push_str(&format!("\r\n\tfor <{r}>"));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(t.unix_time)));
    h.into_bytes()
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "Fri, 04 Dec 2026 16:19:32 +0000", computed without a date crate.
pub fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days.rem_euclid(7)) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_796_401_172),
            "Fri, 04 Dec 2026 16:19:32 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
