//! A background `ingestd` whose output is collected as it comes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{signal, wait_until, Env, Ns};

/// How long a daemon may take to finish its first scan on a loaded machine.
const READY: Duration = Duration::from_secs(30);
/// How long it may take to stop on SIGTERM (a drain is bounded at 35 s).
const STOP: Duration = Duration::from_secs(40);

/// Removes ANSI colour sequences, so log lines can be searched as text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running `ingestd` whose stdout and stderr are collected as they come
/// (so a chatty daemon never blocks on a full pipe, and a test can wait for
/// a log line). Dropping it kills the process.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn spawn(env: &Env, args: &[&str]) -> Daemon {
        Daemon::from_child(env.spawn(args))
    }

    /// `ingestd ARGS…` inside the mount namespace `ns` (with `env.cmd`'s
    /// environment). nsenter execs it: `child.id()` is ingestd's pid.
    pub fn spawn_in(env: &Env, ns: &Ns, args: &[&str]) -> Daemon {
        let child = ns
            .wrap(&env.cmd(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon::from_child(child)
    }

    /// Collects the output of a child spawned with piped stdout and stderr.
    pub fn from_child(mut child: Child) -> Daemon {
        let log = Arc::new(Mutex::new(String::new()));
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = streams
            .into_iter()
            .map(|stream| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(stream);
                    let mut line = Vec::new();
                    while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        log.lock().unwrap().push_str(&text);
                        line.clear();
                    }
                })
            })
            .collect();
        Daemon {
            child,
            log,
            readers,
        }
    }

    /// `ingestd run`, once its first scan is done.
    pub fn ready(env: &Env) -> Daemon {
        Daemon::spawn(env, &["run"]).first_scan()
    }

    /// `ingestd run` inside the mount namespace `ns`, once its first scan is done.
    pub fn ready_in(env: &Env, ns: &Ns) -> Daemon {
        Daemon::spawn_in(env, ns, &["run"]).first_scan()
    }

    fn first_scan(self) -> Daemon {
        let d = self;
        assert!(
            d.wait_log("first scan done", READY),
            "the daemon never finished its first scan:\n{}",
            d.log()
        );
        d
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How many times `needle` appears in the log.
    pub fn count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().matches(needle).count()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log.lock().unwrap().contains(needle))
    }

    /// The first log line holding every part, if any.
    pub fn line_with(&self, parts: &[&str]) -> Option<String> {
        self.log()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit by itself; its exit code and output.
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("ingestd did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status.code(), self.log())
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(self) -> (Option<i32>, String) {
        signal(&self.child, 15);
        self.wait(STOP)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops the daemon and checks that it exits 0; its log.
pub fn stop_ok(d: Daemon) -> String {
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "SIGTERM must end the daemon cleanly:\n{log}");
    log
}
