//! The decision table, row by row: (what the attempt knows, the chunk's
//! result) → the step.

use super::*;
use crate::apivideo::{Problem, RateInfo};

const BASE: &str = "http://127.0.0.1:9/";

/// A file of several chunks with a videoId: a chunk after the first.
fn mid_file() -> Attempt {
    Attempt {
        id: 7,
        name: "take.mov".into(),
        base: BASE.into(),
        video_id: Some("vi1".into()),
        maybe_stored: false,
        ranged: true,
        in_doubt: InDoubt::Resend,
    }
}

/// The first request of a file: it may create the video.
fn first(ranged: bool, in_doubt: InDoubt) -> Attempt {
    Attempt {
        video_id: None,
        ranged,
        in_doubt,
        ..mid_file()
    }
}

/// The first chunk sent again after a crash: it may be stored already.
fn resumed() -> Attempt {
    Attempt {
        maybe_stored: true,
        ..mid_file()
    }
}

fn reply(video_id: Option<&str>) -> ChunkResult {
    ChunkResult::Stored(Reply {
        status: 201,
        video_id: video_id.map(str::to_owned),
        video: None,
        rate: RateInfo::default(),
    })
}

fn problem(slug: &str) -> Problem {
    Problem {
        kind: Some(format!("https://docs.api.video/reference/{slug}")),
        title: Some(slug.to_owned()),
        ..Problem::default()
    }
}

fn rejected(status: u16, slug: &str) -> ChunkResult {
    ChunkResult::Failed(ApiError::Rejected {
        status,
        problem: problem(slug),
    })
}

fn reset() -> ChunkResult {
    ChunkResult::Failed(ApiError::Ambiguous {
        base: BASE.into(),
        message: "connection reset".into(),
    })
}

fn end(step: Step) -> End {
    match step {
        Step::End(end) => end,
        other => panic!("expected the attempt to end, got {other:?}"),
    }
}

/// `Some(unreachable)` when the attempt ends in a retry, else `None`.
fn unreachable(end: &End) -> Option<bool> {
    match end.then {
        Then::Retry { unreachable, .. } => Some(unreachable),
        _ => None,
    }
}

fn stored_as(step: Step) -> (String, bool, Option<String>) {
    match step {
        Step::Stored {
            video_id,
            reply,
            other_id,
        } => (video_id, reply.is_some(), other_id),
        other => panic!("expected a stored chunk, got {other:?}"),
    }
}

#[test]
fn a_reply_with_the_videoid_stores_the_first_chunk() {
    let step = next(&first(true, InDoubt::Resend), reply(Some("vi9")), true);
    assert_eq!(stored_as(step), ("vi9".into(), true, None));
}

#[test]
fn another_videoid_mid_file_keeps_ours() {
    let step = next(&mid_file(), reply(Some("vi2")), true);
    assert_eq!(stored_as(step), ("vi1".into(), true, Some("vi2".into())));
}

#[test]
fn an_unreadable_2xx_mid_file_is_sent_again() {
    let e = end(next(&mid_file(), reply(None), true));
    assert_eq!(e.error, Some(ErrorClass::Retry));
    assert!(e.doubt.is_none());
    assert!(
        matches!(&e.then, Then::Retry { why, unreachable: false } if why.contains("without a readable videoId")),
        "{e:?}"
    );
}

#[test]
fn an_unreadable_2xx_to_the_first_request_fails_in_doubt() {
    let e = end(next(&first(false, InDoubt::Resend), reply(None), true));
    assert_eq!(e.error, None);
    assert!(
        matches!(&e.then, Then::Failed { why } if why.starts_with("in doubt:") && why.contains("ingestd retry 7") && why.contains("\"take.mov\"")),
        "{e:?}"
    );
}

#[test]
fn token_refused_mid_file_pauses_every_upload() {
    let result = ChunkResult::Failed(ApiError::Token {
        status: 401,
        problem: problem("authentication-failed"),
    });
    let e = end(next(&mid_file(), result, true));
    assert_eq!(e.error, Some(ErrorClass::Token));
    assert!(e.doubt.is_none());
    assert!(
        matches!(&e.then, Then::TokenRefused { why } if why.contains("401")),
        "{e:?}"
    );
}

