//! The content sample: a fast hash (XXH3-128) of a file's size, its first
//! MiB and its last MiB. With the watch root, the relative path, the size
//! and the mtime it is a file's identity; device and inode numbers are only
//! hints, because a remounted or restored share changes them.
//!
//! Reading 2 MiB at most costs little next to an upload, and it tells apart
//! what size and mtime cannot: a camera that reuses a name with a new
//! recording of the same length, or a file patched in place whose mtime was
//! put back.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::Xxh3;

/// How much of the head, and of the tail, goes into the sample.
pub(crate) const SPAN: u64 = 1024 * 1024;

/// A file's content sample (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sample(pub [u8; 16]);

impl fmt::Debug for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sample({self})")
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Sample {
    /// The sample of the open `file`, whose size is `size` (as journaled or
    /// just read with fstat). A file shorter than `size` now is an error
    /// (`UnexpectedEof`): it changed.
    pub fn of_file(file: &File, size: u64) -> io::Result<Sample> {
        let mut hasher = Xxh3::new();
        hasher.update(&size.to_le_bytes());
        let head = size.min(SPAN);
        let mut buf = vec![0u8; usize::try_from(head).unwrap_or(0)];
        file.read_exact_at(&mut buf, 0)?;
        hasher.update(&buf);
        if size > SPAN {
            // The tail never overlaps the head, so a file of 1.5 MiB has its
            // last half MiB as its tail.
            let start = SPAN.max(size - SPAN);
            buf.resize(usize::try_from(size - start).unwrap_or(0), 0);
            file.read_exact_at(&mut buf, start)?;
            hasher.update(&buf);
        }
        Ok(Sample(hasher.digest128().to_le_bytes()))
    }

    /// From the journal's BLOB; `None` when it is not 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Sample> {
        bytes.try_into().ok().map(Sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    #[test]
    fn the_sample_sees_head_tail_and_size_but_not_the_middle() {
        let n = 3 * SPAN as usize;
        let base: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let (_t, f) = file_with(&base);
        let s = Sample::of_file(&f, n as u64).unwrap();
        assert_eq!(s, Sample::of_file(&f, n as u64).unwrap());

        for at in [0, n - 1] {
            let mut changed = base.clone();
            changed[at] ^= 1;
            let (_t, f) = file_with(&changed);
            assert_ne!(s, Sample::of_file(&f, n as u64).unwrap(), "byte {at}");
        }
        // The middle MiB is not sampled (the per-chunk checks and the
        // server's own size check cover what the sample cannot).
        let mut middle = base.clone();
        middle[n / 2] ^= 1;
        let (_t, f) = file_with(&middle);
        assert_eq!(s, Sample::of_file(&f, n as u64).unwrap());
    }

    #[test]
    fn small_files_are_sampled_whole_and_a_shrunk_file_is_an_error() {
        let (_t, f) = file_with(b"hello");
        let a = Sample::of_file(&f, 5).unwrap();
        let (_t, g) = file_with(b"hellp");
        assert_ne!(a, Sample::of_file(&g, 5).unwrap());
        let err = Sample::of_file(&f, 6).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(Sample::from_bytes(&a.0), Some(a));
        assert_eq!(Sample::from_bytes(b"short"), None);
        assert_eq!(a.to_string().len(), 32);
    }
}
