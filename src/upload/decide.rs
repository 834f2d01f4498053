//! The decision table of an attempt: what one chunk's result does to the
//! file. Pure: no I/O, no journal, no clock, no logging; `attempt` carries the
//! decision out. Each (state, result) pair is a unit test below.

use std::time::Duration;

use super::send::ChunkResult;
use super::source::Stop;
use crate::apivideo::{ApiError, ErrorClass, Reply};
use crate::config::InDoubt;

/// What the send loop knows of the file when a chunk's result comes back.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub id: i64,
    /// The multipart filename, named when a reply puts the file in doubt.
    pub name: String,
    /// The server's base URL, named in an error about its reply.
    pub base: String,
    /// The file's videoId so far; `None`: this request may create it.
    pub video_id: Option<String>,
    /// The chunk at this offset may already be stored (the process died
    /// right after sending it), so an overlap reply means "stored".
    pub maybe_stored: bool,
    /// The file goes in several requests, with `Content-Range`.
    pub ranged: bool,
    /// `upload.in_doubt`.
    pub in_doubt: InDoubt,
}

/// What to do next.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// The chunk is stored as part of `video_id`: record it and go on.
    Stored {
        video_id: String,
        /// `None`: an overlap reply said the server already had the chunk.
        reply: Option<Reply>,
        /// The server answered with another videoId; ours is kept.
        other_id: Option<String>,
    },
    /// 429: wait for a turn, then send the same chunk again.
    RateLimited {
        retry_after: Duration,
        /// The refused request was to create the video: nothing is in flight.
        not_creating: bool,
    },
    /// The attempt ends.
    End(End),
}

/// How an attempt ends.
#[derive(Debug, PartialEq)]
pub(crate) struct End {
    /// The failed request's class, counted in `/metrics`.
    pub error: Option<ErrorClass>,
    /// A request that may have created the video ended without a known
    /// outcome (why): count it as sent in doubt before `then`.
    pub doubt: Option<String>,
    pub then: Then,
}

/// The file's next state.
#[derive(Debug, PartialEq)]
pub(crate) enum Then {
    /// `retrying` after the persisted backoff; `unreachable`: nothing got
    /// through to the server (one probe stands for all such files).
    Retry { why: String, unreachable: bool },
    /// The token (or the base URL) was refused: close the gate for every
    /// worker, give the file back to the queue.
    TokenRefused { why: String },
    /// The TLS handshake was refused: close the gate for every worker
    /// until a probe gets through, give the file back to the queue.
    TlsRefused { why: String },
    /// `failed`: the server refused the file.
    Rejected { why: String },
    /// `failed`, and a retry starts over: the partly uploaded video is gone.
    RejectedRestart { why: String },
    /// `failed`, for a person to check what the server holds.
    Failed { why: String },
    /// `failed` as in doubt (`upload.in_doubt = "fail"`).
    FailedInDoubt { why: String },
    /// Shutting down: back to the queue, progress kept.
    Release,
}

/// What a check of the file after a stored chunk means.
#[derive(Debug, PartialEq)]
pub(crate) enum Between {
    /// Go on (or finish).
    Go,
    /// What the server holds is no longer this file: abandon its video.
    Abandon(String),
    /// Record the stored chunk, then stop as the check says.
    Stop(Stop),
}

impl End {
    fn new(error: Option<ErrorClass>, then: Then) -> End {
        End {
            error,
            doubt: None,
            then,
        }
    }
}

/// The decision table: `body_out` says whether the whole body was handed to
/// the connection (before that, the server cannot have stored the request).
pub(crate) fn next(a: &Attempt, result: ChunkResult, body_out: bool) -> Step {
    // A request that would create the video, fully sent, without a known
    // outcome: the server may hold it.
    let doubtful = body_out && a.video_id.is_none();
    match result {
        ChunkResult::Stored(reply) => stored(a, Some(reply)),
        ChunkResult::Failed(e)
            if a.maybe_stored && (e.is_already_stored() || e.is_already_complete()) =>
        {
            stored(a, None)
        }
        ChunkResult::Failed(ApiError::RateLimited { retry_after }) => Step::RateLimited {
            retry_after,
            not_creating: a.video_id.is_none(),
        },
        ChunkResult::Failed(e) => {
            let doubt = (e.is_ambiguous() && doubtful).then(|| e.to_string());
            if let Some(why) = &doubt {
                if let Some(then) = fail_in_doubt(a, why) {
                    return Step::End(End::new(None, then));
                }
            }
            let mut end = classify(a, e);
            end.doubt = doubt;
            Step::End(end)
        }
        ChunkResult::Stalled(why) => {
            let class = Some(ErrorClass::Retry);
            if doubtful {
                if let Some(then) = fail_in_doubt(a, why) {
                    return Step::End(End::new(class, then));
                }
            }
            let then = Then::Retry {
                why: why.to_owned(),
                unreachable: false,
            };
            Step::End(End {
                error: class,
                doubt: doubtful.then(|| why.to_owned()),
                then,
            })
        }
        ChunkResult::Abandoned => {
            let why = "no reply before shutdown";
            if doubtful {
                if let Some(then) = fail_in_doubt(a, why) {
                    return Step::End(End::new(None, then));
                }
            }
            Step::End(End {
                error: None,
                doubt: doubtful.then(|| why.to_owned()),
                then: Then::Release,
            })
        }
    }
}

