//! The journal in PostgreSQL, shared by several nodes: connecting, the
//! numbered migrations (applied under a transaction-scoped advisory lock, a
//! newer schema refused), this node's registration, and the leases: a claim
//! takes a file `FOR UPDATE SKIP LOCKED` and raises its fencing epoch, every
//! write of that attempt names the epoch, the node renews its leases on a
//! timer, and files whose lease ran out are taken over. The statements of
//! the state machine itself are shared with SQLite (see `sql`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::row::COLUMNS;
use super::sql::{args, pg_words, Conn, PgConn, Value};
use super::{FileRow, Journal, JournalError};
use crate::config::{JournalSettings, PgJournalSettings};

/// The PostgreSQL schema, one numbered migration per file.
pub(super) const PG_MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgresql/0001_journal.sql"),
    include_str!("migrations/postgresql/0002_workflow.sql"),
];

/// Any number unlikely to be another program's: the advisory lock held
/// while the schema is checked and migrated.
const MIGRATION_LOCK: i64 = 0x696e_6765_7374_6431;

/// The database's clock in Unix milliseconds: leases are judged by one
/// clock, whatever the nodes' own say.
pub(super) const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How to reach the journal's database and who this node is.
#[derive(Clone)]
pub struct PgTarget {
    /// The URL as configured (it may hold a password: never shown).
    pub url: String,
    /// The URL with any password replaced, for messages.
    pub shown: String,
    pub password: Option<String>,
    pub node: String,
    pub lease: Duration,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.shown)
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish()
    }
}

impl From<&PgJournalSettings> for PgTarget {
    fn from(p: &PgJournalSettings) -> PgTarget {
        PgTarget {
            url: p.url.clone(),
            shown: p.redacted_url(),
            password: p.password.as_ref().map(|s| s.expose().to_owned()),
            node: p.node.clone(),
            lease: p.lease,
        }
    }
}

/// This node's part of a shared journal: its name, its lease length, and
/// the epoch of each file it holds.
#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) node: String,
    pub(super) lease_ms: i64,
    /// Held files: id → the epoch its claim set.
    pub(super) leases: HashMap<i64, i64>,
    /// Files whose lease this node lost, with the epoch it had: every later
    /// write of those attempts stays fenced (until this node claims one again).
    pub(super) lost: HashMap<i64, i64>,
    /// Whether the uploads this node left `uploading` in its previous run
    /// were put back in the queue (at start-up); from then on only expired
    /// leases are taken over.
    pub(super) swept_own: bool,
    /// Leases given up by a write whose transaction has not committed yet:
    /// forgotten only once it has (a rollback keeps them).
    pub(super) forget_on_commit: Vec<i64>,
    /// When this connection was made: for a lease after it, this node takes
    /// over nobody's files (a database that was away for longer than a
    /// lease left every live node's leases expired; they renew first).
    pub(super) connected_at: std::time::Instant,
    target: PgTarget,
}

fn connect(target: &PgTarget) -> Result<postgres::Client, JournalError> {
    let mut config: postgres::Config =
        target
            .url
            .parse()
            .map_err(|e: postgres::Error| JournalError::Connect {
                url: target.shown.clone(),
                cause: pg_words(&e),
                todo: "check journal.url",
            })?;
    if let Some(p) = &target.password {
        config.password(p);
    }
    config.connect_timeout(Duration::from_secs(10));
    config.application_name(&format!("ingestd {}", target.node));
    config
        .connect(tls(target)?)
        .map_err(|e| JournalError::Connect {
            url: target.shown.clone(),
            todo: if e.as_db_error().is_some_and(|d| d.code().code() == "28P01") {
                "the password was refused: check journal.password_file (or \
                 $CREDENTIALS_DIRECTORY/journal-password)"
            } else if pg_words(&e).contains("TLS") {
                "the database's certificate is not trusted here, or TLS failed: add its \
                 authority to the system trust store or set SSL_CERT_FILE (for the service, a \
                 drop-in with Environment=SSL_CERT_FILE=…), or give the URL sslmode=disable on \
                 a network you trust"
            } else if e.as_db_error().is_some() {
                "check journal.url (the user, the database) and the server's pg_hba.conf"
            } else {
                "check that the server runs and that journal.url names its host and port"
            },
            cause: pg_words(&e),
        })
}

