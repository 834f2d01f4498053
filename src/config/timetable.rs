//! `upload.bandwidth_limit`: a size per second, or a timetable in rclone's
//! `--bwlimit` syntax, and the answer to "what holds now, until when, and
//! what comes next".
//!
//! - A plain value (no comma) is one rate for all times: a size per second
//!   (`"20MiB"`, `"0"` = unlimited), `off` (unlimited) or `pause`.
//! - A timetable is entries `[DAY-]HH:MM,RATE` separated by spaces (or `;`),
//!   in local time. Each entry holds from its time until the next one's;
//!   before the first entry of the day (of the week) the last one holds.
//! - Without any weekday the table is daily. With one, it is weekly (Monday
//!   first, as ISO 8601 counts), and an entry without a weekday stands for
//!   that time on every day of the week, as rclone reads it.
//!
//! Pure: nothing here reads a clock or a time zone. The caller gives the
//! local civil time (see `upload::throttle` for the clock, and `status`).

use std::fmt;

use jiff::civil::{DateTime, Weekday};
use jiff::ToSpan;

use super::values::{format_size, parse_size};

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// The weekdays as written and shown, Monday first (ISO 8601).
const WEEKDAYS: [(&str, &str, Weekday); 7] = [
    ("Mon", "monday", Weekday::Monday),
    ("Tue", "tuesday", Weekday::Tuesday),
    ("Wed", "wednesday", Weekday::Wednesday),
    ("Thu", "thursday", Weekday::Thursday),
    ("Fri", "friday", Weekday::Friday),
    ("Sat", "saturday", Weekday::Saturday),
    ("Sun", "sunday", Weekday::Sunday),
];

const TABLE_HELP: &str = "a timetable is entries like \"08:00,10MiB 18:00,off\" or \
     \"Mon-08:00,10MiB Sat-00:00,off\", separated by spaces";
const RATE_HELP: &str = "or \"off\" (unlimited) or \"pause\" (no new chunk starts)";

/// What uploads may do while an entry (or a plain value) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// At most this many bytes per second, shared by every upload (never 0).
    Limit(u64),
    /// No limit: `"0"` or `off`.
    Unlimited,
    /// No new chunk starts; a chunk in flight finishes.
    Pause,
}

impl Rate {
    /// `10MiB`, `off`, `pause`: what [`parse_rate`] reads back (no space,
    /// since spaces separate a timetable's entries).
    fn written(self) -> String {
        match self {
            Rate::Limit(bytes) => format_size(bytes).replace(' ', ""),
            Rate::Unlimited => "off".to_string(),
            Rate::Pause => "pause".to_string(),
        }
    }
}

/// `10 MiB/s`, `unlimited`, `paused`: for log lines and `status`.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Limit(bytes) => write!(f, "{}/s", format_size(*bytes)),
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Pause => f.write_str("paused"),
        }
    }
}

/// One timetable entry as written: `[DAY-]HH:MM,RATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// `None`: every day.
    pub day: Option<Weekday>,
    /// Minutes since midnight, 0 ..= 1439.
    pub minute: u32,
    pub rate: Rate,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(day) = self.day {
            write!(f, "{}-", day_name(day))?;
        }
        write!(f, "{},{}", clock(self.minute), self.rate.written())
    }
}

/// A checked timetable: at least one entry, in order, no two at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// As written (normalised), for `check-config`.
    entries: Vec<Entry>,
    /// Where each rate starts, in minutes into the period (the day, or the
    /// week from Monday 00:00), in increasing order: entries without a
    /// weekday of a weekly table appear once per day.
    slots: Vec<(u32, Rate)>,
    /// Whether the period is a week (some entry names a weekday).
    weekly: bool,
}

/// What the limit is: one rate at all times, or a timetable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BandwidthLimit {
    Constant(Rate),
    Timetable(Timetable),
}

impl Default for BandwidthLimit {
    fn default() -> Self {
        BandwidthLimit::Constant(Rate::Unlimited)
    }
}

