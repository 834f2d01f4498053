//! The nodes of a shared journal: a node's registration (one process per
//! name), the lead of each watch folder (one node scans it), the lock that
//! serialises journaling a path, and what `status` lists of the nodes. The
//! leases of the files themselves are `postgres`'s.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::postgres::DB_NOW;
use super::sql::args;
use super::{Journal, JournalError};

/// A node of a shared journal, as `status --nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    pub name: String,
    pub host: String,
    pub pid: i64,
    /// Unix milliseconds (the database's clock).
    pub started_at: i64,
    /// How long ago it last renewed its leases.
    pub heard_ms_ago: i64,
    /// The files it holds now: id and path.
    pub uploading: Vec<(i64, PathBuf)>,
}

/// This process's pid namespace (`pid:[4026531836]`), which tells whether
/// a pid recorded by another process means anything here.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl Journal {
    /// In a shared journal, the node holding (or that last held) each file
    /// that has been claimed; empty in SQLite.
    pub fn file_nodes(&self) -> Result<HashMap<i64, String>, JournalError> {
        if !self.is_postgres() {
            return Ok(HashMap::new());
        }
        const OP: &str = "list the nodes of the files";
        let rows = self.rows(
            OP,
            "SELECT id, owner FROM files WHERE owner IS NOT NULL",
            &[],
        )?;
        Ok(self
            .map_rows(OP, rows, |r| Ok((r.i64(0)?, r.text(1)?)))?
            .into_iter()
            .collect())
    }

    /// Every node that ran on this shared journal, with when it was last
    /// heard from and the files it holds now (`status --nodes`).
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, JournalError> {
        const OP: &str = "list the nodes";
        let rows = self.rows(
            OP,
            &format!(
                "SELECT name, host, pid, started_at, {DB_NOW} - heartbeat_at FROM nodes ORDER BY name"
            ),
            &[],
        )?;
        let mut nodes = self.map_rows(OP, rows, |r| {
            Ok(NodeRecord {
                name: r.text(0)?,
                host: r.text(1)?,
                pid: r.i64(2)?,
                started_at: r.i64(3)?,
                heard_ms_ago: r.i64(4)?,
                uploading: Vec::new(),
            })
        })?;
        let rows = self.rows(
            OP,
            "SELECT owner, id, root, rel_path FROM files \
             WHERE state = 'uploading' AND owner IS NOT NULL ORDER BY id",
            &[],
        )?;
        let held = self.map_rows(OP, rows, |r| {
            let path = super::row::path_from_blob(r.bytes(2)?)
                .join(super::row::path_from_blob(r.bytes(3)?));
            Ok((r.text(0)?, r.i64(1)?, path))
        })?;
        for (owner, id, path) in held {
            if let Some(n) = nodes.iter_mut().find(|n| n.name == owner) {
                n.uploading.push((id, path));
            }
        }
        Ok(nodes)
    }

    /// In a shared journal, serialises the transactions that journal a file
    /// at any of `paths` (root, relative path): locks held until this
    /// transaction ends, taken in one order (so two bursts never deadlock),
    /// so two nodes scanning at once find each other's row instead of adding
    /// a second. Nothing in SQLite, whose writers are one at a time anyway.
    pub(super) fn lock_paths<'p>(
        &self,
        paths: impl IntoIterator<Item = (&'p Path, &'p Path)>,
    ) -> Result<(), JournalError> {
        if !self.is_postgres() {
            return Ok(());
        }
        let mut keys: Vec<i64> = paths
            .into_iter()
            .map(|(root, rel)| {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(root.as_os_str().as_bytes());
                h.update(&[0]);
                h.update(rel.as_os_str().as_bytes());
                // A lock key is any 64-bit number: the hash's bits, reinterpreted.
                h.digest() as i64
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            self.exec(
                "lock a path",
                "SELECT pg_advisory_xact_lock(?1)::text",
                args![key],
            )?;
        }
        Ok(())
    }

    /// Registers this node, refusing when another process runs under the
    /// same name (it renewed within a lease, from another host or pid).
    pub fn register_node(&mut self, host: &str, pid: u32) -> Result<(), JournalError> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let (node, lease) = (c.node.clone(), c.lease_ms);
        self.atomically(|j| {
            const OP: &str = "register this node";
            let rows = j.rows(
                OP,
                &format!(
                    "SELECT host, pid, {DB_NOW} - heartbeat_at, pid_ns FROM nodes \
                     WHERE name = ?1 FOR UPDATE"
                ),
                args![node.as_str()],
            )?;
            let other = j.map_rows(OP, rows, |r| {
                Ok((r.text(0)?, r.i64(1)?, r.i64(2)?, r.opt_text(3)?))
            })?;
            let ns = pid_namespace();
            if let Some((h, p, ago, their_ns)) = other.into_iter().next() {
                // Heard from within a lease: another process runs under
                // this name, unless it is this one, or was on this host, in
                // this process namespace (a container sharing the host name
                // has pids of its own), and is gone (killed, and restarted
                // by systemd at once).
                let gone_here = h == host
                    && their_ns.is_some()
                    && their_ns == ns
                    && !Path::new(&format!("/proc/{p}")).exists();
                if ago < lease && !(h == host && p == i64::from(pid)) && !gone_here {
                    return Err(JournalError::NodeInUse {
                        node: node.clone(),
                        host: h,
                        pid: p,
                        ago_ms: ago,
                    });
                }
            }
            j.exec(
                OP,
                &format!(
                    "INSERT INTO nodes (name, host, pid, pid_ns, started_at, heartbeat_at) \
                     VALUES (?1, ?2, ?3, ?4, {DB_NOW}, {DB_NOW}) ON CONFLICT (name) DO UPDATE \
                     SET host = ?2, pid = ?3, pid_ns = ?4, started_at = {DB_NOW}, \
                     heartbeat_at = {DB_NOW}"
                ),
                args![node.as_str(), host, i64::from(pid), ns.clone()],
            )?;
            Ok(())
        })
    }

    /// Takes, or renews, the lead of each of `roots` that no other node
    /// holds (or whose leader went silent past a lease): the roots this
    /// node now scans. A clean stop gives them up ([`Journal::resign`]).
    pub fn lead_roots(&mut self, roots: &[PathBuf]) -> Result<Vec<PathBuf>, JournalError> {
        let Some(c) = &self.cluster else {
            return Ok(roots.to_vec());
        };
        let (node, lease) = (c.node.clone(), c.lease_ms);
        let sql = format!(
            "INSERT INTO leaders (root, node, lease_until) VALUES (?1, ?2, {DB_NOW} + ?3) \
             ON CONFLICT (root) DO UPDATE SET node = excluded.node, lease_until = excluded.lease_until \
             WHERE leaders.node = excluded.node OR leaders.lease_until < {DB_NOW} RETURNING node"
        );
        let mut led = Vec::new();
        for root in roots {
            let bytes = root.as_os_str().as_bytes();
            if self
                .row(
                    "lead a watch folder",
                    &sql,
                    args![bytes, node.as_str(), lease],
                )?
                .is_some()
            {
                led.push(root.clone());
            }
        }
        Ok(led)
    }

    /// A clean stop: this node's leads are given up, so another node scans
    /// its folders at once instead of after a lease.
    pub fn resign(&mut self) -> Result<(), JournalError> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let node = c.node.clone();
        self.exec(
            "give up the lead of the watch folders",
            "DELETE FROM leaders WHERE node = ?1",
            args![node.as_str()],
        )?;
        Ok(())
    }
}