#[test]
fn a_refused_tls_handshake_pauses_every_upload_without_doubt() {
    let result = ChunkResult::Failed(ApiError::Tls {
        host: "ws.api.video".into(),
        cause: "the server's certificate has expired".into(),
        todo: "renew it".into(),
    });
    let e = end(next(&mid_file(), result, true));
    assert_eq!(e.error, Some(ErrorClass::Tls));
    assert!(e.doubt.is_none());
    assert!(
        matches!(&e.then, Then::TlsRefused { why } if why == "TLS with ws.api.video failed: the server's certificate has expired; renew it"),
        "{e:?}"
    );
}

#[test]
fn a_wrong_base_url_pauses_like_a_refused_token() {
    let result = ChunkResult::Failed(ApiError::Endpoint {
        base: BASE.into(),
        status: 404,
        detail: "Not Found".into(),
    });
    let e = end(next(&mid_file(), result, false));
    assert!(matches!(e.then, Then::TokenRefused { .. }), "{e:?}");
}

#[test]
fn rate_limited_waits_and_sends_the_same_chunk() {
    let limited = || {
        ChunkResult::Failed(ApiError::RateLimited {
            retry_after: Duration::from_secs(3),
        })
    };
    assert_eq!(
        next(&mid_file(), limited(), false),
        Step::RateLimited {
            retry_after: Duration::from_secs(3),
            not_creating: false
        }
    );
    // Refused, so the first request created nothing: not in flight any more.
    assert_eq!(
        next(&first(false, InDoubt::Fail), limited(), true),
        Step::RateLimited {
            retry_after: Duration::from_secs(3),
            not_creating: true
        }
    );
}

#[test]
fn a_reset_after_the_whole_first_request_went_out_is_in_doubt() {
    // Chunked: sent again, counted in doubt (at worst a partial video).
    let e = end(next(&first(true, InDoubt::Fail), reset(), true));
    assert_eq!(e.error, Some(ErrorClass::Retry));
    assert!(
        e.doubt
            .as_deref()
            .is_some_and(|w| w.contains("connection reset")),
        "{e:?}"
    );
    assert_eq!(unreachable(&e), Some(false), "{e:?}");
    // One request, resend: the same, a duplicate is possible.
    let e = end(next(&first(false, InDoubt::Resend), reset(), true));
    assert!(e.doubt.is_some());
    assert!(matches!(e.then, Then::Retry { .. }), "{e:?}");
    // One request, in_doubt = "fail": failed for a person, not counted as
    // an error of the retry class.
    let e = end(next(&first(false, InDoubt::Fail), reset(), true));
    assert_eq!((e.error, e.doubt.as_deref()), (None, None));
    assert!(
        matches!(&e.then, Then::FailedInDoubt { why } if why.contains("connection reset") && why.contains("ingestd retry 7")),
        "{e:?}"
    );
}

#[test]
fn a_reset_before_the_body_went_out_is_not_in_doubt() {
    let e = end(next(&first(false, InDoubt::Fail), reset(), false));
    assert!(e.doubt.is_none());
    assert!(matches!(e.then, Then::Retry { .. }), "{e:?}");
    // Nor mid-file: the videoId is known, nothing new can be created.
    let e = end(next(&mid_file(), reset(), true));
    assert!(e.doubt.is_none());
}

#[test]
fn an_overlap_400_after_an_interruption_means_stored() {
    for slug in [
        "video-content-range-by-bytes-range-overlap",
        "video-source-already-uploaded",
    ] {
        let step = next(&resumed(), rejected(400, slug), true);
        assert_eq!(stored_as(step), ("vi1".into(), false, None), "{slug}");
    }
}

#[test]
fn an_overlap_400_without_an_interruption_fails_the_file() {
    let slug = "video-content-range-by-bytes-range-overlap";
    let e = end(next(&mid_file(), rejected(400, slug), true));
    assert_eq!(e.error, Some(ErrorClass::Permanent));
    assert!(matches!(e.then, Then::Rejected { .. }), "{e:?}");
}