/// What holds at some local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub rate: Rate,
    /// When the rate next changes, and to what; `None` when it never does
    /// (a plain value, or a table of one rate).
    pub change: Option<(DateTime, Rate)>,
    /// Whether this comes from a timetable.
    pub timetable: bool,
    /// Whether the timetable is weekly (its changes are shown with a weekday).
    weekly: bool,
}

/// `10 MiB/s until 18:00 (timetable), then unlimited`.
impl fmt::Display for Holding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.timetable, self.change) {
            (false, _) => write!(f, "{}", self.rate),
            (true, None) => write!(f, "{} (timetable, at all times)", self.rate),
            (true, Some((at, next))) => {
                let minute = minute_of_day(at);
                if self.weekly {
                    let day = day_name(at.weekday());
                    write!(f, "{} until {day} {}", self.rate, clock(minute))?;
                } else {
                    write!(f, "{} until {}", self.rate, clock(minute))?;
                }
                write!(f, " (timetable), then {next}")
            }
        }
    }
}

/// Why a value of `upload.bandwidth_limit` cannot be read; each message
/// names the bad entry and says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("the value is empty; write a size per second like \"20MiB\" (\"0\" = unlimited), {RATE_HELP}; {TABLE_HELP}")]
    Empty,
    #[error("{problem}, {RATE_HELP}; {TABLE_HELP}")]
    BadValue { problem: String },
    #[error("entry {entry:?} is not [DAY-]HH:MM,RATE; {TABLE_HELP} (write a rate without a space, like 10MiB)")]
    NotAnEntry { entry: String },
    #[error("entry {entry:?}: bad time {time:?}; write HH:MM, from 00:00 to 23:59")]
    BadTime { entry: String, time: String },
    #[error("entry {entry:?}: bad weekday {day:?}; write Mon, Tue, Wed, Thu, Fri, Sat or Sun (or the whole name)")]
    BadWeekday { entry: String, day: String },
    #[error("entry {entry:?}: bad rate: {problem}, {RATE_HELP}")]
    BadRate { entry: String, problem: String },
    #[error("entry {entry:?} is unordered: it comes after {previous:?} but starts earlier in the {period}; write the entries in the order they start (a week begins on Monday)")]
    Unordered {
        entry: String,
        previous: String,
        period: &'static str,
    },
    #[error("entries {previous:?} and {entry:?} are overlapping: both start at {at}; keep one")]
    Overlapping {
        entry: String,
        previous: String,
        at: String,
    },
}

impl BandwidthLimit {
    /// A plain size per second (0 = unlimited).
    pub fn bytes(bytes: u64) -> BandwidthLimit {
        BandwidthLimit::Constant(rate_of(bytes))
    }

    /// Reads a value as written: a plain rate when it holds no comma, else
    /// a timetable.
    pub fn parse(text: &str) -> Result<BandwidthLimit, TimetableError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(TimetableError::Empty);
        }
        if !trimmed.contains(',') {
            return parse_rate(trimmed)
                .map(BandwidthLimit::Constant)
                .map_err(|problem| TimetableError::BadValue { problem });
        }
        Timetable::parse(trimmed).map(BandwidthLimit::Timetable)
    }

    /// What holds at the local time `now`.
    pub fn at(&self, now: DateTime) -> Holding {
        match self {
            BandwidthLimit::Constant(rate) => Holding {
                rate: *rate,
                change: None,
                timetable: false,
                weekly: false,
            },
            BandwidthLimit::Timetable(table) => table.at(now),
        }
    }

    pub fn timetable(&self) -> Option<&Timetable> {
        match self {
            BandwidthLimit::Timetable(table) => Some(table),
            BandwidthLimit::Constant(_) => None,
        }
    }
}

