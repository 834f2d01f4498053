//! The api.video upload error catalogue (slug, HTTP status, title) and the
//! problem-JSON body the emulator answers with.
//!
//! Titles are copied verbatim from the api.video documentation's error pages
//! (`reference/*.md` of `apivideo/api.video-documentation`); the `type` of a
//! problem is `https://docs.api.video/reference/<slug>`.
//!
//! It holds data and the response shape only, no request handling. Imports
//! nothing from the product.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Prefix of the `type` URL of every problem.
pub(crate) const TYPE_PREFIX: &str = "https://docs.api.video/reference/";

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The documentation slug; `None` for the generic server error.
    pub(crate) slug: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) title: &'static str,
}

impl ApiError {
    const fn new(slug: &'static str, status: u16, title: &'static str) -> ApiError {
        ApiError {
            slug: Some(slug),
            status,
            title,
        }
    }
}

/// The generic 500 of the catalogue (it has no slug).
pub(crate) const SERVER_ERROR: ApiError = ApiError {
    slug: None,
    status: 500,
    title: "Server error",
};
/// What the emulator answers for an injected 503 fault (same title as the 500).
pub(crate) const SERVICE_UNAVAILABLE: ApiError = ApiError {
    slug: None,
    status: 503,
    title: "Server error",
};

pub(crate) const AUTHENTICATION_MISSING_UPLOAD_TOKEN: ApiError = ApiError::new(
    "authentication-missing-upload-token",
    401,
    "The upload token is missing.",
);
pub(crate) const AUTHENTICATION_INVALID_UPLOAD_TOKEN: ApiError = ApiError::new(
    "authentication-invalid-upload-token",
    401,
    "The upload token is invalid or expired.",
);
pub(crate) const AUTHORIZATION_SUSPENDED_ACCOUNT: ApiError =
    ApiError::new("authorization-suspended-account", 403, "Suspended account");
pub(crate) const RESOURCE_NOT_FOUND: ApiError = ApiError::new(
    "resource-not-found",
    404,
    "The requested resource could not be found.",
);
pub(crate) const UNRECOGNIZED_REQUEST_URL: ApiError =
    ApiError::new("unrecognized-request-url", 404, "Unrecognized request URL.");
pub(crate) const METHOD_NOT_ALLOWED: ApiError = ApiError::new(
    "method-not-allowed",
    405,
    "Method is not allowed for this route.",
);
pub(crate) const TOO_MANY_REQUESTS: ApiError =
    ApiError::new("too-many-requests", 429, "Too many requests.");
pub(crate) const INVALID_ATTRIBUTE: ApiError =
    ApiError::new("invalid-attribute", 400, "Invalid attributes.");
pub(crate) const INVALID_PAYLOAD: ApiError =
    ApiError::new("invalid-payload", 400, "The payload is invalid.");
pub(crate) const UPLOADED_FILE_EMPTY: ApiError =
    ApiError::new("uploaded-file-empty", 400, "The uploaded file is empty.");
