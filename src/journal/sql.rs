//! The one way the journal runs SQL, whichever database holds it: SQLite
//! (one machine) or PostgreSQL (several nodes). Statements are written once,
//! with `?N` placeholders (made `$N` for PostgreSQL); arguments are
//! [`Value`]s and rows come back as [`SqlRow`]s, so the methods above this
//! module never see a driver. It must not hold statements of its own beyond
//! the transaction keywords.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Journal, JournalError};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b]`: the arguments of a statement, `?1` and `?2`.
macro_rules! args {
    ($($e:expr),* $(,)?) => { &[$($crate::journal::sql::Value::from($e)),*][..] };
}
pub(crate) use args;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            // Integers are BIGINT in the schema; a parameter PostgreSQL
            // typed narrower (compared with a small literal) still fits.
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Why a statement failed, from either driver.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_words(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {index} is not {expected}")]
    Type {
        index: usize,
        expected: &'static str,
    },
}

/// A PostgreSQL error in words: the server's message with its detail, or
/// the client's own (a connection refused or lost).
pub(crate) fn pg_words(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cause = c.source();
            }
            s
        }
    }
}

impl DbError {
    pub(crate) fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            DbError::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        }
    }

    /// The database could not be reached, or the connection broke: the same
    /// statement may work once it is back.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            DbError::Postgres(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        // connection exceptions, operator intervention
                        // (admin shutdown, crash shutdown, cannot connect now)
                        c.starts_with("08") || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }
}

/// One row of a result, its columns in the statement's order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SqlRow(Vec<Value>);

impl SqlRow {
    /// The row's values, in the statement's column order.
    pub(super) fn into_values(self) -> Vec<Value> {
        self.0
    }

    fn at(&self, index: usize) -> &Value {
        self.0.get(index).unwrap_or(&Value::Null)
    }

    fn wrong(index: usize, expected: &'static str) -> DbError {
        DbError::Type { index, expected }
    }

    pub(crate) fn opt_i64(&self, index: usize) -> Result<Option<i64>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(SqlRow::wrong(index, "an integer")),
        }
    }

    pub(crate) fn i64(&self, index: usize) -> Result<i64, DbError> {
        self.opt_i64(index)?
            .ok_or_else(|| SqlRow::wrong(index, "an integer"))
    }

    pub(crate) fn u32(&self, index: usize) -> Result<u32, DbError> {
        u32::try_from(self.i64(index)?).map_err(|_| SqlRow::wrong(index, "a count"))
    }

    pub(crate) fn opt_text(&self, index: usize) -> Result<Option<String>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(SqlRow::wrong(index, "text")),
        }
    }

    pub(crate) fn text(&self, index: usize) -> Result<String, DbError> {
        self.opt_text(index)?
            .ok_or_else(|| SqlRow::wrong(index, "text"))
    }

    pub(crate) fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Blob(b) => Ok(Some(b.clone())),
            _ => Err(SqlRow::wrong(index, "bytes")),
        }
    }

    pub(crate) fn bytes(&self, index: usize) -> Result<Vec<u8>, DbError> {
        self.opt_bytes(index)?
            .ok_or_else(|| SqlRow::wrong(index, "bytes"))
    }

    fn from_sqlite(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<SqlRow> {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                // Reals are not in the schema; a count compared (`> 0`) is an integer.
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        Ok(SqlRow(values))
    }

    fn from_pg(row: &postgres::Row) -> Result<SqlRow, postgres::Error> {
        let mut values = Vec::with_capacity(row.len());
        for (i, col) in row.columns().iter().enumerate() {
            let v = match *col.type_() {
                Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map(|v| Value::Int(v.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map(|v| Value::Int(v.into())),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)?
                    .map(|v| Value::Int(v.into())),
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
                _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
            };
            values.push(v.unwrap_or(Value::Null));
        }
        Ok(SqlRow(values))
    }
}

/// A PostgreSQL connection with its prepared statements and how deep in
/// transactions it is (`BEGIN`, then savepoints).
pub(crate) struct PgConn {
    pub(super) client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
    depth: u32,
}

impl PgConn {
    pub(super) fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            statements: HashMap::new(),
            depth: 0,
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&dollar_placeholders(sql))?;
        // A handful of statements are built per call (id lists): keep the
        // cache from growing without bound.
        if self.statements.len() > 256 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

/// The connection a journal holds.
pub(super) enum Conn {
    Sqlite(rusqlite::Connection),
    Pg(Box<RefCell<PgConn>>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "sqlite",
            Conn::Pg(_) => "postgresql",
        })
    }
}

/// `?N` made `$N`, outside string literals.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        if c == '\'' {
            quoted = !quoted;
        }
        out.push(if c == '?' && !quoted { '$' } else { c });
    }
    out
}