impl Timetable {
    fn parse(text: &str) -> Result<Timetable, TimetableError> {
        let mut entries: Vec<(Entry, &str)> = Vec::new();
        for written in text
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|s| !s.is_empty())
        {
            entries.push((parse_entry(written)?, written));
        }
        if entries.is_empty() {
            return Err(TimetableError::Empty);
        }
        let weekly = entries.iter().any(|(e, _)| e.day.is_some());
        // Entries with a weekday in the order of the week, those without in
        // the order of the day; no two at one time once expanded.
        for with_day in [true, false] {
            let mut previous: Option<&(Entry, &str)> = None;
            for current in entries.iter().filter(|(e, _)| e.day.is_some() == with_day) {
                if let Some(before) = previous {
                    let (a, b) = (written_offset(&before.0), written_offset(&current.0));
                    if b == a {
                        return Err(overlapping(current, before));
                    }
                    if b < a {
                        return Err(TimetableError::Unordered {
                            entry: current.1.to_string(),
                            previous: before.1.to_string(),
                            period: if with_day { "week" } else { "day" },
                        });
                    }
                }
                previous = Some(current);
            }
        }
        let mut slots: Vec<(u32, Rate, usize)> = Vec::new();
        for (index, (entry, _)) in entries.iter().enumerate() {
            match (weekly, entry.day) {
                (false, _) => slots.push((entry.minute, entry.rate, index)),
                (true, Some(day)) => {
                    slots.push((day_offset(day) + entry.minute, entry.rate, index))
                }
                (true, None) => {
                    for (_, _, day) in WEEKDAYS {
                        slots.push((day_offset(day) + entry.minute, entry.rate, index));
                    }
                }
            }
        }
        slots.sort_by_key(|&(at, _, _)| at);
        for pair in slots.windows(2) {
            if let [(a, _, first), (b, _, second)] = pair {
                if a == b {
                    let (earlier, later) = ((*first).min(*second), (*first).max(*second));
                    return Err(overlapping(&entries[later], &entries[earlier]));
                }
            }
        }
        Ok(Timetable {
            entries: entries.iter().map(|(e, _)| *e).collect(),
            slots: slots.into_iter().map(|(at, rate, _)| (at, rate)).collect(),
            weekly,
        })
    }

    /// The entries as written (normalised).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn period(&self) -> u32 {
        if self.weekly {
            MINUTES_PER_WEEK
        } else {
            MINUTES_PER_DAY
        }
    }

    fn at(&self, now: DateTime) -> Holding {
        let minute = if self.weekly {
            day_offset(now.weekday()) + minute_of_day(now)
        } else {
            minute_of_day(now)
        };
        // The last slot started at or before now; before the first, the
        // last one of the period before (it wraps around).
        let current = self
            .slots
            .iter()
            .rposition(|&(at, _)| at <= minute)
            .unwrap_or(self.slots.len() - 1);
        let rate = self.slots[current].1;
        let period = self.period();
        let change = (1..self.slots.len())
            .map(|step| self.slots[(current + step) % self.slots.len()])
            .find(|&(_, next)| next != rate)
            .and_then(|(at, next)| {
                // At least one minute ahead: `at` differs from the current
                // slot's start, and the current slot is the latest not after now.
                let ahead = (at + period - minute) % period;
                let ahead = if ahead == 0 { period } else { ahead };
                let start = now.with().second(0).subsec_nanosecond(0).build().ok()?;
                let when = start.checked_add(i64::from(ahead).minutes()).ok()?;
                Some((when, next))
            });
        Holding {
            rate,
            change,
            timetable: true,
            weekly: self.weekly,
        }
    }
}

/// `08:00,10MiB 18:00,off`: the entries, which read back as the same table.
impl fmt::Display for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

fn rate_of(bytes: u64) -> Rate {
    if bytes == 0 {
        Rate::Unlimited
    } else {
        Rate::Limit(bytes)
    }
}

/// `10MiB`, `0`, `off` or `pause`; the error is [`parse_size`]'s.
fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Rate::Unlimited);
    }
    if text.eq_ignore_ascii_case("pause") {
        return Ok(Rate::Pause);
    }
    parse_size(text).map(rate_of)
}

