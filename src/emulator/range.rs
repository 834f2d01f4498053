//! `Content-Range` of an upload request: `bytes FROM-TO/TOTAL` (TO inclusive)
//! or `part N/TOTAL`, TOTAL being a number or `*`. The accepted language is
//! exactly the regex `^(?:bytes (\d+)-(\d+)|part (\d+))/(\d+|\*)$`.
//!
//! Parsing only: the limits and the per-video rules are the store's. Imports
//! nothing from the product.

/// A parsed `Content-Range`. Numbers too large for `u64` saturate to
/// `u64::MAX` (the regex accepts them; the limit checks then reject them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRange {
    Bytes {
        from: u64,
        to: u64,
        total: Option<u64>,
    },
    Part {
        part: u64,
        total: Option<u64>,
    },
}

/// Parses a header value; `None` when it does not match the grammar.
pub(crate) fn parse(value: &str) -> Option<ContentRange> {
    if let Some(rest) = value.strip_prefix("bytes ") {
        let (range, total) = rest.split_once('/')?;
        let (from, to) = range.split_once('-')?;
        Some(ContentRange::Bytes {
            from: number(from)?,
            to: number(to)?,
            total: total_of(total)?,
        })
    } else if let Some(rest) = value.strip_prefix("part ") {
        let (part, total) = rest.split_once('/')?;
        Some(ContentRange::Part {
            part: number(part)?,
            total: total_of(total)?,
        })
    } else {
        None
    }
}

/// `\d+`, saturating.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// `\d+|\*`: `Some(None)` for `*`.
fn total_of(s: &str) -> Option<Option<u64>> {
    if s == "*" {
        Some(None)
    } else {
        number(s).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        assert_eq!(
            parse("bytes 0-5242879/12582912"),
            Some(ContentRange::Bytes {
                from: 0,
                to: 5242879,
                total: Some(12582912)
            })
        );
        assert_eq!(
            parse("bytes 10-20/*"),
            Some(ContentRange::Bytes {
                from: 10,
                to: 20,
                total: None
            })
        );
        assert_eq!(
            parse("part 3/*"),
            Some(ContentRange::Part {
                part: 3,
                total: None
            })
        );
        assert_eq!(
            parse("part 0/0"),
            Some(ContentRange::Part {
                part: 0,
                total: Some(0)
            })
        );
        assert_eq!(
            parse("part 1/99999999999999999999999"),
            Some(ContentRange::Part {
                part: 1,
                total: Some(u64::MAX)
            })
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "bytes",
            "bytes 0-1",
            "bytes 0-1/",
            "bytes -1/2",
            "bytes 0-/2",
            "bytes 0 - 1/2",
            "bytes 0-1/2 ",
            " bytes 0-1/2",
            "bytes=0-1/2",
            "Bytes 0-1/2",
            "bytes 0-1/**",
            "bytes +0-1/2",
            "bytes 0-1-2/3",
            "part /3",
            "part 1/",
            "part 1",
            "part -1/3",
            "part 1/2/3",
            "part 1-2/3",
            "parts 1/2",
            "part 1/x",
            "part ١/2",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