/// A chunk the server holds (or says it holds): whose videoId it is.
fn stored(a: &Attempt, reply: Option<Reply>) -> Step {
    let got = reply.as_ref().and_then(|r| r.video_id.clone());
    let replied = reply.is_some();
    match (a.video_id.clone(), got) {
        (Some(known), Some(got)) if known != got => Step::Stored {
            video_id: known,
            reply,
            other_id: Some(got),
        },
        (Some(known), Some(_)) => Step::Stored {
            video_id: known,
            reply,
            other_id: None,
        },
        (Some(known), None) if !replied => Step::Stored {
            video_id: known,
            reply,
            other_id: None,
        },
        (Some(_), None) => {
            // A 2xx we cannot read (a proxy page?): not proof that the chunk
            // was stored. Send it again; if it was, the overlap reply says so.
            let e = ApiError::Ambiguous {
                base: a.base.clone(),
                message: "a 2xx reply without a readable videoId".to_owned(),
            };
            Step::End(classify(a, e))
        }
        (None, Some(got)) => Step::Stored {
            video_id: got,
            reply,
            other_id: None,
        },
        (None, None) => {
            // Accepted, maybe, by something that is not api.video answering
            // properly. Sending again could duplicate the file or leave
            // partial videos behind, without end.
            let (name, id) = (&a.name, a.id);
            let why = format!(
                "in doubt: the server answered 2xx without a readable videoId; it may or may not hold this file. \
                 Check api.base_url and any proxy; check api.video for a video named {name:?}, then `ingestd retry {id}` if it is not there"
            );
            Step::End(End::new(None, Then::Failed { why }))
        }
    }
}

/// A failed request: what its class does to the file.
fn classify(a: &Attempt, e: ApiError) -> End {
    let class = e.class();
    let then = match class {
        ErrorClass::Retry => Then::Retry {
            unreachable: matches!(e, ApiError::Connect { .. }),
            why: e.to_string(),
        },
        ErrorClass::Token => Then::TokenRefused { why: e.to_string() },
        ErrorClass::Tls => Then::TlsRefused { why: e.to_string() },
        ErrorClass::Permanent if e.is_unknown_video() && a.video_id.is_some() => {
            Then::RejectedRestart {
                why: format!(
                    "{e}: the partly uploaded video no longer exists on the server (deleted, or \
                     expired in the sandbox); `ingestd retry {}` starts the upload over",
                    a.id
                ),
            }
        }
        ErrorClass::Permanent => Then::Rejected { why: e.to_string() },
    };
    End::new(Some(class), then)
}

/// A file sent in one request whose request ended in doubt, with
/// `upload.in_doubt = "fail"`: failed for a person to check. Otherwise
/// `None`: it is sent again (counted as in doubt).
fn fail_in_doubt(a: &Attempt, why: &str) -> Option<Then> {
    (!a.ranged && a.in_doubt == InDoubt::Fail).then(|| Then::FailedInDoubt {
        why: failed_in_doubt(
            &format!(
                "the request that uploads this file in one piece ended without a reply ({why})"
            ),
            a.id,
        ),
    })
}

/// The reason a file of one request is failed as in doubt, whatever the
/// `cause`: the one sentence for a reply lost now and for a process that
/// died while the request was on its way.
pub(crate) fn failed_in_doubt(cause: &str, id: i64) -> String {
    format!(
        "in doubt: {cause}, so api.video may already hold it (upload.in_doubt = \"fail\"). Check \
         api.video for a video with this file's name; if it is not there, `ingestd retry {id}`"
    )
}

/// Why a file of one request, on its way when ingestd stopped, is failed.
pub(crate) fn interrupted_in_doubt(id: i64) -> String {
    failed_in_doubt(
        "ingestd stopped while the request that uploads this file in one piece was on its way",
        id,
    )
}

/// After a stored chunk the file is checked again; `last`: that chunk
/// completed the file (the server holds all of it: finish whatever the
/// check says, unless the file became another one).
pub(crate) fn between(check: Result<(), Stop>, last: bool) -> Between {
    match check {
        Ok(()) => Between::Go,
        Err(Stop::Gone(why)) => Between::Abandon(why),
        Err(_) if last => Between::Go,
        Err(stop) => Between::Stop(stop),
    }
}

#[cfg(test)]
mod tests;
