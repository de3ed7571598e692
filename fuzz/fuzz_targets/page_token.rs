//! Fuzzes the page-token decoders of `runwarden::domain::page_token` (`ExecutionCursor`,
//! `WorkerCursor`, `AnomalyCursor`), which read the `page_token` every List RPC takes from the
//! client.
//!
//! Input: the first byte picks how the rest becomes a token. Even: the rest, as UTF-8, is the
//! token itself (hostile text). Odd: the rest is base64url-encoded first, so the fuzzer mutates
//! the text inside a well-formed token (`e1:<started_at_us>:<id>`, `w1:<name>`, `a1:<id>`).
//!
//! Must hold: decoding never panics; at most one kind accepts a token; a decoded cursor encodes
//! to a token that decodes to the same cursor.

#![no_main]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use runwarden::domain::page_token::{AnomalyCursor, ExecutionCursor, WorkerCursor};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        URL_SAFE_NO_PAD.encode(rest)
    };

    let execution = ExecutionCursor::decode(&token);
    let worker = WorkerCursor::decode(&token);
    let anomaly = AnomalyCursor::decode(&token);
    let accepted = [execution.is_ok(), worker.is_ok(), anomaly.is_ok()].iter().filter(|ok| **ok).count();
    assert!(accepted <= 1, "one token decodes as {accepted} kinds of cursor: {token:?}");

    if let Ok(cursor) = execution {
        assert_eq!(ExecutionCursor::decode(&cursor.encode()), Ok(cursor), "execution cursor round trip");
    }
    if let Ok(cursor) = worker {
        assert_eq!(WorkerCursor::decode(&cursor.encode()), Ok(cursor.clone()), "worker cursor round trip");
    }
    if let Ok(cursor) = anomaly {
        assert_eq!(AnomalyCursor::decode(&cursor.encode()), Ok(cursor), "anomaly cursor round trip");
    }
});
