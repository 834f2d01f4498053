//! How the project shows a path to a person: the one place that decides;
//! and bytes as lowercase hex (digests, odd box types, BLOB literals).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path for humans: lossy for names that are not UTF-8, control
/// characters escaped so a name cannot forge a line.
pub(crate) fn show_path(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes())
        .escape_debug()
        .to_string()
}

/// `bytes` as lowercase hex, two digits a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}
