//! A throwaway PostgreSQL server for tests: `initdb` into a temp dir, a
//! postmaster on a free loopback port, a unix socket in the same temp dir.
//!
//! Self-contained (std, `libc`, `tempfile` only): it is also included from
//! unit tests in src via `#[path = "../../../tests/common/pg.rs"] mod pg;`.
//!
//! - `shared()` starts one server per test process. `None` means PostgreSQL
//!   is not installed (a loud SKIPPED banner goes to stderr, uncaptured);
//!   with `INGESTD_REQUIRE_POSTGRES=1` that is a panic instead.
//! - Roles: the superuser `postgres` (trust, unix socket only; `psql` uses
//!   it) and `ingestd` (LOGIN, a random password, scram-sha-256 over TCP on
//!   127.0.0.1, so a wrong password is refused).
//! - Binaries: `$INGESTD_PG_BINDIR` if set (an empty dir makes PostgreSQL
//!   "not installed"), else `pg_config --bindir`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH` — whichever holds `initdb`.
//! - As root (initdb refuses to run as root) the server runs as the
//!   `postgres` system user through `runuser`, in a temp dir owned by it.
//! - Rust runs no destructors for statics, so each server has a watcher
//!   (`sh`, its stdio on /dev/null, its own process group, deaf to
//!   SIGINT/SIGHUP/SIGTERM) that polls the test process with `kill -0`; when
//!   it is gone, the watcher sends SIGQUIT (immediate shutdown) to the
//!   postmaster named in `postmaster.pid` at that moment and removes the
//!   temp dir.
//! - `restart`/`stop`/`start` act on the whole server: on `shared()` they
//!   disturb every test of the process using it at that moment. Tests that
//!   do so must keep the others out (e.g. a `RwLock` in the test file), or
//!   use a server of their own (`private()`, stopped and removed on drop).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Set to `1`: a missing PostgreSQL is a failure, not a skip.
pub const REQUIRE_ENV: &str = "INGESTD_REQUIRE_POSTGRES";
/// Overrides where `initdb`, `pg_ctl`, `pg_isready` (and `psql`) are looked for.
pub const BINDIR_ENV: &str = "INGESTD_PG_BINDIR";
/// The superuser, reached over the unix socket without a password.
pub const SUPERUSER: &str = "postgres";
/// The role tests connect as over TCP, with a password.
pub const ROLE: &str = "ingestd";

/// How long a start (or restart) may take to accept connections.
const READY: Duration = Duration::from_secs(60);
/// How many ports to try when the one picked was taken meanwhile.
const PORT_TRIES: usize = 5;
/// The system user the server runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

pub struct PgServer {
    port: u16,
    /// The temp dir: `data/` (the cluster), `log`, and the unix socket.
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<String>,
    password: String,
    next_db: AtomicU64,
    /// Serializes restart/stop/start.
    control: Mutex<()>,
    watcher: Mutex<Option<Child>>,
    /// A private server is stopped and removed on drop.
    private: bool,
}

/// A database owned by `ingestd`. `url` carries no password.
pub struct PgDb {
    pub name: String,
    /// `postgresql://ingestd@127.0.0.1:PORT/NAME`
    pub url: String,
    pub password: String,
}

enum Outcome {
    Ready(PgServer),
    /// PostgreSQL is not installed: the reason.
    Missing(String),
    /// It is installed but would not start: the reason, with the log tail.
    Failed(String),
}

/// The process's server, started on first use. `None` (after a loud
/// banner on stderr) when PostgreSQL is not installed, unless
/// `INGESTD_REQUIRE_POSTGRES=1`: then, as on any other failure, it panics.
pub fn shared() -> Option<&'static PgServer> {
    static SHARED: OnceLock<Outcome> = OnceLock::new();
    match SHARED.get_or_init(|| launch(false)) {
        Outcome::Ready(pg) => Some(pg),
        Outcome::Missing(why) => skip(why),
        Outcome::Failed(why) => panic!("{why}"),
    }
}

