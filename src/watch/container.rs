//! Whether a media file that has stopped changing is a finished container,
//! judged from its structure rather than from time alone: a recorder that
//! pauses for longer than the settle time leaves a file that looks settled
//! but has no index yet.
//!
//! - MP4 / MOV / M4V / 3GP (ISO base media and QuickTime, recognised by
//!   their first box, not by name): the top-level boxes must tile the file
//!   exactly, a `moov` and an `mdat` must be present, and in a fragmented
//!   file the last `moof` must be followed by its `mdat`.
//! - MXF (a header partition pack at byte 0, or after a run-in of less than
//!   64 KiB): a random index pack must end the file, and the header
//!   partition must be closed or a footer partition must exist.
//! - Anything else is [`Verdict::Unknown`]: the settle clocks alone decide.
//!
//! Only box and partition headers are read, with positioned reads, so the
//! cost is a handful of small reads (at most [`MAX_BOXES`] for MP4, 64 KiB
//! of head for MXF) whatever the file. Pure of any other state: the caller
//! opens the file and acts on the verdict.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A container that is complete.
    Finished,
    /// Not a container this module knows (settle only decides).
    Unknown,
    /// Unfinished; the text is the reason shown to users, e.g.
    /// "mdat has size 0 and there is no moov: the recorder has not finished it".
    Incomplete(String),
}

/// The most top-level MP4 boxes walked before giving up (a day of one
/// second fragments is under 200,000).
pub(crate) const MAX_BOXES: u32 = 1_000_000;

/// The longest MXF run-in (SMPTE 377: less than 64 KiB before the header
/// partition pack).
const RUN_IN_MAX: usize = 65_536;

/// Judges the file open as `file`. `size` is the file's size as seen by the
/// caller (from the same descriptor); nothing at or past it is read, and a
/// file that turns out shorter (it shrank) is [`Verdict::Incomplete`].
/// Errors are the reads' own, other than a short read.
pub(crate) fn check(file: &File, size: u64) -> io::Result<Verdict> {
    match sniff(file, size) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Verdict::Incomplete(format!(
            "the file is shorter than the {size} bytes it had a moment ago: \
             it is being truncated or rewritten"
        ))),
        other => other,
    }
}

fn sniff(file: &File, size: u64) -> io::Result<Verdict> {
    if let Some(last) = size.checked_sub(1) {
        // The file really is `size` bytes long (it did not shrink since).
        read(file, last, &mut [0u8; 1])?;
    }
    let mut head = [0u8; 16];
    let head = &mut head[..span(size, 0, 16)];
    read(file, 0, head)?;
    if is_iso_bmff(head) {
        return mp4_walk(file, size);
    }
    let mut search = vec![0u8; span(size, 0, RUN_IN_MAX + 16)];
    read(file, 0, &mut search)?;
    let Some(run_in) = find_partition(&search) else {
        return Ok(Verdict::Unknown);
    };
    let verdict = mxf_check(file, size, run_in)?;
    Ok(match verdict {
        // Bytes before the pack may be a run-in, or another format that
        // holds an MXF file (an archive): only a proof of a finished file
        // counts there.
        Verdict::Incomplete(_) if run_in > 0 => Verdict::Unknown,
        v => v,
    })
}

/// Reads exactly `buf.len()` bytes at `offset` (a short read is an error of
/// kind `UnexpectedEof`).
fn read(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// How many of `want` bytes from `offset` lie before `size`.
fn span(size: u64, offset: u64, want: usize) -> usize {
    let left = size.saturating_sub(offset);
    usize::try_from(left).map_or(want, |left| left.min(want))
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_be_bytes(a)
}

fn incomplete(reason: String) -> io::Result<Verdict> {
    Ok(Verdict::Incomplete(reason))
}

// ---- MP4 / QuickTime ----

/// First-box types of QuickTime files that have no `ftyp`.
const QUICKTIME_FIRST: [&[u8; 4]; 6] = [b"moov", b"wide", b"free", b"skip", b"mdat", b"pnot"];

/// A box type as text: its four characters, or hex when they are not
/// printable.
fn fourcc(kind: &[u8]) -> String {
    if kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(kind).into_owned()
    } else {
        format!("0x{}", crate::display::hex(kind))
    }
}

