//! The chunk plan: which byte ranges a file is sent in. Pure arithmetic;
//! no I/O, no journal.

use crate::apivideo::ByteRange;
use crate::config::MIN_CHUNK_SIZE;

/// The largest file sent in one request, whatever `api.chunk_size`: its
/// request creates and completes the video at once, so a lost reply to it
/// can mean a duplicate (see `upload.in_doubt`).
pub const ONE_REQUEST_MAX: u64 = MIN_CHUNK_SIZE;

/// The chunks of a file of `size` bytes: every chunk `chunk_size` long but
/// the last, which holds the rest (never empty). A file larger than
/// [`MIN_CHUNK_SIZE`] but no larger than one chunk goes in two requests, the
/// first exactly `MIN_CHUNK_SIZE` long: a first request that cannot complete
/// the video makes a lost reply harmless (at worst a partial video is left
/// behind), where one request holding the whole file could, sent again after
/// its reply was lost, make a duplicate.
pub fn chunk_plan(size: u64, chunk_size: u64) -> impl Iterator<Item = ByteRange> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        (offset < size).then(|| {
            let range = chunk_at(offset, size, chunk_size);
            offset += range.len;
            range
        })
    })
}

/// The chunk that starts at `offset` (see [`chunk_plan`]).
pub fn chunk_at(offset: u64, size: u64, chunk_size: u64) -> ByteRange {
    let chunk_size = chunk_size.max(1);
    let len = if offset == 0 && size > MIN_CHUNK_SIZE && size <= chunk_size {
        MIN_CHUNK_SIZE
    } else {
        chunk_size.min(size - offset)
    };
    ByteRange {
        offset,
        len,
        total: size,
    }
}

/// Whether a file goes in more than one request (with `Content-Range`).
pub fn is_chunked(size: u64, chunk_size: u64) -> bool {
    size > chunk_size.min(MIN_CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn plan(size: u64, chunk: u64) -> Vec<String> {
        chunk_plan(size, chunk).map(|r| r.content_range()).collect()
    }

    #[test]
    fn plan_with_exact_multiple_has_no_empty_chunk() {
        assert_eq!(
            plan(10 * MIB, 5 * MIB),
            vec![
                "bytes 0-5242879/10485760",
                "bytes 5242880-10485759/10485760"
            ]
        );
    }

    #[test]
    fn plan_last_chunk_of_one_byte() {
        let p: Vec<ByteRange> = chunk_plan(5 * MIB + 1, 5 * MIB).collect();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].content_range(), "bytes 5242880-5242880/5242881");
        assert_eq!(p[1].len, 1);
    }

    #[test]
    fn plan_file_of_exactly_one_chunk_goes_in_two_requests() {
        // The first request never completes the video, so a lost reply
        // cannot turn into a duplicate.
        let p: Vec<ByteRange> = chunk_plan(8 * MIB, 8 * MIB).collect();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].len, p[1].len), (5 * MIB, 3 * MIB));
        assert!(p[1].is_last());
        assert!(is_chunked(8 * MIB, 8 * MIB));
    }

    #[test]
    fn plan_small_files_go_in_one_request() {
        for size in [1, 5 * MIB - 1, 5 * MIB] {
            let p: Vec<ByteRange> = chunk_plan(size, 8 * MIB).collect();
            assert_eq!(p.len(), 1, "{size}");
            assert!(!is_chunked(size, 8 * MIB), "{size}");
        }
        let p: Vec<ByteRange> = chunk_plan(5 * MIB + 1, 8 * MIB).collect();
        assert_eq!((p[0].len, p[1].len), (5 * MIB, 1));
    }

    #[test]
    fn plan_covers_every_byte_once() {
        for (size, chunk) in [
            (1, 5),
            (99, 10),
            (100, 10),
            (101, 10),
            (40 * MIB, 8 * MIB),
            (6 * MIB, 8 * MIB),
            (8 * MIB, 8 * MIB),
        ] {
            let p: Vec<ByteRange> = chunk_plan(size, chunk).collect();
            let mut next = 0;
            for r in &p {
                assert_eq!(r.offset, next);
                assert!(r.len > 0 && r.len <= chunk.max(5 * MIB));
                next += r.len;
            }
            assert_eq!(next, size);
            assert_eq!(
                chunk_at(p.last().unwrap().offset, size, chunk),
                *p.last().unwrap()
            );
        }
        assert_eq!(chunk_plan(0, 10).count(), 0);
    }
}