/// A server of the caller's own (for tests that stop or restart it while
/// nothing else may use it); stopped and removed when dropped. `None` and
/// panics as for `shared()`.
pub fn private() -> Option<PgServer> {
    match launch(true) {
        Outcome::Ready(pg) => Some(pg),
        Outcome::Missing(why) => skip(&why),
        Outcome::Failed(why) => panic!("{why}"),
    }
}

fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1")
}

fn skip<T>(why: &str) -> Option<T> {
    if required() {
        panic!("{REQUIRE_ENV}=1 but PostgreSQL cannot be used: {why}");
    }
    static BANNER: Once = Once::new();
    BANNER.call_once(|| {
        // Straight to fd 2: the test harness captures eprintln!, and a
        // passing (skipped) test would show nothing.
        let banner = format!(
            "\n!!!!!!!!!!\n\
             !!! SKIPPED: the PostgreSQL tests do NOT run: {why}\n\
             !!! Set {REQUIRE_ENV}=1 to make this a failure.\n\
             !!!!!!!!!!\n"
        );
        let _ = std::io::stderr().lock().write_all(banner.as_bytes());
    });
    None
}

impl PgServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `ingestd` role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory of the unix socket (`psql -h` takes it).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// `CREATE DATABASE <prefix>_<n> OWNER ingestd`, `n` unique in this server.
    pub fn fresh_database(&self, prefix: &str) -> PgDb {
        let mut clean: String = prefix
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '_' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .take(40)
            .collect();
        if clean.is_empty() || clean.starts_with(|c: char| c.is_ascii_digit()) {
            clean.insert_str(0, "db_");
        }
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("{clean}_{n}");
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER {ROLE}"),
        );
        PgDb {
            url: format!("postgresql://{ROLE}@127.0.0.1:{}/{name}", self.port),
            password: self.password.clone(),
            name,
        }
    }

    /// Runs `sql` (any number of statements) in database `db` as the
    /// superuser over the unix socket; stdout of `psql -At` (results only,
    /// no command tags). Panics with stderr when a statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = self.psql_command();
        c.arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db]);
        let out = run_with_stdin(c, sql)
            .unwrap_or_else(|e| panic!("cannot run psql: {e}\n--- sql\n{sql}"));
        if !out.status.success() {
            panic!(
                "psql failed ({}) in database {db}\n--- sql\n{sql}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `psql -X -q -At -v ON_ERROR_STOP=1` command with no PG* variables
    /// from the outside and a connect timeout; add the connection options.
    pub fn psql_command(&self) -> Command {
        let local = self.bin.join("psql");
        let mut c = Command::new(if is_executable(&local) {
            local.as_os_str()
        } else {
            OsStr::new("psql")
        });
        clean_env(&mut c);
        c.env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        c
    }

    /// `pg_ctl restart -m fast`; returns once it accepts connections again.
    pub fn restart(&self) {
        let _g = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.log_len();
        let out = self.pg_ctl(&["restart", "-m", "fast"]);
        if !out.status.success() {
            panic!("pg_ctl restart failed: {}", self.failure(&out, mark));
        }
        self.wait_ready(mark);
    }

    /// `pg_ctl stop -m fast`: refused connections until `start()`.
    pub fn stop(&self) {
        let _g = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.log_len();
        let out = self.pg_ctl(&["stop", "-m", "fast"]);
        if !out.status.success() {
            panic!("pg_ctl stop failed: {}", self.failure(&out, mark));
        }
    }

    /// Starts it again after `stop()`; returns once it accepts connections.
    pub fn start(&self) {
        let _g = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.log_len();
        let out = self.pg_ctl(&["start"]);
        if !out.status.success() {
            panic!("pg_ctl start failed: {}", self.failure(&out, mark));
        }
        self.wait_ready(mark);
    }

    /// Accepting connections (over the unix socket) right now?
    pub fn is_ready(&self) -> bool {
        let mut c = self.tool("pg_isready");
        c.arg("-q")
            .arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-t", "5"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    }

    fn wait_ready(&self, mark: u64) {
        let deadline = Instant::now() + READY;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                panic!(
                    "PostgreSQL on port {} does not accept connections after {READY:?}\n--- log\n{}",
                    self.port,
                    self.log_since(mark)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command of the server's bin dir, as the server's user.
    fn tool(&self, name: &str) -> Command {
        tool(&self.bin, self.run_as.as_deref(), &self.root, name)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut c = self.tool("pg_ctl");
        c.args(args)
            .arg("-D")
            .arg(&self.data)
            // Always -l: without it the postmaster writes to (and holds
            // open) pg_ctl's stdout, which is ours.
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", &READY.as_secs().to_string()]);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"))
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte `mark` on (its last 60 lines).
    fn log_since(&self, mark: u64) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        let from = (mark as usize).min(all.len());
        tail(&String::from_utf8_lossy(&all[from..]), 60)
    }

    fn failure(&self, out: &Output, mark: u64) -> String {
        format!(
            "{}\n--- stdout\n{}\n--- stderr\n{}\n--- log ({})\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log.display(),
            self.log_since(mark)
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.private {
            return;
        }
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        if let Some(mut w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn launch(private: bool) -> Outcome {
    let bin = match find_bindir() {
        Ok(b) => b,
        Err(why) => return Outcome::Missing(why),
    };
    match start_server(bin, private) {
        Ok(pg) => Outcome::Ready(pg),
        Err(why) => Outcome::Failed(format!("cannot start a test PostgreSQL: {why}")),
    }
}

fn start_server(bin: PathBuf, private: bool) -> Result<PgServer, String> {
    let root_user = unsafe { libc::geteuid() } == 0;
    let run_as = root_user.then(|| SYSTEM_USER.to_owned());
    let root = make_root(run_as.as_deref())?;
    let watcher = spawn_watcher(&root)?;
    let data = root.join("data");
    let log = root.join("log");
    let mut pg = PgServer {
        port: 0,
        data,
        log,
        bin,
        run_as,
        password: random_hex(16)?,
        next_db: AtomicU64::new(1),
        control: Mutex::new(()),
        watcher: Mutex::new(Some(watcher)),
        private,
        root,
    };

    let mut c = pg.tool("initdb");
    c.arg("-D")
        .arg(&pg.data)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"]);
    let out = c.output().map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let conf = pg.data.join("postgresql.conf");
    append(&conf, "\ninclude_if_exists = 'ingestd_test.conf'\n")?;
    write_as(
        &pg.data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )?;

    let mut last = String::new();
    for _ in 0..PORT_TRIES {
        pg.port = free_port()?;
        let settings = format!(
            "port = {}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            pg.port,
            pg.root.display()
        );
        write_as(&pg.data.join("ingestd_test.conf"), &settings)?;
        let mark = pg.log_len();
        let out = pg.pg_ctl(&["start"]);
        if out.status.success() {
            let deadline = Instant::now() + READY;
            while !pg.is_ready() {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no connections accepted after {READY:?}\n--- log\n{}",
                        pg.log_since(mark)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let sql = format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'", pg.password);
            let mut c = pg.psql_command();
            c.arg("-h")
                .arg(&pg.root)
                .arg("-p")
                .arg(pg.port.to_string())
                .args(["-U", SUPERUSER, "-d", "postgres"]);
            let out = run_with_stdin(c, &sql).map_err(|e| format!("cannot run psql: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot create the role {ROLE}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            return Ok(pg);
        }
        last = pg.failure(&out, mark);
        if !last.contains("Address already in use") {
            break;
        }
    }
    Err(format!("pg_ctl start failed: {last}"))
}

/// The temp dir (short: the socket path must stay under ~100 bytes),
/// owned by `run_as` if given.
fn make_root(run_as: Option<&str>) -> Result<PathBuf, String> {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let dir = tempfile::Builder::new()
        .prefix("ingestd-pg-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", base.display()))?
        .keep();
    if let Some(user) = run_as {
        let (uid, gid) = user_ids(user)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot chown {} to {user}: {e}", dir.display()))?;
    }
    Ok(dir)
}

fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let name = std::ffi::CString::new(user).unwrap();
    // Only read at once; getpwnam's static buffer is not kept.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "running as root, and initdb refuses root, but there is no `{user}` user to run it as"
        ));
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// The watcher: once the test process is gone, an immediate shutdown of
/// the postmaster of the moment, then the temp dir removed.
fn spawn_watcher(root: &Path) -> Result<Child, String> {
    // Killed mid-start, the test may leave an initdb or pg_ctl running
    // that creates files (or a postmaster) after the first look: so until
    // no process works in the temp dir (they all run there, the
    // postmaster in data/), stop any postmaster named in its pid file.
    const SCRIPT: &str = r#"
trap '' INT HUP TERM
while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
n=0
while [ "$n" -lt 120 ]; do
    pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
    case "$pid" in
    ''|*[!0-9]*) ;;
    *)
        kill -QUIT "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
        kill -KILL "$pid" 2>/dev/null
        ;;
    esac
    busy=
    for cwd in /proc/[0-9]*/cwd; do
        case "$(readlink "$cwd" 2>/dev/null)" in
        "$2"|"$2"/*) busy=1; break ;;
        esac
    done
    [ -z "$busy" ] && break
    sleep 0.5
    n=$((n+1))
done
rm -rf "$2"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("pg-watcher")
        .arg(std::process::id().to_string())
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the watcher (sh): {e}"))
}

/// `dir/name` (or `name` from PATH when `dir` lacks it), as `run_as`
/// through runuser, in `cwd`, with stdin on /dev/null and no PG* variables.
fn tool(dir: &Path, run_as: Option<&str>, cwd: &Path, name: &str) -> Command {
    let local = dir.join(name);
    let prog = if is_executable(&local) {
        local.into_os_string()
    } else {
        name.into()
    };
    let mut c = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(prog);
            c
        }
        None => Command::new(prog),
    };
    clean_env(&mut c);
    c.current_dir(cwd).stdin(Stdio::null());
    c
}

fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"PG") {
            c.env_remove(k);
        }
    }
    c.env("LC_ALL", "C");
}

fn run_with_stdin(mut c: Command, input: &str) -> std::io::Result<Output> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Written from a thread: a large result must not deadlock against it.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    out
}

/// Where initdb is: see the module doc.
fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        return if is_executable(&dir.join("initdb")) {
            Ok(dir)
        } else {
            Err(format!(
                "PostgreSQL's initdb not found in {BINDIR_ENV}={}; install postgresql \
                 (Debian: apt-get install postgresql)",
                dir.display()
            ))
        };
    }
    let mut looked = Vec::new();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_executable(&dir.join("initdb")) {
                return Ok(dir);
            }
            looked.push(format!("{} (pg_config --bindir)", dir.display()));
        }
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let bin = e.path().join("bin");
            let version = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    looked.push("/usr/lib/postgresql/*/bin".into());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if is_executable(&dir.join("initdb")) {
                return Ok(dir);
            }
        }
    }
    looked.push("PATH".into());
    Err(format!(
        "PostgreSQL's initdb not found (looked in {}); install postgresql \
         (Debian: apt-get install postgresql)",
        looked.join(", ")
    ))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Rewrites a file in the data dir, keeping its owner (the server's user).
fn write_as(p: &Path, text: &str) -> Result<(), String> {
    // Truncating an existing file keeps its owner and mode; a new one
    // takes the owner of the data dir.
    let existed = p.exists();
    std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    if !existed {
        own_like_parent(p)?;
    }
    Ok(())
}

fn append(p: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", p.display()))
}

fn own_like_parent(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let parent = p.parent().unwrap_or(Path::new("/"));
    let m = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let mine = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if (mine.uid(), mine.gid()) != (m.uid(), m.gid()) {
        std::os::unix::fs::chown(p, Some(m.uid()), Some(m.gid()))
            .map_err(|e| format!("cannot chown {}: {e}", p.display()))?;
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", p.display()))
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