pub(crate) const UPLOADED_FILE_INVALID_FILE: ApiError = ApiError::new(
    "uploaded-file-invalid-file",
    400,
    "The uploaded file is invalid.",
);
pub(crate) const UPLOADED_FILE_MULTIPLE_FILES: ApiError = ApiError::new(
    "uploaded-file-multiple-files",
    400,
    "There are more than one uploaded file in the request.",
);
pub(crate) const UPLOADED_FILE_NO_FILE: ApiError = ApiError::new(
    "uploaded-file-no-file",
    400,
    "There is no uploaded file in the request.",
);
pub(crate) const UPLOADED_FILE_TOO_LARGE: ApiError = ApiError::new(
    "uploaded-file-too-large",
    400,
    "The uploaded file is too large.",
);
pub(crate) const VIDEO_SOURCE_ALREADY_COPIED: ApiError = ApiError::new(
    "video-source-already-copied",
    400,
    "This video source has already been copied from an existing video when the video was created.",
);
pub(crate) const VIDEO_SOURCE_ALREADY_DOWNLOADED: ApiError = ApiError::new(
    "video-source-already-downloaded",
    400,
    "This video source has already been downloaded when the video was created.",
);
pub(crate) const VIDEO_SOURCE_ALREADY_UPLOADED: ApiError = ApiError::new(
    "video-source-already-uploaded",
    400,
    "This video source has already been uploaded.",
);
pub(crate) const CR_MALFORMED: ApiError = ApiError::new(
    "video-content-range-malformed",
    400,
    "The value of the \"Content-Range\" header is malformed, the expected format is \"bytes <from_byte>-<to_byte>/<total_bytes>\" or \"part <part>/<total_parts>\".",
);
pub(crate) const CR_STARTED_WITH_PART: ApiError = ApiError::new(
    "video-content-range-started-with-part",
    400,
    "This \"Content-Range\" upload has been started with \"part\", you cannot continue it with \"bytes\".",
);
pub(crate) const CR_STARTED_WITH_BYTES: ApiError = ApiError::new(
    "video-content-range-started-with-bytes",
    400,
    "This \"Content-Range\" upload has been started with \"bytes\", you cannot continue it with \"part\".",
);
pub(crate) const CR_ALREADY_INITIATED: ApiError = ApiError::new(
    "video-content-range-already-initiated",
    400,
    "This video source has already been initiated with a \"Content-Range\" upload.",
);
pub(crate) const CR_BY_BYTES_DIFFERENT_TOTAL_BYTES: ApiError = ApiError::new(
    "video-content-range-by-bytes-different-total-bytes",
    400,
    "The \"total_bytes\" value in the \"Content-Range\" header must be the same than the one you already set for this video.",
);
pub(crate) const CR_BY_BYTES_FROM_BYTE_TOO_HIGH: ApiError = ApiError::new(
    "video-content-range-by-bytes-from-byte-too-high",
    400,
    "The \"from_byte\" value in the \"Content-Range\" header is higher than the \"to_byte\" value.",
);
pub(crate) const CR_BY_BYTES_RANGE_MISMATCH: ApiError = ApiError::new(
    "video-content-range-by-bytes-range-mismatch",
    400,
    "The size of the file you sent is different than the range length you set in the \"Content-Range\" header.",
);
pub(crate) const CR_BY_BYTES_RANGE_OVERLAP: ApiError = ApiError::new(
    "video-content-range-by-bytes-range-overlap",
    400,
    "The range in the \"Content-Range\" header overlaps with a previous one you already sent for this video.",
);
pub(crate) const CR_BY_BYTES_RANGE_TOO_SMALL: ApiError = ApiError::new(
    "video-content-range-by-bytes-range-too-small",
    400,
    "The range in the \"Content-Range\" header is too small.",
);
pub(crate) const CR_BY_BYTES_RANGE_TOO_LARGE: ApiError = ApiError::new(
    "video-content-range-by-bytes-range-too-large",
    400,
    "The range in the \"Content-Range\" header is too large.",
);
pub(crate) const CR_BY_BYTES_TO_BYTE_TOO_HIGH_ALLOWED: ApiError = ApiError::new(
    "video-content-range-by-bytes-to-byte-too-high-allowed",
    400,
    "The \"to_byte\" value in the \"Content-Range\" header is higher than the maximum upper bound allowed for a video.",
);
pub(crate) const CR_BY_BYTES_TO_BYTE_TOO_HIGH_TOTAL: ApiError = ApiError::new(
    "video-content-range-by-bytes-to-byte-too-high-total",
    400,
    "The \"to_byte\" value in the \"Content-Range\" header is higher than the \"total_bytes\" value you set for this video.",
);
pub(crate) const CR_BY_BYTES_TOTAL_BYTES_TOO_HIGH: ApiError = ApiError::new(
    "video-content-range-by-bytes-total-bytes-too-high",
    400,
    "The \"total_bytes\" value in the \"Content-Range\" header is higher than the maximum allowed limit.",
);
pub(crate) const CR_BY_BYTES_TOTAL_BYTES_TOO_LOW: ApiError = ApiError::new(
    "video-content-range-by-bytes-total-bytes-too-low",
    400,
    "The \"total_bytes\" value in the \"Content-Range\" header is lower than or equal to the upper bound of a range you already sent for this video.",
);
pub(crate) const CR_BY_BYTES_TOTAL_BYTES_ZERO: ApiError = ApiError::new(
    "video-content-range-by-bytes-total-bytes-zero",
    400,
    "The \"total_bytes\" value in the \"Content-Range\" header must be greater than 0.",
);
pub(crate) const CR_BY_PART_DIFFERENT_TOTAL_PARTS: ApiError = ApiError::new(
    "video-content-range-by-part-different-total-parts",
    400,
    "The \"total_parts\" value in the \"Content-Range\" header must be the same than the one you already set for this video.",
);
pub(crate) const CR_BY_PART_PART_ALREADY_SENT: ApiError = ApiError::new(
    "video-content-range-by-part-part-already-sent",
    400,
    "The \"part\" value in the \"Content-Range\" header collides with a previous one you already sent for this video.",
);
pub(crate) const CR_BY_PART_PART_TOO_HIGH_ALLOWED: ApiError = ApiError::new(
    "video-content-range-by-part-part-too-high-allowed",
    400,
    "The \"part\" value in the \"Content-Range\" header is higher than the maximum number of parts allowed for a video.",
);
pub(crate) const CR_BY_PART_PART_TOO_HIGH_TOTAL: ApiError = ApiError::new(
    "video-content-range-by-part-part-too-high-total",
    400,
    "The \"part\" value in the \"Content-Range\" header is higher than the \"total_parts\" value you set for this video.",
);
pub(crate) const CR_BY_PART_PART_ZERO: ApiError = ApiError::new(
    "video-content-range-by-part-part-zero",
    400,
    "The \"part\" value in the \"Content-Range\" header must be greater than 0.",
);
pub(crate) const CR_BY_PART_TOTAL_PARTS_TOO_HIGH: ApiError = ApiError::new(
    "video-content-range-by-part-total-parts-too-high",
    400,
    "The \"total_parts\" value in the \"Content-Range\" header is higher than the maximum number of parts allowed for a video.",
);
pub(crate) const CR_BY_PART_TOTAL_PARTS_TOO_LOW: ApiError = ApiError::new(
    "video-content-range-by-part-total-parts-too-low",
    400,
    "The \"total_parts\" value in the \"Content-Range\" header is lower than or equal to a part number you already sent for this video.",
);
pub(crate) const CR_BY_PART_TOTAL_PARTS_ZERO: ApiError = ApiError::new(
    "video-content-range-by-part-total-parts-zero",
    400,
    "The \"total_parts\" value in the \"Content-Range\" header must be greater than 0.",
);
pub(crate) const CR_BY_PART_UPLOADED_FILE_TOO_SMALL: ApiError = ApiError::new(
    "video-content-range-by-part-uploaded-file-too-small",
    400,
    "The uploaded file is too small.",
);