/// TLS to the database, with the certificates this machine trusts (the
/// system store, or `SSL_CERT_FILE`), as for api.video. Whether it is used
/// is the URL's `sslmode`: `prefer` (the default) when the server offers
/// it, `require` always, `disable` never.
fn tls(target: &PgTarget) -> Result<tokio_postgres_rustls::MakeRustlsConnect, JournalError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map(|b| tokio_postgres_rustls::MakeRustlsConnect::new(b.with_no_client_auth()))
        .map_err(|e| JournalError::Connect {
            url: target.shown.clone(),
            cause: format!("cannot set up TLS: {e}"),
            todo: "check the system's trust store (or SSL_CERT_FILE)",
        })
}

/// The claim statement of a shared journal for a scope `filter` (see
/// `queries::scope_filter`): ?1 now, ?2 the horizon past which a retry's
/// time counts as due, ?3 this node, ?4 its lease (ms).
pub(super) fn claim_leased_sql(filter: &str) -> String {
    let returning: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("f.{}", c.trim()))
        .collect();
    // The two arms of the SQLite claim (`queries::claim_sql`): the fresh
    // one walks `files_by_queue` in order, the due retries are sorted
    // apart; each locks its candidate, and the one not taken is let go
    // when the statement commits.
    format!(
        "WITH fresh AS (SELECT id, queue_rank, queue_key FROM files \
           WHERE state = 'queued' AND next_attempt_at IS NULL {filter} \
           ORDER BY queue_rank, queue_key, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
         due AS (SELECT id, queue_rank, queue_key FROM files \
           WHERE state IN ('queued', 'retrying') AND next_attempt_at IS NOT NULL \
             AND (next_attempt_at <= ?1 OR next_attempt_at > ?2) {filter} \
           ORDER BY queue_rank, queue_key, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
         c AS (SELECT id FROM (SELECT * FROM fresh UNION ALL SELECT * FROM due) AS candidates \
           ORDER BY queue_rank, queue_key, id LIMIT 1) \
         UPDATE files AS f SET state = 'uploading', started_at = ?1, updated_at = ?1, \
           owner = ?3, lease_until = {DB_NOW} + ?4, epoch = f.epoch + 1 \
         FROM c WHERE f.id = c.id RETURNING {}, f.epoch",
        returning.join(", ")
    )
}

impl Journal {
    /// The configured journal, to read it beside a running daemon
    /// (`status`): the SQLite file read-only, or the shared one as it is
    /// (never migrated from here).
    pub fn open_configured_read_only(j: &JournalSettings) -> Result<Journal, JournalError> {
        match &j.postgres {
            None => Journal::open_read_only(&j.path),
            Some(p) => Journal::connect_postgres(&PgTarget::from(p), false),
        }
    }

    /// For `check-config`: connects to the shared journal and reads its
    /// schema version (0: an empty database, set up at the first start),
    /// with the version this ingestd writes. Changes nothing.
    pub fn postgres_schema(target: &PgTarget) -> Result<(i64, usize), JournalError> {
        let journal = Journal {
            conn: Conn::Pg(Box::new(RefCell::new(PgConn::new(connect(target)?)))),
            path: PathBuf::from(&target.shown),
            outbox: Default::default(),
            cluster: None,
        };
        Ok((journal.pg_version()?, PG_MIGRATIONS.len()))
    }

    /// Connects to the journal in PostgreSQL, refusing a database that is
    /// not ingestd's or one with a newer schema, and applies the migrations.
    pub fn open_postgres(target: &PgTarget) -> Result<Journal, JournalError> {
        Journal::connect_postgres(target, true)
    }

    /// [`Journal::open_postgres`]; without `migrate`, a database without the
    /// schema this ingestd writes is refused instead of set up.
    fn connect_postgres(target: &PgTarget, migrate: bool) -> Result<Journal, JournalError> {
        let client = connect(target)?;
        let mut journal = Journal {
            conn: Conn::Pg(Box::new(RefCell::new(PgConn::new(client)))),
            path: PathBuf::from(&target.shown),
            outbox: Default::default(),
            cluster: Some(Cluster {
                node: target.node.clone(),
                lease_ms: i64::try_from(target.lease.as_millis()).unwrap_or(i64::MAX),
                leases: HashMap::new(),
                lost: HashMap::new(),
                swept_own: false,
                forget_on_commit: Vec::new(),
                connected_at: std::time::Instant::now(),
                target: target.clone(),
            }),
        };
        if migrate {
            journal.migrate_postgres()?;
        } else {
            let version = journal.pg_version()?;
            if version == 0 {
                return Err(JournalError::ForeignDatabase {
                    url: target.shown.clone(),
                    reason: "it holds no journal yet: nothing has been journaled there \
                             (`ingestd run` sets it up)"
                        .into(),
                });
            }
            if version > PG_MIGRATIONS.len() as i64 {
                return Err(JournalError::DatabaseTooNew {
                    url: target.shown.clone(),
                    found: version,
                    supported: PG_MIGRATIONS.len(),
                });
            }
        }
        Ok(journal)
    }