fn parse_entry(written: &str) -> Result<Entry, TimetableError> {
    let entry = || written.to_string();
    let Some((when, rate)) = written.split_once(',') else {
        return Err(TimetableError::NotAnEntry { entry: entry() });
    };
    let (day, time) = match when.split_once('-') {
        Some((day, time)) => (Some(day), time),
        None => (None, when),
    };
    let day = match day {
        None => None,
        Some(name) => Some(
            parse_weekday(name).ok_or_else(|| TimetableError::BadWeekday {
                entry: entry(),
                day: name.to_string(),
            })?,
        ),
    };
    let minute = parse_time(time).ok_or_else(|| TimetableError::BadTime {
        entry: entry(),
        time: time.to_string(),
    })?;
    let rate = parse_rate(rate).map_err(|problem| TimetableError::BadRate {
        entry: entry(),
        problem,
    })?;
    Ok(Entry { day, minute, rate })
}

/// `Mon`, `monday`, `MON`: a weekday; `None` for anything else.
fn parse_weekday(name: &str) -> Option<Weekday> {
    WEEKDAYS
        .iter()
        .find(|(short, long, _)| {
            name.eq_ignore_ascii_case(short) || name.eq_ignore_ascii_case(long)
        })
        .map(|&(_, _, day)| day)
}

/// `HH:MM` (or `H:MM`) → minutes since midnight.
fn parse_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours) || hours.len() > 2 || !digits(minutes) || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

fn day_name(day: Weekday) -> &'static str {
    WEEKDAYS
        .iter()
        .find(|(_, _, d)| *d == day)
        .map_or("?", |(short, _, _)| short)
}

/// Minutes from Monday 00:00 to the start of `day`.
fn day_offset(day: Weekday) -> u32 {
    // 0 (Monday) ..= 6 (Sunday).
    u32::try_from(day.to_monday_zero_offset()).unwrap_or(0) * MINUTES_PER_DAY
}

fn minute_of_day(at: DateTime) -> u32 {
    // Hours 0..=23 and minutes 0..=59: never negative.
    u32::try_from(at.hour()).unwrap_or(0) * 60 + u32::try_from(at.minute()).unwrap_or(0)
}

/// Where a written entry starts, for comparing entries of the same kind.
fn written_offset(entry: &Entry) -> u32 {
    entry.day.map_or(0, day_offset) + entry.minute
}