#[test]
fn a_deleted_video_fails_and_a_retry_starts_over() {
    let e = end(next(&mid_file(), rejected(404, "video-not-found"), true));
    assert!(
        matches!(&e.then, Then::RejectedRestart { why } if why.contains("no longer exists") && why.contains("ingestd retry 7")),
        "{e:?}"
    );
    // Without a videoId there is nothing to start over.
    let e = end(next(
        &first(false, InDoubt::Resend),
        rejected(404, "video-not-found"),
        true,
    ));
    assert!(matches!(e.then, Then::Rejected { .. }), "{e:?}");
}

#[test]
fn a_local_read_error_is_retried() {
    let result = ChunkResult::Failed(ApiError::Local("cannot read the file: EIO".into()));
    let e = end(next(&mid_file(), result, false));
    assert_eq!(e.error, Some(ErrorClass::Retry));
    assert!(
        matches!(&e.then, Then::Retry { why, unreachable: false } if why.contains("EIO")),
        "{e:?}"
    );
}

#[test]
fn an_unreachable_server_is_probed_by_one_file() {
    let result = ChunkResult::Failed(ApiError::Connect {
        base: BASE.into(),
        message: "connection refused".into(),
    });
    let e = end(next(&first(false, InDoubt::Fail), result, false));
    assert_eq!(unreachable(&e), Some(true), "{e:?}");
}

#[test]
fn a_server_error_is_retried() {
    let result = ChunkResult::Failed(ApiError::Server {
        status: 503,
        problem: Problem::default(),
    });
    let e = end(next(&mid_file(), result, true));
    assert_eq!(unreachable(&e), Some(false), "{e:?}");
}

#[test]
fn a_stall_is_retried_and_in_doubt_once_the_body_went_out() {
    let why = "no reply within 5 min of the last byte sent";
    let e = end(next(&mid_file(), ChunkResult::Stalled(why), true));
    assert_eq!(
        (e.error, e.doubt.as_deref()),
        (Some(ErrorClass::Retry), None)
    );
    let e = end(next(
        &first(true, InDoubt::Resend),
        ChunkResult::Stalled(why),
        true,
    ));
    assert_eq!(e.doubt.as_deref(), Some(why));
    let e = end(next(
        &first(false, InDoubt::Fail),
        ChunkResult::Stalled(why),
        true,
    ));
    assert_eq!(e.error, Some(ErrorClass::Retry));
    assert!(matches!(e.then, Then::FailedInDoubt { .. }), "{e:?}");
}

#[test]
fn shutdown_gives_the_file_back() {
    let e = end(next(&mid_file(), ChunkResult::Abandoned, false));
    assert_eq!(e, End::new(None, Then::Release));
    // The first request fully sent, its reply abandoned: in doubt.
    let e = end(next(
        &first(true, InDoubt::Resend),
        ChunkResult::Abandoned,
        true,
    ));
    assert_eq!(e.doubt.as_deref(), Some("no reply before shutdown"));
    assert_eq!(e.then, Then::Release);
    let e = end(next(
        &first(false, InDoubt::Fail),
        ChunkResult::Abandoned,
        true,
    ));
    assert!(matches!(e.then, Then::FailedInDoubt { .. }), "{e:?}");
}

#[test]
fn a_file_changed_between_chunks_abandons_its_video() {
    let changed = || Err(Stop::Gone("the file changed".into()));
    assert_eq!(
        between(changed(), false),
        Between::Abandon("the file changed".into())
    );
    // Even when the server holds all of it: it is not this file any more.
    assert_eq!(
        between(changed(), true),
        Between::Abandon("the file changed".into())
    );
}

#[test]
fn a_share_away_between_chunks_records_then_waits() {
    let away = || Err(Stop::Away("the share is away".into()));
    assert_eq!(
        between(away(), false),
        Between::Stop(Stop::Away("the share is away".into()))
    );
    // After the last chunk the server holds the whole file: finish it.
    assert_eq!(between(away(), true), Between::Go);
    assert_eq!(between(Ok(()), false), Between::Go);
}
