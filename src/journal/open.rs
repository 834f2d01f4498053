//! Opening the journal: the connection, its pragmas, the soundness check and
//! the numbered migrations. A file that is not an ingestd journal, a damaged
//! one or one from a newer ingestd is refused here, before anything reads or
//! writes a row. It must not touch rows: nothing here reads or changes `files`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{Migrations, M};

use super::sql::Conn;
use super::{Journal, JournalError};

/// The schema, one numbered migration per file; applied on open.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_files.sql"),
    include_str!("migrations/0002_sends_in_doubt.sql"),
    include_str!("migrations/0003_content_identity.sql"),
    include_str!("migrations/0004_sha256.sql"),
    include_str!("migrations/0005_workflow.sql"),
];

/// How long a writer waits for another connection's lock (a `status` reader,
/// a second `ingestd` process) before the statement fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Journal {
    /// Opens (creating if needed) the journal at `path` and applies the
    /// migrations. A file that is not an ingestd journal, or one written by a
    /// newer ingestd, is an error: never a silent new journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut journal = Journal::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        journal.migrate()?;
        Ok(journal)
    }

    /// Opens an existing journal to write to it (`retry`). With `migrate`
    /// (the caller holds the lock) an older schema is brought up to date;
    /// without (another process, the daemon, holds it) it is refused unless
    /// it has the schema this ingestd writes.
    pub(crate) fn open_existing(path: &Path, migrate: bool) -> Result<Journal, JournalError> {
        let mut journal = Journal::connect_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let version = journal.existing_version()?;
        if version < MIGRATIONS.len() as i64 {
            if !migrate {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it has schema version {version} and another process holds it; this ingestd \
                         writes version {}: stop that process, or use the ingestd it runs",
                        MIGRATIONS.len()
                    ),
                });
            }
            journal.migrate()?;
        }
        Ok(journal)
    }

    /// Opens an existing journal for reading only (`status` while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let journal = Journal::connect_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        journal.existing_version()?;
        Ok(journal)
    }

    /// [`Journal::connect`] to a journal that must already be there.
    fn connect_existing(path: &Path, flags: OpenFlags) -> Result<Journal, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                path: path.to_path_buf(),
            });
        }
        Journal::connect(path, flags)
    }

    /// Opens the connection, configures it and checks the file is sound
    /// (`PRAGMA quick_check`): a damaged journal (a torn disk, a truncated
    /// copy) is refused before anything trusts or rewrites it.
    fn connect(path: &Path, flags: OpenFlags) -> Result<Journal, JournalError> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|source| JournalError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let journal = Journal {
            conn: Conn::Sqlite(conn),
            path: path.to_path_buf(),
            outbox: Default::default(),
            cluster: None,
        };
        journal.configure(flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY))?;
        let rows = journal.rows("check", "PRAGMA quick_check(3)", &[])?;
        let problems = journal.map_rows("check", rows, |r| r.text(0))?;
        match problems.as_slice() {
            [ok] if ok == "ok" => Ok(journal),
            _ => Err(JournalError::Damaged {
                path: path.to_path_buf(),
                detail: problems.join("; "),
            }),
        }
    }

    /// The schema version of a journal that must already hold one this
    /// ingestd can read.
    fn existing_version(&self) -> Result<i64, JournalError> {
        let version = self.known_version()?;
        if version == 0 {
            return Err(JournalError::NotAJournal {
                path: self.path.clone(),
                reason: "it has no ingestd schema".into(),
            });
        }
        Ok(version)
    }

    /// The SQLite connection (opening and migrating are SQLite's own).
    fn sqlite(&mut self) -> Result<&mut Connection, JournalError> {
        match &mut self.conn {
            Conn::Sqlite(c) => Ok(c),
            Conn::Pg(_) => Err(JournalError::Closed),
        }
    }

    /// On a full disk: copies the write-ahead log into the database and
    /// truncates it. The log grows until a commit checkpoints it, and no
    /// commit gets through while it fills the disk: without this, a journal
    /// whose log took the last free bytes would wait for ever. Best effort.
    pub(super) fn truncate_wal(&mut self) {
        if let Conn::Sqlite(conn) = &self.conn {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }

    fn configure(&self, read_only: bool) -> Result<(), JournalError> {
        let Conn::Sqlite(conn) = &self.conn else {
            return Ok(());
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(self.query_err("configure"))?;
        if !read_only {
            // WAL lets `status` read while the daemon writes. FULL syncs the WAL
            // on every commit: an acknowledged chunk survives a power cut too.
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
                .map_err(self.query_err("configure"))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(self.query_err("configure"))?;
        }
        Ok(())
    }

    pub(super) fn schema_version(&self) -> Result<i64, JournalError> {
        Ok(self
            .scalar("read schema version", "PRAGMA user_version", &[])?
            .unwrap_or(0))
    }

    /// The schema version, refused when a newer ingestd wrote it.
    fn known_version(&self) -> Result<i64, JournalError> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(JournalError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: MIGRATIONS.len(),
            });
        }
        Ok(version)
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        let version = self.known_version()?;
        if version == 0 {
            // A database someone else made: never write our schema into it.
            let foreign = self
                .scalar(
                    "inspect schema",
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                    &[],
                )?
                .unwrap_or(0);
            if foreign > 0 {
                return Err(JournalError::NotAJournal {
                    path: self.path.clone(),
                    reason: format!("a SQLite database with {foreign} objects of another program"),
                });
            }
        }
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        let path = self.path.clone();
        migrations
            .to_latest(self.sqlite()?)
            .map_err(|source| JournalError::Migrate { path, source })
    }
}
