//! Whether a hook command can run here (for `check-config`): the program
//! its `argv[0]` names, looked up as the hook will be, and checked to exist
//! and be executable.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// For `check-config`: the program a hook command's `argv[0]` names. A name
/// without `/` is looked up in `PATH` (as it will be when the hook runs); a
/// path must be absolute, since hooks run from `/`. The program must exist,
/// be a file and be executable by this process's user. The answer holds for
/// the daemon when the check runs as its user, with its `PATH` (a shell's
/// is often longer than a unit's). The error says which and what to do.
pub(crate) fn check_command(argv0: &str) -> Result<PathBuf, String> {
    check_command_in(argv0, std::env::var_os("PATH").as_deref())
}

pub(super) fn check_command_in(argv0: &str, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    if argv0.is_empty() {
        return Err(
            "the command is empty: give the program to run (an absolute path, or a \
                    name found in PATH)"
                .to_owned(),
        );
    }
    if argv0.contains('/') {
        let path = Path::new(argv0);
        if path.is_relative() {
            return Err(format!(
                "{argv0} is a relative path, and hook commands run in /: give its absolute path"
            ));
        }
        return check_program(path).map(|()| path.to_owned());
    }
    let Some(path_var) = path_var.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "{argv0} is to be found in PATH, which is not set: give its absolute path"
        ));
    };
    let mut refused = None;
    for dir in std::env::split_paths(path_var).filter(|d| d.is_absolute()) {
        let candidate = dir.join(argv0);
        if !candidate.exists() {
            continue;
        }
        // Like execvp: one that cannot be run is passed over for the next.
        match check_program(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) => {
                refused.get_or_insert(why);
            }
        }
    }
    Err(refused.unwrap_or_else(|| {
        format!(
            "{argv0} is not found in PATH ({}): install it, or give its absolute path",
            path_var.to_string_lossy()
        )
    }))
}

fn check_program(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            format!("{shown} does not exist: check the path, or install the program there")
        }
        _ => format!("cannot look at {shown}: {e}"),
    })?;
    if meta.is_dir() {
        return Err(format!(
            "{shown} is a directory, not a program: name the program in it"
        ));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file: name a program"));
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|e| {
        format!(
            "{shown} is not executable ({e}): chmod +x it, or run it through its interpreter \
             (e.g. [\"/bin/sh\", \"{shown}\"])"
        )
    })
}
