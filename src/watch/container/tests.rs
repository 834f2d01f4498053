use std::io::Write;

use super::*;

fn file_of(bytes: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn verdict(bytes: &[u8]) -> Verdict {
    check(&file_of(bytes), bytes.len() as u64).unwrap()
}

fn reason(bytes: &[u8]) -> String {
    match verdict(bytes) {
        Verdict::Incomplete(why) => why,
        v => panic!("expected Incomplete, got {v:?}"),
    }
}

/// A box with a 32-bit size and `body` zero bytes.
fn bx(kind: &[u8; 4], body: usize) -> Vec<u8> {
    let mut b = u32::try_from(body + 8).unwrap().to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.resize(body + 8, 0xab);
    b
}

/// A box with a 64-bit size.
fn large(kind: &[u8; 4], body: usize) -> Vec<u8> {
    let mut b = 1u32.to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(&(body as u64 + 16).to_be_bytes());
    b.resize(body + 16, 0xcd);
    b
}

/// A box header claiming `size` (32-bit) with no body.
fn header(kind: &[u8; 4], size: u32) -> Vec<u8> {
    let mut b = size.to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn ftyp() -> Vec<u8> {
    let mut b = header(b"ftyp", 20);
    b.extend_from_slice(b"isom\0\0\x02\0mp41");
    b
}

#[test]
fn a_finished_mp4_is_finished() {
    let f = cat(&[ftyp(), bx(b"moov", 300), bx(b"mdat", 5000)]);
    assert_eq!(verdict(&f), Verdict::Finished);
    // moov at the end, with a free box between.
    let f = cat(&[ftyp(), bx(b"free", 0), bx(b"mdat", 5000), bx(b"moov", 300)]);
    assert_eq!(verdict(&f), Verdict::Finished);
    // QuickTime without ftyp.
    let f = cat(&[bx(b"wide", 0), bx(b"mdat", 100), bx(b"moov", 30)]);
    assert_eq!(verdict(&f), Verdict::Finished);
    let f = cat(&[bx(b"moov", 30), bx(b"mdat", 100)]);
    assert_eq!(verdict(&f), Verdict::Finished);
}

#[test]
fn an_mdat_of_size_zero_without_moov_is_unfinished() {
    let mut f = cat(&[ftyp(), bx(b"free", 0), header(b"mdat", 0)]);
    f.resize(f.len() + 4000, 7);
    assert_eq!(
        reason(&f),
        "mdat has size 0 and there is no moov: the recorder has not finished it"
    );
    // Without ftyp too (an old QuickTime recorder).
    let mut f = header(b"mdat", 0);
    f.resize(1000, 7);
    assert!(reason(&f).starts_with("mdat has size 0"));
    // After a moov, size 0 is the last box running to the end: allowed.
    let mut f = cat(&[ftyp(), bx(b"moov", 40), header(b"mdat", 0)]);
    f.resize(f.len() + 4000, 7);
    assert_eq!(verdict(&f), Verdict::Finished);
}

#[test]
fn no_moov_is_unfinished() {
    let f = cat(&[ftyp(), bx(b"free", 0), bx(b"mdat", 5000)]);
    assert_eq!(
        reason(&f),
        "there is an mdat but no moov box: the recorder has not finished it"
    );
    assert_eq!(
        reason(&ftyp()),
        "there is no moov box: the recorder has not finished it"
    );
}

#[test]
fn a_moov_without_media_is_unfinished() {
    // ffmpeg -movflags empty_moov before its first fragment.
    let f = cat(&[ftyp(), bx(b"moov", 600)]);
    assert_eq!(
        reason(&f),
        "there is a moov but no mdat box: no media has been written yet, the \
         recorder has not finished it"
    );
    let f = cat(&[ftyp(), bx(b"moov", 600), bx(b"moof", 60)]);
    assert!(reason(&f).contains("no mdat box"));
}

#[test]
fn a_file_cut_inside_a_box_is_truncated() {
    let mut f = cat(&[ftyp(), bx(b"mdat", 5000), bx(b"moov", 300)]);
    f.truncate(f.len() - 100);
    let why = reason(&f);
    assert_eq!(
        why,
        format!(
            "the moov box at byte 5028 claims 308 bytes but the file ends at byte {}: \
             it is truncated or still being written",
            f.len()
        )
    );
    // Cut inside the next box's header.
    let mut f = cat(&[ftyp(), bx(b"moov", 30), bx(b"mdat", 50)]);
    f.extend_from_slice(&[0, 0, 0]);
    assert!(reason(&f).contains("too few for a box header"), "{f:?}");
}

#[test]
fn a_64_bit_box_is_walked() {
    let f = cat(&[ftyp(), bx(b"moov", 100), large(b"mdat", 3000)]);
    assert_eq!(verdict(&f), Verdict::Finished);

    // Its largesize runs past the end.
    let mut f = cat(&[ftyp(), bx(b"moov", 100), large(b"mdat", 3000)]);
    f.truncate(f.len() - 1);
    assert!(reason(&f).contains("the mdat box at byte 128 claims 3016 bytes"));

    // Cut inside its 16-byte header.
    let mut f = cat(&[ftyp(), bx(b"moov", 100)]);
    f.extend_from_slice(&large(b"mdat", 0)[..12]);
    assert!(reason(&f).contains("has a 64-bit size"));
}

#[test]
fn box_sizes_that_overflow_or_undercut_their_header_are_corrupt() {
    let mut f = cat(&[ftyp(), bx(b"moov", 100), header(b"mdat", 1)]);
    f.extend_from_slice(&u64::MAX.to_be_bytes());
    f.resize(f.len() + 100, 0);
    assert!(reason(&f).contains(&format!("claims {} bytes", u64::MAX)));

    for small in [2u32, 7] {
        let f = cat(&[ftyp(), header(b"moov", small), bx(b"mdat", 10)]);
        assert_eq!(
            reason(&f),
            format!(
                "corrupt box at byte 20: the moov box claims {small} bytes, \
                 less than its 8-byte header"
            )
        );
    }
    let mut f = cat(&[ftyp(), header(b"mdat", 1)]);
    f.extend_from_slice(&15u64.to_be_bytes());
    assert!(reason(&f).contains("less than its 16-byte header"));
}

#[test]
fn zero_size_boxes_end_the_walk() {
    // A run of size-0 boxes: the first runs to the end, the walk stops.
    let mut f = ftyp();
    for _ in 0..1000 {
        f.extend_from_slice(&header(b"free", 0));
    }
    assert_eq!(
        reason(&f),
        "there is no moov box: the recorder has not finished it"
    );
    let mut f = cat(&[ftyp(), bx(b"moov", 10), bx(b"mdat", 10)]);
    for _ in 0..1000 {
        f.extend_from_slice(&header(b"skip", 0));
    }
    assert_eq!(verdict(&f), Verdict::Finished);
}

#[test]
fn a_huge_claim_in_a_small_file_is_past_the_end() {
    let mut f = cat(&[ftyp(), header(b"moov", 1)]);
    f.extend_from_slice(&10_000_000_000u64.to_be_bytes());
    f.resize(1_000_000, 0);
    assert_eq!(
        reason(&f),
        "the moov box at byte 20 claims 10000000000 bytes but the file ends at byte \
         1000000: it is truncated or still being written"
    );
}

#[test]
fn too_many_boxes_stop_the_walk() {
    let mut f = cat(&[ftyp(), bx(b"moov", 10)]);
    let free = bx(b"free", 0);
    for _ in 0..MAX_BOXES {
        f.extend_from_slice(&free);
    }
    assert!(reason(&f).contains("more than 1000000 top-level boxes"));
}

fn fragmented() -> Vec<u8> {
    cat(&[
        ftyp(),
        bx(b"moov", 200),
        bx(b"moof", 60),
        bx(b"mdat", 2000),
        bx(b"moof", 60),
        bx(b"mdat", 1500),
    ])
}

#[test]
fn a_fragmented_mp4_is_finished_when_its_last_fragment_is_whole() {
    assert_eq!(verdict(&fragmented()), Verdict::Finished);
    let f = cat(&[fragmented(), bx(b"mfra", 40)]);
    assert_eq!(verdict(&f), Verdict::Finished);

    let f = cat(&[fragmented(), bx(b"moof", 60)]);
    let at = fragmented().len();
    assert_eq!(
        reason(&f),
        format!(
            "the last fragment's moof at byte {at} has no mdat after it: \
             the recorder has not finished it"
        )
    );

    let mut f = fragmented();
    f.truncate(f.len() - 700);
    assert!(reason(&f).starts_with("the mdat box at byte "));
}

#[test]
fn other_files_are_unknown() {
    assert_eq!(verdict(b""), Verdict::Unknown);
    assert_eq!(verdict(b"\0\0\0\x08fty"), Verdict::Unknown);
    assert_eq!(
        verdict(b"hello, this is not a box at all"),
        Verdict::Unknown
    );
    // Matroska.
    assert_eq!(
        verdict(&[0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01, 0, 0]),
        Verdict::Unknown
    );
    // A QuickTime first-box name with an impossible size.
    assert_eq!(verdict(&header(b"free", 3)), Verdict::Unknown);
    assert_eq!(verdict(&header(b"moov", 0)), Verdict::Unknown);
}

#[test]
fn a_tiny_ftyp_is_judged_not_panicked() {
    for n in 0..8 {
        let f = &ftyp()[..n];
        assert_eq!(verdict(f), Verdict::Unknown, "{n} bytes");
    }
    assert!(reason(&ftyp()[..8]).contains("the ftyp box at byte 0 claims 20 bytes"));
}

#[test]
fn a_file_shorter_than_its_size_is_incomplete() {
    let f = cat(&[ftyp(), bx(b"moov", 300), bx(b"mdat", 5000)]);
    let file = file_of(&f);
    let len = f.len() as u64;
    assert_eq!(check(&file, len).unwrap(), Verdict::Finished);
    for size in [len + 1, len + 16, len * 2] {
        match check(&file, size) {
            Ok(Verdict::Incomplete(why)) => assert!(why.contains("shorter than"), "{why}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
    }
    // A last box of size 0 running to the caller's end is not taken on trust.
    let mut f = cat(&[ftyp(), bx(b"moov", 30)]);
    f.extend_from_slice(&header(b"mdat", 0));
    let file = file_of(&f);
    assert!(matches!(
        check(&file, f.len() as u64 + 100).unwrap(),
        Verdict::Incomplete(_)
    ));
    assert!(matches!(
        check(&file_of(b"plain text"), 100).unwrap(),
        Verdict::Incomplete(_)
    ));
}

// ---- MXF ----

/// A partition pack: `kind` 2 header, 3 body, 4 footer; `status` 1 to 4.
fn partition(kind: u8, status: u8, this: u64, footer: u64, long_ber: bool) -> Vec<u8> {
    let mut b = PARTITION_PREFIX.to_vec();
    b.extend_from_slice(&[kind, status, 0]);
    if long_ber {
        b.extend_from_slice(&[0x83, 0, 0, 88]);
    } else {
        b.push(88);
    }
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&3u16.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&this.to_be_bytes());
    b.extend_from_slice(&0u64.to_be_bytes());
    b.extend_from_slice(&footer.to_be_bytes());
    b.resize(b.len() + 88 - 32, 0);
    b
}

/// Some essence: a KLV of `n` bytes.
fn essence(n: usize) -> Vec<u8> {
    let mut b = vec![
        0x06, 0x0e, 0x2b, 0x34, 0x01, 0x02, 0x01, 0x01, 0x0d, 0x01, 0x03, 0x01, 0x15, 0x01, 0x05,
        0x00, 0x83,
    ];
    b.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes()[1..]);
    b.resize(b.len() + n, 0x5a);
    b
}

fn rip(entries: &[(u32, u64)]) -> Vec<u8> {
    let mut b = RIP_KEY.to_vec();
    let len = entries.len() * 12 + 4;
    b.push(0x83);
    b.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes()[1..]);
    for (sid, offset) in entries {
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
    }
    let overall = u32::try_from(b.len() + 4).unwrap();
    b.extend_from_slice(&overall.to_be_bytes());
    b
}

/// Header (`status`, footer field `footer_field(footer offset)`), essence,
/// footer, RIP listing header and footer.
fn mxf(status: u8, footer_in_header: bool) -> Vec<u8> {
    let body = essence(3000);
    let header_len = partition(2, status, 0, 0, true).len();
    let footer_at = (header_len + body.len()) as u64;
    let field = if footer_in_header { footer_at } else { 0 };
    cat(&[
        partition(2, status, 0, field, true),
        body,
        partition(4, 4, footer_at, footer_at, false),
        rip(&[(0, 0), (0, footer_at)]),
    ])
}

#[test]
fn an_open_mxf_without_footer_or_rip_is_unfinished() {
    let f = cat(&[partition(2, 1, 0, 0, true), essence(5000)]);
    assert_eq!(
        reason(&f),
        "MXF file does not end with a random index pack: it is truncated or still \
         being written"
    );
}

#[test]
fn a_closed_mxf_with_footer_and_rip_is_finished() {
    assert_eq!(verdict(&mxf(4, true)), Verdict::Finished);
    assert_eq!(verdict(&mxf(2, false)), Verdict::Finished);
}

#[test]
fn an_open_mxf_is_finished_by_its_footer() {
    // Where the RIP says.
    assert_eq!(verdict(&mxf(1, false)), Verdict::Finished);
    assert_eq!(verdict(&mxf(3, false)), Verdict::Finished);
    // Where the header says, with a RIP that lists the header only.
    let body = essence(1000);
    let footer_at = (partition(2, 1, 0, 0, true).len() + body.len()) as u64;
    let f = cat(&[
        partition(2, 1, 0, footer_at, true),
        body,
        partition(4, 4, footer_at, footer_at, true),
        rip(&[(0, 0)]),
    ]);
    assert_eq!(verdict(&f), Verdict::Finished);
}

#[test]
fn an_open_mxf_whose_rip_points_at_no_footer_is_unfinished() {
    let body = essence(1000);
    let body_at = (partition(2, 1, 0, 0, true).len() + body.len()) as u64;
    let f = cat(&[
        partition(2, 1, 0, 0, true),
        body,
        partition(3, 1, body_at, 0, true),
        essence(500),
        rip(&[(0, 0), (1, body_at)]),
    ]);
    assert_eq!(
        reason(&f),
        "MXF header partition is open and there is no footer partition: the recorder \
         has not finished it"
    );
    // A RIP pointing past the end, or at nothing, is no footer either.
    let f = cat(&[
        partition(2, 1, 0, u64::MAX, true),
        essence(100),
        rip(&[(0, u64::MAX - 3)]),
    ]);
    assert!(reason(&f).contains("no footer partition"));
}

#[test]
fn mxf_garbage_is_unfinished_not_a_panic() {
    let mut f = partition(2, 1, 0, 0, true);
    let mut rng = fastrand::Rng::with_seed(7);
    f.extend((0..5000).map(|_| rng.u8(..)));
    assert!(matches!(verdict(&f), Verdict::Incomplete(_)));
    // A last u32 that points back at a non-RIP, or before the start.
    let mut f = cat(&[partition(2, 4, 0, 0, true), essence(100)]);
    f.extend_from_slice(&50u32.to_be_bytes());
    assert!(reason(&f).contains("random index pack"));
    let mut f = cat(&[partition(2, 4, 0, 0, true), essence(100)]);
    f.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(reason(&f).contains("random index pack"));
    // A damaged header pack.
    let mut f = partition(2, 9, 0, 0, true);
    f.extend_from_slice(&essence(10));
    assert!(reason(&f).contains("status 0x09"));
    let f = partition(2, 1, 0, 0, true);
    assert!(reason(&f[..40]).contains("claims 88 bytes"));
    assert!(reason(&f[..17]).contains("no readable length"));
    let mut f = partition(3, 1, 0, 0, true);
    f.extend_from_slice(&essence(10));
    assert!(reason(&f).contains("is not a header partition"));
}

#[test]
fn an_mxf_run_in_is_skipped_and_only_proof_counts_after_one() {
    let run_in = vec![0x11u8; 3000];
    let f = cat(&[run_in.clone(), mxf(1, false)]);
    assert_eq!(verdict(&f), Verdict::Finished);
    // An MXF inside something else that does not end like one.
    let f = cat(&[run_in, partition(2, 1, 0, 0, true), essence(100)]);
    assert_eq!(verdict(&f), Verdict::Unknown);
    // Past the run-in limit: not looked for.
    let f = cat(&[vec![0u8; RUN_IN_MAX + 1], mxf(4, true)]);
    assert_eq!(verdict(&f), Verdict::Unknown);
}

// ---- any input ----

/// A random byte string, often shaped like the start of a container so the
/// walks get deep.
fn random_input(rng: &mut fastrand::Rng) -> Vec<u8> {
    const KINDS: [&[u8; 4]; 7] = [
        b"ftyp", b"moov", b"mdat", b"moof", b"free", b"wide", b"abcd",
    ];
    let mut b = Vec::new();
    match rng.u8(..4) {
        0 => b.extend((0..rng.usize(..300)).map(|_| rng.u8(..))),
        1 | 2 => {
            for _ in 0..rng.usize(1..8) {
                let kind = KINDS[rng.usize(..KINDS.len())];
                let size = match rng.u8(..6) {
                    0 => rng.u32(..),
                    1 => rng.u32(..3),
                    _ => rng.u32(8..80),
                };
                b.extend_from_slice(&size.to_be_bytes());
                b.extend_from_slice(kind);
                if size == 1 {
                    let large = if rng.bool() {
                        rng.u64(..)
                    } else {
                        rng.u64(16..90)
                    };
                    b.extend_from_slice(&large.to_be_bytes());
                }
                let body = usize::try_from(size).unwrap_or(0).saturating_sub(8).min(80);
                b.extend((0..rng.usize(..=body)).map(|_| rng.u8(..)));
            }
        }
        _ => {
            if rng.bool() {
                b.extend((0..rng.usize(..40)).map(|_| rng.u8(..)));
            }
            b.extend(partition(2, rng.u8(..6), 0, rng.u64(..200), rng.bool()));
            b.extend((0..rng.usize(..100)).map(|_| rng.u8(..)));
            if rng.bool() {
                b.extend(partition(4, 4, rng.u64(..300), 0, rng.bool()));
            }
            if rng.bool() {
                b.extend(rip(&[(0, 0), (1, rng.u64(..300))]));
            }
            if rng.bool() {
                let at = rng.usize(..b.len());
                b[at] = rng.u8(..);
            }
        }
    }
    b
}

#[test]
fn any_bytes_and_any_prefix_get_a_verdict() {
    let mut rng = fastrand::Rng::with_seed(0x1d9e_57d0);
    let (mut finished, mut incomplete) = (0, 0);
    for _ in 0..2000 {
        let bytes = random_input(&mut rng);
        let file = file_of(&bytes);
        let len = bytes.len() as u64;
        // Every read stays before `size`, so a smaller size is the prefix.
        for size in 0..=len {
            match check(&file, size) {
                Ok(Verdict::Finished) => finished += 1,
                Ok(Verdict::Incomplete(_)) => incomplete += 1,
                Ok(Verdict::Unknown) => {}
                Err(e) => panic!("{e} at size {size} of {bytes:?}"),
            }
        }
        for size in [len + 1, len + 5, len + 1000, 1 << 62] {
            assert!(
                matches!(check(&file, size), Ok(Verdict::Incomplete(_))),
                "size {size} of {bytes:?}"
            );
        }
    }
    assert!(finished > 0 && incomplete > 0, "{finished} {incomplete}");
}