    /// The schema version of the journal's database: 0 when it has none.
    /// A database holding other tables and no version is not ingestd's.
    fn pg_version(&self) -> Result<i64, JournalError> {
        let has_table = self
            .scalar(
                "inspect schema",
                "SELECT count(*) FROM pg_catalog.pg_tables \
                 WHERE schemaname = current_schema() AND tablename = 'ingestd_schema'",
                &[],
            )?
            .unwrap_or(0)
            > 0;
        if has_table {
            return Ok(self
                .scalar(
                    "read schema version",
                    "SELECT max(version) FROM ingestd_schema",
                    &[],
                )?
                .unwrap_or(0));
        }
        let foreign = self
            .scalar(
                "inspect schema",
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
                &[],
            )?
            .unwrap_or(0);
        if foreign > 0 {
            return Err(JournalError::ForeignDatabase {
                url: self.path.display().to_string(),
                reason: format!("it holds {foreign} tables of another program"),
            });
        }
        Ok(0)
    }

    fn migrate_postgres(&mut self) -> Result<(), JournalError> {
        self.atomically(|j| {
            j.exec(
                "lock the schema",
                "SELECT pg_advisory_xact_lock(?1)::text",
                args![MIGRATION_LOCK],
            )?;
            let version = j.pg_version()?;
            let supported = PG_MIGRATIONS.len();
            if version > supported as i64 {
                return Err(JournalError::DatabaseTooNew {
                    url: j.path.display().to_string(),
                    found: version,
                    supported,
                });
            }
            if version == 0 {
                j.batch(
                    "set up the schema",
                    "CREATE TABLE ingestd_schema (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
                )?;
            }
            let first = usize::try_from(version).unwrap_or(0);
            for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(first) {
                j.batch("migrate the journal", sql)?;
                j.exec(
                    "migrate the journal",
                    &format!("INSERT INTO ingestd_schema (version, applied_at) VALUES (?1, {DB_NOW})"),
                    args![i as i64 + 1],
                )?;
            }
            Ok(())
        })
    }