/// Every entry of the catalogue.
pub(crate) const ALL: &[ApiError] = &[
    SERVER_ERROR,
    AUTHENTICATION_MISSING_UPLOAD_TOKEN,
    AUTHENTICATION_INVALID_UPLOAD_TOKEN,
    AUTHORIZATION_SUSPENDED_ACCOUNT,
    RESOURCE_NOT_FOUND,
    UNRECOGNIZED_REQUEST_URL,
    METHOD_NOT_ALLOWED,
    TOO_MANY_REQUESTS,
    INVALID_ATTRIBUTE,
    INVALID_PAYLOAD,
    UPLOADED_FILE_EMPTY,
    UPLOADED_FILE_INVALID_FILE,
    UPLOADED_FILE_MULTIPLE_FILES,
    UPLOADED_FILE_NO_FILE,
    UPLOADED_FILE_TOO_LARGE,
    VIDEO_SOURCE_ALREADY_COPIED,
    VIDEO_SOURCE_ALREADY_DOWNLOADED,
    VIDEO_SOURCE_ALREADY_UPLOADED,
    CR_MALFORMED,
    CR_STARTED_WITH_PART,
    CR_STARTED_WITH_BYTES,
    CR_ALREADY_INITIATED,
    CR_BY_BYTES_DIFFERENT_TOTAL_BYTES,
    CR_BY_BYTES_FROM_BYTE_TOO_HIGH,
    CR_BY_BYTES_RANGE_MISMATCH,
    CR_BY_BYTES_RANGE_OVERLAP,
    CR_BY_BYTES_RANGE_TOO_SMALL,
    CR_BY_BYTES_RANGE_TOO_LARGE,
    CR_BY_BYTES_TO_BYTE_TOO_HIGH_ALLOWED,
    CR_BY_BYTES_TO_BYTE_TOO_HIGH_TOTAL,
    CR_BY_BYTES_TOTAL_BYTES_TOO_HIGH,
    CR_BY_BYTES_TOTAL_BYTES_TOO_LOW,
    CR_BY_BYTES_TOTAL_BYTES_ZERO,
    CR_BY_PART_DIFFERENT_TOTAL_PARTS,
    CR_BY_PART_PART_ALREADY_SENT,
    CR_BY_PART_PART_TOO_HIGH_ALLOWED,
    CR_BY_PART_PART_TOO_HIGH_TOTAL,
    CR_BY_PART_PART_ZERO,
    CR_BY_PART_TOTAL_PARTS_TOO_HIGH,
    CR_BY_PART_TOTAL_PARTS_TOO_LOW,
    CR_BY_PART_TOTAL_PARTS_ZERO,
    CR_BY_PART_UPLOADED_FILE_TOO_SMALL,
];

/// A problem-JSON reply: `{type, title, status, name?, detail?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) error: ApiError,
    pub(crate) name: Option<String>,
    pub(crate) detail: Option<String>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

impl Problem {
    pub(crate) fn new(error: ApiError) -> Problem {
        Problem {
            error,
            name: None,
            detail: None,
        }
    }

    pub(crate) fn name(mut self, name: &str) -> Problem {
        self.name = Some(name.to_owned());
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        let body = ProblemBody {
            kind: match self.error.slug {
                Some(slug) => format!("{TYPE_PREFIX}{slug}"),
                None => "about:blank".to_owned(),
            },
            title: self.error.title,
            status: self.error.status,
            name: self.name.as_deref(),
            detail: self.detail.as_deref(),
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Problem {
        Problem::new(error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_statuses_sane() {
        let mut seen = std::collections::HashSet::new();
        for e in ALL {
            assert!(seen.insert(e.slug), "duplicate {:?}", e.slug);
            assert!((400..600).contains(&e.status));
            assert!(!e.title.is_empty());
        }
        assert_eq!(ALL.len(), 42);
    }

    #[test]
    fn body_shape() {
        let p = Problem::new(RESOURCE_NOT_FOUND).name("videoId");
        assert_eq!(
            p.body(),
            serde_json::json!({
                "type": "https://docs.api.video/reference/resource-not-found",
                "title": "The requested resource could not be found.",
                "status": 404,
                "name": "videoId",
            })
        );
    }
}
