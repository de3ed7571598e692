//! Opaque page tokens for keyset pagination. A token names the last row of the previous page, so
//! a walk visits every row exactly once even while new rows arrive. Tokens are base64url text; a
//! token that was not produced here decodes to a clear error, never to a wrong page.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Where the next page of executions starts: strictly after (older than) this row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionCursor {
    pub started_at_us: i64,
    pub id: i64,
}

/// Where the next page of workers starts: strictly after this name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCursor {
    pub worker_name: String,
}

const EXECUTIONS: &str = "e1";
const ANOMALIES: &str = "a1";
const WORKERS: &str = "w1";
/// Longer tokens are never produced here, so they are rejected before decoding.
const MAX_TOKEN_LEN: usize = 512;

pub const INVALID: &str = "is not a page token issued by this server (start again without page_token)";

impl ExecutionCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{EXECUTIONS}:{}:{}", self.started_at_us, self.id))
    }

    /// Decodes a token; `Err` carries the description for the `page_token` field violation.
    pub fn decode(token: &str) -> Result<Self, &'static str> {
        let text = decode_text(token)?;
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(EXECUTIONS), Some(ts), Some(id)) => {
                let started_at_us = ts.parse().map_err(|_| INVALID)?;
                let id = id.parse().map_err(|_| INVALID)?;
                Ok(ExecutionCursor { started_at_us, id })
            }
            _ => Err(INVALID),
        }
    }
}

impl WorkerCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{WORKERS}:{}", self.worker_name))
    }

    pub fn decode(token: &str) -> Result<Self, &'static str> {
        let text = decode_text(token)?;
        match text.split_once(':') {
            Some((WORKERS, name)) => Ok(WorkerCursor { worker_name: name.to_owned() }),
            _ => Err(INVALID),
        }
    }
}

/// Where the next page of anomalies starts: strictly before this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnomalyCursor {
    pub id: i64,
}

impl AnomalyCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{ANOMALIES}:{}", self.id))
    }

    pub fn decode(token: &str) -> Result<Self, &'static str> {
        match decode_text(token)?.split_once(':') {
            Some((ANOMALIES, id)) => Ok(AnomalyCursor { id: id.parse().map_err(|_| INVALID)? }),
            _ => Err(INVALID),
        }
    }
}

fn decode_text(token: &str) -> Result<String, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(INVALID);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| INVALID)?;
    String::from_utf8(bytes).map_err(|_| INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn execution_cursor_round_trips(started_at_us in any::<i64>(), id in any::<i64>()) {
            let cursor = ExecutionCursor { started_at_us, id };
            prop_assert_eq!(ExecutionCursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn worker_cursor_round_trips(name in "[A-Za-z0-9_.:-]{1,128}") {
            let cursor = WorkerCursor { worker_name: name };
            prop_assert_eq!(WorkerCursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn anomaly_cursor_round_trips(id in any::<i64>()) {
            prop_assert_eq!(AnomalyCursor::decode(&AnomalyCursor { id }.encode()), Ok(AnomalyCursor { id }));
        }

        #[test]
        fn arbitrary_text_never_panics(token in ".{0,600}") {
            let _ = AnomalyCursor::decode(&token);
            let _ = ExecutionCursor::decode(&token);
            let _ = WorkerCursor::decode(&token);
        }

        #[test]
        fn arbitrary_encoded_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let token = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = ExecutionCursor::decode(&token);
            let _ = WorkerCursor::decode(&token);
        }
    }

    #[test]
    fn kinds_do_not_mix() {
        let worker = WorkerCursor { worker_name: "a".into() }.encode();
        assert_eq!(ExecutionCursor::decode(&worker), Err(INVALID));
        let exec = ExecutionCursor { started_at_us: 1, id: 2 }.encode();
        assert_eq!(WorkerCursor::decode(&exec), Err(INVALID));
        assert_eq!(ExecutionCursor::decode("!!!"), Err(INVALID));
    }
}
