//! Small value types of the config that are written as strings (MACs, prefixes) and
//! parsed on load, so that a typo is a load error pointing at its line, not a run-time
//! surprise.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A MAC address, or `auto` to resolve it from the kernel when the daemon starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacSetting {
    Auto,
    Fixed([u8; 6]),
}

impl FromStr for MacSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(MacSetting::Auto);
        }
        parse_mac(s).map(MacSetting::Fixed)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let err = || {
        format!("invalid MAC address {s:?}: expected \"auto\" or six hex bytes like \"02:00:00:00:00:01\"")
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(err());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(err());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| err())?;
    }
    Ok(mac)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl fmt::Display for MacSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MacSetting::Auto => f.write_str("auto"),
            MacSetting::Fixed(m) => f.write_str(&format_mac(m)),
        }
    }
}

/// A client prefix such as `198.18.0.0/15` or `fd00:198:18::/48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("invalid prefix {s:?}: {a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("invalid prefix {s:?}: length must be 0..={max}"))?,
        };
        Ok(IpPrefix { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

macro_rules! deserialize_from_str {
    ($t:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

deserialize_from_str!(MacSetting, "a MAC address string or \"auto\"");
deserialize_from_str!(IpPrefix, "an IP prefix string such as \"198.18.0.0/15\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!("auto".parse(), Ok(MacSetting::Auto));
        assert_eq!(
            "02:00:00:00:0a:FF".parse(),
            Ok(MacSetting::Fixed([2, 0, 0, 0, 10, 255]))
        );
        assert!("02:00:00:00:0a".parse::<MacSetting>().is_err());
        assert!("zz:00:00:00:0a:00".parse::<MacSetting>().is_err());
    }

    #[test]
    fn prefixes() {
        let p: IpPrefix = "198.18.0.0/15".parse().unwrap();
        assert_eq!(p.len, 15);
        let p: IpPrefix = "fd00:198:18::1".parse().unwrap();
        assert_eq!(p.len, 128);
        assert_eq!(
            "198.18.0.0/33".parse::<IpPrefix>(),
            Err("invalid prefix \"198.18.0.0/33\": length must be 0..=32".into())
        );
    }
}
