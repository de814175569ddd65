//! Parsing of an HTTP/1.1 response read to its end, for the project's two small admin
//! clients: the `balancer` CLI against its daemon's API, and `mta-worker queues` against
//! the worker's queue API. Both send one request with `Connection: close` to a loopback
//! endpoint and read until EOF, so a full HTTP client would add a large dependency for
//! nothing; this crate is the one parser both use.

/// Status code and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Decoded body (chunked transfer removed, cut at `Content-Length`), lossily UTF-8.
    pub body: String,
}

/// Parses a whole response. The error says what was wrong, for the caller to put in its
/// own error next to the endpoint's address.
pub fn parse(raw: &[u8]) -> Result<Response, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or("").split_whitespace();
    if !status_line.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err("not an HTTP/1.x status line");
    }
    let status = status_line
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("bad status code")?;
    let mut chunked = false;
    let mut length = None;
    for h in lines {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, body: &str) -> Result<Response, &'static str> {
        Ok(Response {
            status,
            body: body.into(),
        })
    }

    #[test]
    fn plain_length_and_close_delimited_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(r, ok(200, "hi"));
        let r = parse(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope\nEXTRA");
        assert_eq!(r, ok(401, "nope\n"));
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n\r\nbody"), ok(200, "body"));
    }

    #[test]
    fn chunked_bodies() {
        let r = parse(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(r, ok(401, "abcde"));
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n");
        assert_eq!(r, ok(200, "{\"a\":1}"));
    }

    #[test]
    fn malformed_responses_say_why() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), Err("no end of headers"));
        assert_eq!(
            parse(b"garbage\r\n\r\n"),
            Err("not an HTTP/1.x status line")
        );
        assert_eq!(parse(b"HTTP/1.1 abc OK\r\n\r\n"), Err("bad status code"));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"),
            Err("body shorter than Content-Length")
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err("bad Content-Length")
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            Err("truncated chunk")
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err("bad chunk size")
        );
    }
}