/// Whether the file starts with a box: `ftyp`, or a QuickTime first box
/// with a size a box can have.
fn is_iso_bmff(head: &[u8]) -> bool {
    let (Some(small), Some(kind)) = (head.get(0..4), head.get(4..8)) else {
        return false;
    };
    if kind == b"ftyp" {
        return true;
    }
    if !QUICKTIME_FIRST.iter().any(|k| k.as_slice() == kind) {
        return false;
    }
    match be_u32(small) {
        0 => kind == b"mdat",
        1 => head.get(8..16).is_some_and(|large| be_u64(large) >= 16),
        n => n >= 8,
    }
}

/// Walks the top-level boxes from byte 0 to `size`, reading only headers.
fn mp4_walk(file: &File, size: u64) -> io::Result<Verdict> {
    let mut offset = 0u64;
    let mut boxes = 0u32;
    let mut moov = false;
    let mut mdat = false;
    // The last `moof` not yet followed by an `mdat`.
    let mut open_moof: Option<u64> = None;
    while offset < size {
        if boxes >= MAX_BOXES {
            return incomplete(format!(
                "the file has more than {MAX_BOXES} top-level boxes: \
                 it is corrupt or not a recording"
            ));
        }
        boxes = boxes.saturating_add(1);
        let left = size.saturating_sub(offset);
        let mut header = [0u8; 16];
        let header = &mut header[..span(size, offset, 16)];
        read(file, offset, header)?;
        let (Some(small), Some(kind)) = (header.get(0..4), header.get(4..8)) else {
            return incomplete(format!(
                "the file ends at byte {size}, {left} bytes after the box that ends \
                 at byte {offset}: too few for a box header, it is truncated or \
                 still being written"
            ));
        };
        let name = fourcc(kind);
        let small = be_u32(small);
        let (length, header_len) = match small {
            0 => (left, 8),
            1 => match header.get(8..16) {
                Some(large) => (be_u64(large), 16),
                None => {
                    return incomplete(format!(
                        "the {name} box at byte {offset} has a 64-bit size but the \
                         file ends at byte {size} inside its header: it is truncated \
                         or still being written"
                    ))
                }
            },
            n => (u64::from(n), 8),
        };
        if length < header_len {
            return incomplete(format!(
                "corrupt box at byte {offset}: the {name} box claims {length} bytes, \
                 less than its {header_len}-byte header"
            ));
        }
        let end = match offset.checked_add(length) {
            Some(end) if end <= size => end,
            _ => {
                return incomplete(format!(
                    "the {name} box at byte {offset} claims {length} bytes but the file \
                     ends at byte {size}: it is truncated or still being written"
                ))
            }
        };
        match kind {
            b"moov" => moov = true,
            b"moof" => open_moof = Some(offset),
            b"mdat" => {
                if small == 0 && !moov {
                    return incomplete(
                        "mdat has size 0 and there is no moov: the recorder has not \
                         finished it"
                            .to_owned(),
                    );
                }
                mdat = true;
                open_moof = None;
            }
            _ => {}
        }
        offset = end;
    }
    if !moov {
        return incomplete(if mdat {
            "there is an mdat but no moov box: the recorder has not finished it".to_owned()
        } else {
            "there is no moov box: the recorder has not finished it".to_owned()
        });
    }
    if !mdat {
        // A fragmented recording's header before its first fragment (or a
        // reference movie, whose media is in other files).
        return incomplete(
            "there is a moov but no mdat box: no media has been written yet, the \
             recorder has not finished it"
                .to_owned(),
        );
    }
    if let Some(at) = open_moof {
        return incomplete(format!(
            "the last fragment's moof at byte {at} has no mdat after it: \
             the recorder has not finished it"
        ));
    }
    Ok(Verdict::Finished)
}