    /// This node's name in a shared journal.
    pub fn node(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.node.as_str())
    }

    /// Claims the next due file in queue order `FOR UPDATE SKIP LOCKED`
    /// (nodes claiming at once each get another file), taking its lease and
    /// raising its epoch.
    pub(super) fn claim_leased(
        &mut self,
        now: i64,
        horizon: i64,
        filter: &str,
    ) -> Result<Option<FileRow>, JournalError> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let sql = claim_leased_sql(filter);
        let (node, lease) = (cluster.node.clone(), cluster.lease_ms);
        const OP: &str = "claim a file";
        let rows = self.rows(OP, &sql, args![now, horizon, node, lease])?;
        let claimed = self.map_rows(OP, rows, |r| {
            Ok((
                super::row::row_to_file(r)?,
                r.i64(super::row::COLUMN_COUNT)?,
            ))
        })?;
        Ok(claimed.into_iter().next().map(|(row, epoch)| {
            if let Some(c) = &mut self.cluster {
                c.lost.remove(&row.id);
                c.leases.insert(row.id, epoch);
            }
            row
        }))
    }

    /// In a shared journal, the fencing condition of a write that may find
    /// `id` uploading: when this node holds it, the row must still have
    /// the epoch of this node's claim (bound as the `n`th argument);
    /// otherwise the row must not be uploading (another node's upload).
    pub(super) fn fence(&self, id: i64, n: usize) -> Option<(String, Option<Value>)> {
        let cluster = self.cluster.as_ref()?;
        Some(match cluster.leases.get(&id).or(cluster.lost.get(&id)) {
            // Whatever its state now: a file taken over and queued, or
            // retrying on another node, is not this attempt's any more.
            Some(&epoch) => (format!(" AND epoch = ?{n}"), Some(Value::Int(epoch))),
            None => (" AND state <> 'uploading'".to_owned(), None),
        })
    }

    /// After a fenced write that changed nothing: the lease was lost if the
    /// row's epoch is not the one this node's claim set.
    pub(super) fn lost_lease(&mut self, id: i64) -> Result<bool, JournalError> {
        let Some(held) = self
            .cluster
            .as_ref()
            .and_then(|c| c.leases.get(&id).or(c.lost.get(&id)).copied())
        else {
            return Ok(false);
        };
        let epoch = self.scalar(
            "check a lease",
            "SELECT epoch FROM files WHERE id = ?1",
            args![id],
        )?;
        if epoch != Some(held) {
            if let Some(c) = &mut self.cluster {
                c.leases.remove(&id);
                c.lost.insert(id, held);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The attempt on `id` is over (the row left `uploading`): forgotten
    /// now, or, inside a transaction, once it commits.
    pub(super) fn forget_lease(&mut self, id: i64) {
        let open = self.in_transaction();
        if let Some(c) = &mut self.cluster {
            if open {
                c.forget_on_commit.push(id);
            } else {
                c.leases.remove(&id);
            }
        }
    }

    /// The outermost transaction committed (`true`) or rolled back.
    pub(super) fn settle_leases(&mut self, committed: bool) {
        if let Some(c) = &mut self.cluster {
            for id in std::mem::take(&mut c.forget_on_commit) {
                if committed {
                    c.leases.remove(&id);
                }
            }
        }
    }

    /// Renews every lease this node holds; the files whose lease was lost
    /// (taken over while this node was silent), which it must stop sending.
    pub fn renew_leases(&mut self) -> Result<Vec<i64>, JournalError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Vec::new());
        };
        let (node, lease) = (cluster.node.clone(), cluster.lease_ms);
        // Only the files a worker of this process holds, each under the
        // epoch of its claim: a row this node owns and holds no more (a
        // claim whose reply was lost) runs out and is taken over.
        let held: Vec<String> = cluster
            .leases
            .iter()
            .map(|(id, epoch)| format!("({id},{epoch})"))
            .collect();
        const OP: &str = "renew leases";
        let held = if held.is_empty() {
            Vec::new()
        } else {
            let rows = self.rows(
                OP,
                &format!(
                    "UPDATE files SET lease_until = {DB_NOW} + ?2 \
                     WHERE owner = ?1 AND state = 'uploading' AND (id, epoch) IN ({}) \
                     RETURNING id, epoch",
                    held.join(",")
                ),
                args![node.as_str(), lease],
            )?;
            self.map_rows(OP, rows, |r| Ok((r.i64(0)?, r.i64(1)?)))?
        };
        self.exec(
            OP,
            &format!("UPDATE nodes SET heartbeat_at = {DB_NOW} WHERE name = ?1"),
            args![node.as_str()],
        )?;
        let held: HashMap<i64, i64> = held.into_iter().collect();
        let mut lost = Vec::new();
        if let Some(c) = &mut self.cluster {
            c.leases.retain(|id, epoch| {
                let kept = held.get(id) == Some(epoch);
                if !kept {
                    lost.push((*id, *epoch));
                }
                kept
            });
            c.lost.extend(lost.iter().copied());
        }
        let mut lost: Vec<i64> = lost.into_iter().map(|(id, _)| id).collect();
        lost.sort_unstable();
        Ok(lost)
    }

    /// The `WHERE` condition, beside `state = 'uploading'`, of the files
    /// whose upload was interrupted: in SQLite every one (the process that
    /// held them is gone); in a shared journal those whose lease ran out,
    /// and at start-up this node's own (from its previous run).
    pub(super) fn interrupted_filter(&self) -> String {
        match &self.cluster {
            None => String::new(),
            Some(c) if !c.swept_own => format!(
                " AND (owner = '{}' OR lease_until IS NULL OR lease_until < {DB_NOW})",
                c.node.replace('\'', "''")
            ),
            // Connected for less than a lease (just back after the database
            // was away): the other nodes may not have renewed yet.
            Some(c) if (c.connected_at.elapsed().as_millis() as i64) < c.lease_ms => {
                " AND false".to_owned()
            }
            Some(_) => format!(" AND (lease_until IS NULL OR lease_until < {DB_NOW})"),
        }
    }

    /// The `SET` assignments that end a row's lease and fence off the
    /// attempt that held it (a shared journal); nothing in SQLite.
    pub(super) fn unlease(&self) -> &'static str {
        if self.is_postgres() {
            ", lease_until = NULL, epoch = epoch + 1"
        } else {
            ""
        }
    }

    /// This node's own interrupted uploads are back in the queue.
    pub(super) fn swept_own(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.swept_own = true;
        }
    }

    /// Connects again after the database was lost (statements prepared on
    /// the old connection go with it, and so does any open transaction).
    pub(super) fn reconnect(&mut self) -> Result<(), JournalError> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let client = connect(&c.target)?;
        self.conn = Conn::Pg(Box::new(RefCell::new(PgConn::new(client))));
        if let Some(c) = &mut self.cluster {
            c.connected_at = std::time::Instant::now();
        }
        Ok(())
    }
}
