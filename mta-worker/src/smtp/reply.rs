//! SMTP replies as typed values (code, enhanced code, text). Callers and tests match on
//! the numbers, never on the text.

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `[5, 3, 4]`.
    pub esc: [u8; 3],
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, esc: [u8; 3], text: &'static str) -> Self {
        Self {
            code,
            esc,
            text: Cow::Borrowed(text),
        }
    }

    pub fn owned(code: u16, esc: [u8; 3], text: String) -> Self {
        Self {
            code,
            esc,
            text: Cow::Owned(text),
        }
    }

    /// Appends the wire form (single line; multi-line replies are only EHLO's).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{self}\r\n").as_bytes());
    }

    /// 421: the server closes the connection after sending it.
    pub fn closes(&self) -> bool {
        self.code == 421
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // [0, 0, 0] marks replies that carry no enhanced code (354, the greeting).
        match self.esc {
            [0, 0, 0] => write!(f, "{} {}", self.code, self.text),
            [a, b, c] => write!(f, "{} {a}.{b}.{c} {}", self.code, self.text),
        }
    }
}

// The replies the worker uses, in one place so codes stay consistent.
pub const OK: Reply = Reply::new(250, [2, 0, 0], "Ok");
pub const SENDER_OK: Reply = Reply::new(250, [2, 1, 0], "Sender ok");
pub const RCPT_OK: Reply = Reply::new(250, [2, 1, 5], "Recipient ok");
pub const RESET_OK: Reply = Reply::new(250, [2, 0, 0], "Reset");
pub const BYE: Reply = Reply::new(221, [2, 0, 0], "Bye");
pub const VRFY_REFUSED: Reply = Reply::new(
    252,
    [2, 5, 2],
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const START_DATA: Reply = Reply::new(354, [0, 0, 0], "End data with <CR><LF>.<CR><LF>");
pub const READY_TLS: Reply = Reply::new(220, [2, 0, 0], "Ready to start TLS");
pub const AUTH_OK: Reply = Reply::new(235, [2, 7, 0], "Authentication successful");

pub const TIMEOUT: Reply = Reply::new(421, [4, 4, 2], "Timeout, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, [4, 7, 0], "Too many connections, try again later");
pub const TOO_MANY_FROM_YOU: Reply = Reply::new(
    421,
    [4, 7, 0],
    "Too many connections from your address, try again later",
);
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, [4, 7, 0], "Too many errors, closing connection");
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, [4, 3, 2], "Service shutting down, closing connection");
pub const TOO_MANY_RCPTS: Reply = Reply::new(452, [4, 5, 3], "Too many recipients");
pub const SPOOL_FAILED: Reply = Reply::new(
    451,
    [4, 3, 0],
    "Local error in processing, message not accepted",
);
pub const TLS_UNAVAILABLE: Reply = Reply::new(454, [4, 7, 0], "TLS not available");

pub const LINE_TOO_LONG: Reply = Reply::new(500, [5, 5, 2], "Line too long");
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, [5, 5, 1], "Command unrecognized");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, [5, 5, 1], "Command not implemented");
pub const BAD_SEQUENCE: Reply = Reply::new(503, [5, 5, 1], "Bad sequence of commands");
pub const NEED_EHLO: Reply = Reply::new(503, [5, 5, 1], "Send EHLO/HELO first");
pub const NEED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Need MAIL command first");
pub const NEED_RCPT: Reply = Reply::new(503, [5, 5, 1], "Need RCPT command first");
pub const NESTED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Sender already specified");
pub const ALREADY_AUTH: Reply = Reply::new(503, [5, 5, 1], "Already authenticated");
pub const ALREADY_TLS: Reply = Reply::new(503, [5, 5, 1], "TLS already active");
pub const AUTH_MECH_UNSUPPORTED: Reply =
    Reply::new(504, [5, 5, 4], "Unsupported authentication mechanism");
pub const AUTH_CANCELLED: Reply = Reply::new(501, [5, 5, 0], "Authentication cancelled");
pub const AUTH_SYNTAX: Reply = Reply::new(501, [5, 5, 2], "Invalid base64 or SASL message");
pub const AUTH_REQUIRED: Reply = Reply::new(530, [5, 7, 0], "Authentication required");
pub const TLS_REQUIRED: Reply = Reply::new(530, [5, 7, 0], "Must issue a STARTTLS command first");
pub const AUTH_FAILED: Reply = Reply::new(535, [5, 7, 8], "Authentication credentials invalid");
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    [5, 3, 4],
    "Message size exceeds fixed maximum message size",
);
pub const RELAY_DENIED: Reply = Reply::new(554, [5, 7, 1], "Relay access denied");
pub const BARE_LINE_ENDING: Reply =
    Reply::new(550, [5, 6, 11], "bare LF/CR not allowed, message rejected");
pub const UTF8_NOT_DECLARED: Reply =
    Reply::new(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8");

/// 501 with the parser's description of what was expected.
pub fn syntax(detail: impl fmt::Display) -> Reply {
    Reply::owned(501, [5, 5, 4], format!("Syntax error: {detail}"))
}

/// The success reply for DATA/BDAT LAST, naming the queue id.
pub fn queued(id: impl fmt::Display) -> Reply {
    Reply::owned(250, [2, 0, 0], format!("Ok: queued as {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut v = Vec::new();
        MESSAGE_TOO_BIG.write_to(&mut v);
        assert_eq!(
            v,
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
    }
}