// ---- MXF ----

/// The first 13 bytes of every partition pack key; byte 13 is the kind,
/// byte 14 the status.
const PARTITION_PREFIX: [u8; 13] = [
    0x06, 0x0e, 0x2b, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0d, 0x01, 0x02, 0x01, 0x01,
];
/// The bytes SMPTE 377 has a reader look for in a run-in.
const SEARCH_LEN: usize = 11;
const KIND_HEADER: u8 = 0x02;
const KIND_FOOTER: u8 = 0x04;
const RIP_KEY: [u8; 16] = [
    0x06, 0x0e, 0x2b, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0d, 0x01, 0x02, 0x01, 0x01, 0x11, 0x01, 0x00,
];
/// Bytes of a partition pack's fixed fields (SMPTE 377 7.1).
const PACK_MIN: u64 = 88;
/// Key + shortest length + overall length: the smallest random index pack.
const RIP_MIN: u64 = 21;

/// Whether `got` starts with `want`, byte 7 (the registry version) aside.
fn key_matches(got: &[u8], want: &[u8]) -> bool {
    got.len() >= want.len()
        && got
            .iter()
            .zip(want)
            .enumerate()
            .all(|(i, (g, w))| i == 7 || g == w)
}

/// Where the first partition pack key starts in the head, if anywhere in
/// the run-in range.
fn find_partition(head: &[u8]) -> Option<u64> {
    let prefix = PARTITION_PREFIX.get(..SEARCH_LEN)?;
    (0..=RUN_IN_MAX)
        .take_while(|&at| at.checked_add(SEARCH_LEN).is_some_and(|e| e <= head.len()))
        .find(|&at| head.get(at..).is_some_and(|h| key_matches(h, prefix)))
        .and_then(|at| u64::try_from(at).ok())
}

/// A partition pack key of `kind` (any status).
fn is_partition(key: &[u8], kind: u8) -> bool {
    key_matches(key, &PARTITION_PREFIX) && key.get(13) == Some(&kind) && key.get(15) == Some(&0)
}