/// `08:00`.
fn clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn overlapping(current: &(Entry, &str), before: &(Entry, &str)) -> TimetableError {
    // The later entry's time, with the weekday the two share.
    let day = current.0.day.or(before.0.day);
    let at = match day {
        Some(day) => format!("{} {}", day_name(day), clock(current.0.minute)),
        None => clock(current.0.minute),
    };
    TimetableError::Overlapping {
        entry: current.1.to_string(),
        previous: before.1.to_string(),
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const MIB: u64 = 1 << 20;

    fn table(text: &str) -> BandwidthLimit {
        BandwidthLimit::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error(text: &str) -> TimetableError {
        BandwidthLimit::parse(text).expect_err(text)
    }

    /// 2024-06-03 was a Monday.
    fn monday(hour: i8, minute: i8) -> DateTime {
        date(2024, 6, 3).at(hour, minute, 30, 0)
    }

    #[test]
    fn plain_values_are_one_rate_for_all_times() {
        assert_eq!(table("20MiB"), BandwidthLimit::bytes(20 * MIB));
        assert_eq!(
            table("20 MiB"),
            BandwidthLimit::Constant(Rate::Limit(20 * MIB))
        );
        assert_eq!(table("0"), BandwidthLimit::Constant(Rate::Unlimited));
        assert_eq!(table("off"), BandwidthLimit::default());
        assert_eq!(table("pause"), BandwidthLimit::Constant(Rate::Pause));
        assert_eq!(BandwidthLimit::bytes(0), BandwidthLimit::default());
        let now = table("20MiB").at(monday(9, 0));
        assert_eq!((now.rate, now.change), (Rate::Limit(20 * MIB), None));
        assert_eq!(now.to_string(), "20 MiB/s");
    }

    #[test]
    fn a_daily_table_holds_each_rate_until_the_next_entry_and_wraps() {
        let t = table("08:00,10MiB 18:00,off");
        let day = date(2024, 6, 3);
        let at = |h, m| t.at(day.at(h, m, 0, 0));
        assert_eq!(at(8, 0).rate, Rate::Limit(10 * MIB));
        assert_eq!(at(17, 59).rate, Rate::Limit(10 * MIB));
        assert_eq!(at(18, 0).rate, Rate::Unlimited);
        // Before the first entry of the day, the last one holds.
        assert_eq!(at(7, 59).rate, Rate::Unlimited);
        let now = at(9, 15);
        assert_eq!(now.change, Some((day.at(18, 0, 0, 0), Rate::Unlimited)));
        assert_eq!(
            now.to_string(),
            "10 MiB/s until 18:00 (timetable), then unlimited"
        );
        // After the last entry: the change is tomorrow morning.
        let late = at(23, 0);
        let tomorrow = date(2024, 6, 4).at(8, 0, 0, 0);
        assert_eq!(late.change, Some((tomorrow, Rate::Limit(10 * MIB))));
        assert_eq!(
            late.to_string(),
            "unlimited until 08:00 (timetable), then 10 MiB/s"
        );
    }

    #[test]
    fn pause_and_every_rate_spelling_parse_in_a_table() {
        let t = table("00:00,pause 06:30,512KiB;12:00,0 20:00,1.5GiB 22:00,OFF");
        let BandwidthLimit::Timetable(inner) = &t else {
            panic!("not a table")
        };
        let rates: Vec<Rate> = inner.entries().iter().map(|e| e.rate).collect();
        assert_eq!(
            rates,
            [
                Rate::Pause,
                Rate::Limit(512 * 1024),
                Rate::Unlimited,
                Rate::Limit(1536 * MIB),
                Rate::Unlimited
            ]
        );
        let now = t.at(monday(3, 0));
        assert_eq!(now.rate, Rate::Pause);
        assert_eq!(
            now.to_string(),
            "paused until 06:30 (timetable), then 512 KiB/s"
        );
        // Rendered without spaces inside an entry, it reads back the same.
        assert_eq!(
            inner.to_string(),
            "00:00,pause 06:30,512KiB 12:00,off 20:00,1536MiB 22:00,off"
        );
        assert_eq!(table(&inner.to_string()), t);
    }

    #[test]
    fn equal_neighbours_are_one_stretch_until_the_rate_really_changes() {
        let t = table("08:00,10MiB 12:00,10MiB 18:00,off");
        let now = t.at(monday(9, 0));
        assert_eq!(now.change.map(|(at, _)| minute_of_day(at)), Some(18 * 60));
        let same = table("08:00,10MiB 18:00,10MiB");
        assert_eq!(same.at(monday(9, 0)).change, None);
        assert_eq!(
            same.at(monday(9, 0)).to_string(),
            "10 MiB/s (timetable, at all times)"
        );
        let one = table("08:00,pause");
        assert_eq!(one.at(monday(1, 0)).rate, Rate::Pause);
        assert_eq!(one.at(monday(1, 0)).change, None);
    }

    #[test]
    fn a_weekly_table_wraps_from_sunday_to_monday() {
        let t = table("Mon-08:00,10MiB Sat-00:00,off");
        // Monday before 08:00: still the weekend's entry.
        assert_eq!(t.at(monday(7, 0)).rate, Rate::Unlimited);
        assert_eq!(t.at(monday(8, 0)).rate, Rate::Limit(10 * MIB));
        let friday = date(2024, 6, 7).at(23, 59, 0, 0);
        let now = t.at(friday);
        assert_eq!(now.rate, Rate::Limit(10 * MIB));
        assert_eq!(
            now.to_string(),
            "10 MiB/s until Sat 00:00 (timetable), then unlimited"
        );
        let sunday = date(2024, 6, 9).at(12, 0, 0, 0);
        let now = t.at(sunday);
        assert_eq!(
            now.change,
            Some((date(2024, 6, 10).at(8, 0, 0, 0), Rate::Limit(10 * MIB)))
        );
        // Full names, any case.
        assert_eq!(table("monday-08:00,10MiB SATURDAY-00:00,off"), t);
    }

    #[test]
    fn entries_without_a_weekday_stand_for_every_day_of_a_weekly_table() {
        // rclone's own example.
        let t = table("Mon-00:00,512KiB 12:00,1MiB Sun-20:00,off");
        let on = |d: i8, h: i8| t.at(date(2024, 6, d).at(h, 0, 0, 0)).rate;
        assert_eq!(on(3, 1), Rate::Limit(512 * 1024)); // Monday 01:00
        assert_eq!(on(3, 13), Rate::Limit(MIB)); // Monday 13:00
        assert_eq!(on(4, 1), Rate::Limit(MIB)); // Tuesday 01:00: Monday 12:00 still
        assert_eq!(on(9, 21), Rate::Unlimited); // Sunday 21:00
        assert_eq!(on(9, 13), Rate::Limit(MIB)); // Sunday 13:00
    }

    #[test]
    fn every_bad_entry_is_named_with_what_is_wrong() {
        let cases: [(&str, &str); 12] = [
            ("25:00,1MiB", "bad time \"25:00\""),
            ("08:60,1MiB", "bad time \"08:60\""),
            ("8h,1MiB", "bad time \"8h\""),
            ("08:00:00,1MiB", "bad time"),
            ("Mun-08:00,1MiB", "bad weekday \"Mun\""),
            ("-08:00,1MiB", "bad weekday \"\""),
            ("08:00,fast", "bad rate: \"fast\" is not a size"),
            ("08:00,-5MiB", "bad rate"),
            ("08:00,", "bad rate"),
            ("08:00,10 MiB", "\"MiB\" is not [DAY-]HH:MM,RATE"),
            ("18:00,off 08:00,10MiB", "unordered"),
            (
                "Sat-00:00,off Mon-08:00,10MiB",
                "starts earlier in the week",
            ),
        ];
        for (text, wanted) in cases {
            let message = error(text).to_string();
            assert!(message.contains(wanted), "{text}: {message}");
        }
        let message = error("08:00,60 08:00,off").to_string();
        assert!(message.contains("overlapping"), "{message}");
        assert!(
            message.contains("\"08:00,60\" and \"08:00,off\""),
            "{message}"
        );
        let message = error("Mon-08:00,1MiB 08:00,2MiB").to_string();
        assert!(
            message.contains("overlapping: both start at Mon 08:00"),
            "{message}"
        );
        assert!(matches!(
            error("Tue-12:00,1 Tue-12:00,2"),
            TimetableError::Overlapping { .. }
        ));
        let unordered = error("18:00,off 08:00,10MiB");
        assert_eq!(
            unordered,
            TimetableError::Unordered {
                entry: "08:00,10MiB".into(),
                previous: "18:00,off".into(),
                period: "day"
            }
        );
    }

    #[test]
    fn empty_values_and_bad_plain_values_say_what_to_write() {
        for empty in ["", "   "] {
            assert_eq!(error(empty), TimetableError::Empty);
        }
        assert!(matches!(error(" ; ,"), TimetableError::BadTime { .. }));
        let message = error("12 potatoes").to_string();
        assert!(
            message.contains("\"12 potatoes\" is not a size"),
            "{message}"
        );
        assert!(message.contains("08:00,10MiB 18:00,off"), "{message}");
        assert!(TimetableError::Empty.to_string().contains("empty"));
    }
}