fn params(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Journal {
    pub(super) fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::Pg(_))
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    pub(super) fn exec(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Value],
    ) -> Result<usize, JournalError> {
        let r = match &self.conn {
            Conn::Sqlite(c) => c
                .prepare_cached(sql)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(args)))
                .map_err(DbError::from),
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                c.statement(sql)
                    .and_then(|st| c.client.execute(&st, &params(args)))
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                    .map_err(DbError::from)
            }
        };
        r.map_err(self.query_err(op))
    }

    /// Runs a query; every row, each with `n` columns.
    pub(super) fn rows(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Value],
    ) -> Result<Vec<SqlRow>, JournalError> {
        let r = match &self.conn {
            Conn::Sqlite(c) => c
                .prepare_cached(sql)
                .and_then(|mut st| {
                    let n = st.column_count();
                    st.query_map(rusqlite::params_from_iter(args), |r| {
                        SqlRow::from_sqlite(r, n)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(DbError::from),
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                c.statement(sql)
                    .and_then(|st| c.client.query(&st, &params(args)))
                    .and_then(|rows| rows.iter().map(SqlRow::from_pg).collect())
                    .map_err(DbError::from)
            }
        };
        r.map_err(self.query_err(op))
    }

    /// The first row of a query, if any.
    pub(super) fn row(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Value],
    ) -> Result<Option<SqlRow>, JournalError> {
        Ok(self.rows(op, sql, args)?.into_iter().next())
    }

    /// The first column of the first row, which must be there (an aggregate).
    pub(super) fn scalar(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Value],
    ) -> Result<Option<i64>, JournalError> {
        match self.row(op, sql, args)? {
            Some(r) => r.opt_i64(0).map_err(self.query_err(op)),
            None => Ok(None),
        }
    }

    /// Runs statements without arguments, separated by `;`.
    pub(super) fn batch(&self, op: &'static str, sql: &str) -> Result<(), JournalError> {
        let r = match &self.conn {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(DbError::from),
            Conn::Pg(c) => c
                .borrow_mut()
                .client
                .batch_execute(sql)
                .map_err(DbError::from),
        };
        r.map_err(self.query_err(op))
    }

    /// Converts rows with `f`, a conversion failure being the query's.
    pub(super) fn map_rows<T>(
        &self,
        op: &'static str,
        rows: Vec<SqlRow>,
        f: impl Fn(&SqlRow) -> Result<T, DbError>,
    ) -> Result<Vec<T>, JournalError> {
        rows.iter()
            .map(|r| f(r).map_err(self.query_err(op)))
            .collect()
    }

    /// Opens a transaction, or a savepoint inside the current one. True
    /// when it is the outermost.
    pub(super) fn begin(&self) -> Result<bool, JournalError> {
        match &self.conn {
            Conn::Sqlite(c) => {
                let outermost = c.is_autocommit();
                self.batch("begin a transaction", "SAVEPOINT atomically")?;
                Ok(outermost)
            }
            Conn::Pg(c) => {
                let depth = c.borrow().depth;
                // Read committed whatever the server's default: a statement
                // after a path lock must see what the lock waited for.
                let sql = if depth == 0 {
                    "BEGIN ISOLATION LEVEL READ COMMITTED"
                } else {
                    "SAVEPOINT atomically"
                };
                self.batch("begin a transaction", sql)?;
                c.borrow_mut().depth = depth + 1;
                Ok(depth == 0)
            }
        }
    }

    /// Commits what [`Journal::begin`] opened.
    pub(super) fn commit(&self, outermost: bool) -> Result<(), JournalError> {
        let sql = match (&self.conn, outermost) {
            (Conn::Pg(_), true) => "COMMIT",
            _ => "RELEASE atomically",
        };
        let r = self.batch("commit", sql);
        if let Conn::Pg(c) = &self.conn {
            if r.is_ok() {
                let mut c = c.borrow_mut();
                c.depth = c.depth.saturating_sub(1);
            }
        }
        r
    }

    /// Undoes what [`Journal::begin`] opened (best effort: the database may
    /// already have rolled back on its own, or be gone).
    pub(super) fn roll_back(&self, outermost: bool) {
        match &self.conn {
            Conn::Sqlite(c) => {
                if c.is_autocommit() {
                    return;
                }
                let _ = if outermost {
                    c.execute_batch("ROLLBACK")
                } else {
                    c.execute_batch("ROLLBACK TO atomically; RELEASE atomically")
                };
            }
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                let _ = if outermost {
                    c.client.batch_execute("ROLLBACK")
                } else {
                    c.client
                        .batch_execute("ROLLBACK TO atomically; RELEASE atomically")
                };
                c.depth = c.depth.saturating_sub(1);
                if outermost {
                    c.depth = 0;
                }
            }
        }
    }

    /// Whether a PostgreSQL transaction is open on this connection.
    pub(super) fn in_transaction(&self) -> bool {
        match &self.conn {
            Conn::Pg(c) => c.borrow().depth > 0,
            Conn::Sqlite(_) => false,
        }
    }

    /// A literal of `bytes` to inline in a statement (it cannot break out of it).
    pub(super) fn blob_literal(&self, bytes: &[u8]) -> String {
        let hex = crate::display::hex(bytes);
        match self.conn {
            Conn::Sqlite(_) => format!("X'{hex}'"),
            Conn::Pg(_) => format!("'\\x{hex}'::bytea"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_literals_only() {
        assert_eq!(
            dollar_placeholders("SELECT ?1, 'why?', ?2"),
            "SELECT $1, 'why?', $2"
        );
        assert_eq!(
            dollar_placeholders("SELECT 'it''s ?', ?3"),
            "SELECT 'it''s ?', $3"
        );
    }
}