/// Decodes a BER length at the start of `b`: (length, bytes it took), or
/// `None` if `b` ends first or the form is not one of 1 to 8 bytes.
fn ber(b: &[u8]) -> Option<(u64, u64)> {
    let first = *b.first()?;
    if first < 0x80 {
        return Some((u64::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 8 {
        return None;
    }
    let bytes = b.get(1..=n)?;
    Some((be_u64_var(bytes), u64::try_from(n).ok()?.checked_add(1)?))
}

fn be_u64_var(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Whether a partition pack of `kind` starts at `offset`.
fn partition_at(file: &File, size: u64, offset: u64, kind: u8) -> io::Result<bool> {
    if offset.checked_add(16).is_none_or(|end| end > size) {
        return Ok(false);
    }
    let mut key = [0u8; 16];
    read(file, offset, &mut key)?;
    Ok(is_partition(&key, kind))
}

fn mxf_check(file: &File, size: u64, start: u64) -> io::Result<Verdict> {
    let mut pack = [0u8; 25];
    let pack = &mut pack[..span(size, start, 25)];
    read(file, start, pack)?;
    let key = pack.get(..16).unwrap_or_default();
    if key.len() < 16 {
        return incomplete(format!(
            "the MXF header partition pack at byte {start} is cut short by the end of \
             the file at byte {size}: it is truncated or still being written"
        ));
    }
    if !is_partition(key, KIND_HEADER) {
        return incomplete(format!(
            "the first MXF partition pack, at byte {start}, is not a header partition: \
             the file is corrupt"
        ));
    }
    let status = key.get(14).copied().unwrap_or_default();
    if !(1..=4).contains(&status) {
        return incomplete(format!(
            "the MXF header partition at byte {start} has status {status:#04x}, not 1 to 4: \
             the file is corrupt"
        ));
    }
    let fields_at = pack
        .get(16..)
        .and_then(ber)
        .and_then(|(len, n)| Some((len, start.checked_add(16)?.checked_add(n)?)));
    let Some((len, fields_at)) = fields_at else {
        return incomplete(format!(
            "the MXF header partition pack at byte {start} has no readable length: \
             it is truncated or corrupt"
        ));
    };
    if len < PACK_MIN {
        return incomplete(format!(
            "the MXF header partition pack at byte {start} is {len} bytes long, \
             less than the {PACK_MIN} of its fields: the file is corrupt"
        ));
    }
    let pack_end = match fields_at.checked_add(len) {
        Some(end) if end <= size => end,
        _ => {
            return incomplete(format!(
                "the MXF header partition pack at byte {start} claims {len} bytes but the \
                 file ends at byte {size}: it is truncated or still being written"
            ))
        }
    };
    // MajorVersion, MinorVersion, KAGSize, ThisPartition, PreviousPartition,
    // FooterPartition.
    let mut fields = [0u8; 32];
    read(file, fields_at, &mut fields)?;
    let footer_field = be_u64(fields.get(24..32).unwrap_or_default());

    let Some(rip_last) = last_rip_entry(file, size, pack_end)? else {
        return incomplete(
            "MXF file does not end with a random index pack: it is truncated or still \
             being written"
                .to_owned(),
        );
    };
    if status == 0x02 || status == 0x04 {
        return Ok(Verdict::Finished);
    }
    for offset in [Some(footer_field), rip_last].into_iter().flatten() {
        if offset == 0 {
            continue;
        }
        if let Some(at) = start.checked_add(offset) {
            if partition_at(file, size, at, KIND_FOOTER)? {
                return Ok(Verdict::Finished);
            }
        }
    }
    incomplete(
        "MXF header partition is open and there is no footer partition: the recorder \
         has not finished it"
            .to_owned(),
    )
}

/// The random index pack that ends the file, after `after`: `None` if there
/// is none, else the ByteOffset of its last entry (`Some(None)` when it has
/// no entries).
fn last_rip_entry(file: &File, size: u64, after: u64) -> io::Result<Option<Option<u64>>> {
    let Some(tail_at) = size.checked_sub(4).filter(|&t| t >= after) else {
        return Ok(None);
    };
    let mut tail = [0u8; 4];
    read(file, tail_at, &mut tail)?;
    let overall = u64::from(u32::from_be_bytes(tail));
    let Some(rip_at) = size
        .checked_sub(overall)
        .filter(|&at| overall >= RIP_MIN && at >= after)
    else {
        return Ok(None);
    };
    let mut head = [0u8; 25];
    let head = &mut head[..span(size, rip_at, 25)];
    read(file, rip_at, head)?;
    if !head.get(..16).is_some_and(|k| key_matches(k, &RIP_KEY)) {
        return Ok(None);
    }
    let Some((len, n)) = head.get(16..).and_then(ber) else {
        return Ok(None);
    };
    // Key, length and body must be the whole pack, and the body whole
    // entries (BodySID u32, ByteOffset u64) plus the overall length.
    if 16u64.checked_add(n).and_then(|h| h.checked_add(len)) != Some(overall) {
        return Ok(None);
    }
    let Some(entries) = len.checked_sub(4).filter(|e| e % 12 == 0) else {
        return Ok(None);
    };
    if entries == 0 {
        return Ok(Some(None));
    }
    let Some(entry_at) = tail_at.checked_sub(12) else {
        return Ok(None);
    };
    let mut entry = [0u8; 12];
    read(file, entry_at, &mut entry)?;
    Ok(Some(Some(be_u64(entry.get(4..).unwrap_or_default()))))
}

#[cfg(test)]
mod tests;
