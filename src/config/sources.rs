//! The two layers above the defaults: the TOML file and the `INGESTD_*`
//! environment, each as a figment provider, plus the bookkeeping that lets an
//! error say which file line or which variable a key came from.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::error::{ConfigError, ValueOrigin};

/// The environment as given to [`super::load_from`]; later duplicates win.
pub(crate) type EnvMap = BTreeMap<String, String>;

/// The figment metadata name of the environment layer.
const ENV_LAYER_NAME: &str = "INGESTD_* environment variables";
const ENV_PREFIX: &str = "INGESTD_";

/// Keys whose values are text: taken verbatim from the environment instead
/// of being parsed (so a token such as `007`, or a node `0042`, keeps its
/// leading zeros).
const TEXT_KEYS: [[&str; 2]; 7] = [
    ["api", "base_url"],
    ["api", "token"],
    ["api", "token_file"],
    ["journal", "path"],
    ["journal", "url"],
    ["journal", "password_file"],
    ["journal", "node"],
];

/// A path of keys into the configuration: `["watch", "0", "include"]`.
pub(crate) type KeyPath = [String];

/// `watch[0].include` for `["watch", "0", "include"]`.
pub(crate) fn display_key(path: &KeyPath) -> String {
    let mut out = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// The config file that was read.
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    text: String,
    dict: Dict,
}

impl ConfigFile {
    /// Finds and parses the config file: `explicit` (must exist), else
    /// `$INGESTD_CONFIG` (must exist), else `default_path` (optional).
    pub(crate) fn locate(
        explicit: Option<&Path>,
        env: &EnvMap,
        default_path: &Path,
    ) -> Result<Option<ConfigFile>, ConfigError> {
        let from_env = env
            .get("INGESTD_CONFIG")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        let (path, required) = match (explicit, from_env) {
            (Some(path), _) => (path.to_path_buf(), true),
            (None, Some(path)) => (path, true),
            (None, None) => (default_path.to_path_buf(), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => ConfigFile::parse(path, text).map(Some),
            Err(error) if !required && error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(ConfigError::ReadFile { path, error }),
        }
    }

    pub fn parse(path: PathBuf, text: String) -> Result<ConfigFile, ConfigError> {
        match Toml::from_str::<Dict>(&text) {
            Ok(dict) => Ok(ConfigFile { path, text, dict }),
            Err(error) => {
                // Only the position and the bare message: `Display` of the
                // parser error quotes the offending line, which could be the
                // token's.
                let (line, column) = match error.span() {
                    Some(span) => {
                        let (line, column) = line_column(&text, span.start);
                        (Some(line), Some(column))
                    }
                    None => (None, None),
                };
                Err(ConfigError::Syntax {
                    path,
                    line,
                    column,
                    message: error.message().trim().replace('\n', "; "),
                })
            }
        }
    }

    fn provider(&self) -> Layer {
        Layer {
            metadata: Metadata::from("TOML file", self.path.as_path()),
            dict: self.dict.clone(),
        }
    }

    /// Whether the file sets `path` (or something below it).
    fn sets(&self, path: &KeyPath) -> bool {
        let mut value: Option<&Value> = None;
        for (depth, segment) in path.iter().enumerate() {
            value = match (depth, value) {
                (0, _) => self.dict.get(segment),
                (_, Some(Value::Dict(_, dict))) => dict.get(segment),
                (_, Some(Value::Array(_, items))) => {
                    segment.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                _ => None,
            };
            if value.is_none() {
                return false;
            }
        }
        !path.is_empty()
    }

    fn origin(&self, path: &KeyPath) -> ValueOrigin {
        ValueOrigin::File {
            path: self.path.clone(),
            line: find_line(&self.text, path),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Best effort: the line of the TOML text that sets `path`, or the line of
/// the closest enclosing table. Handles `[table]`, `[[array]]`, plain and
/// dotted keys, which is what configuration files use; `None` when unsure.
fn find_line(text: &str, path: &KeyPath) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut array_counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut best: Option<(usize, usize)> = None; // (matched segments, line)
    let consider = |full: &[String], line: usize, best: &mut Option<(usize, usize)>| {
        let matched = full.len();
        if matched > 0
            && path.len() >= matched
            && path[..matched] == *full
            && best.is_none_or(|(m, _)| matched > m)
        {
            *best = Some((matched, line));
        }
    };
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw_line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("[[") {
            let Some(name) = rest.split("]]").next() else {
                continue;
            };
            let name = split_key(name);
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = name;
            table.push(count.to_string());
            *count += 1;
            consider(&table, line, &mut best);
        } else if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.split(']').next() else {
                continue;
            };
            table = split_key(name);
            consider(&table, line, &mut best);
        } else if !trimmed.starts_with('#') {
            if let Some((key, _)) = trimmed.split_once('=') {
                let mut full = table.clone();
                full.extend(split_key(key));
                consider(&full, line, &mut best);
            }
        }
    }
    best.map(|(_, line)| line)
}

fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\'').to_string())
        .collect()
}

/// The `INGESTD_SECTION__KEY` variables as a nested dict, and which variable
/// set which key.
pub(crate) struct EnvLayer {
    dict: Dict,
    vars: Vec<(Vec<String>, String)>,
}

impl EnvLayer {
    /// Only `INGESTD_` + `SECTION__KEY` counts; `INGESTD_CONFIG`,
    /// `INGESTD_API_KEY` and other single-underscore names belong to other
    /// commands and are left alone.
    pub fn parse(env: &EnvMap) -> Result<EnvLayer, ConfigError> {
        let mut layer = EnvLayer {
            dict: Dict::new(),
            vars: Vec::new(),
        };
        for (name, raw) in env {
            let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var: name.clone(),
                    message: "the name is malformed; use INGESTD_SECTION__KEY, e.g. INGESTD_API__CHUNK_SIZE".into(),
                });
            }
            if path[0] == "watch" {
                return Err(ConfigError::Env {
                    var: name.clone(),
                    message: "[[watch]] entries cannot be set from the environment \
                              (they form a list); define them in the config file"
                        .into(),
                });
            }
            let value = if TEXT_KEYS.iter().any(|key| path == key) {
                Value::from(raw.clone())
            } else {
                // Like figment's `Env`: `4` is an integer, `true` a bool,
                // anything else a string.
                raw.parse::<Value>().unwrap_or_else(|never| match never {})
            };
            if !insert_nested(&mut layer.dict, &path, value) {
                return Err(ConfigError::Env {
                    var: name.clone(),
                    message: format!(
                        "`{}` is set both as a value and as a section by different variables; remove one",
                        display_key(&path)
                    ),
                });
            }
            layer.vars.push((path, name.clone()));
        }
        Ok(layer)
    }

    fn provider(&self) -> Layer {
        Layer {
            metadata: Metadata::named(ENV_LAYER_NAME).interpolater(|_profile, keys| {
                format!("{ENV_PREFIX}{}", keys.join("__").to_uppercase())
            }),
            dict: self.dict.clone(),
        }
    }

    /// The variable that set `path`, something below it, or something above it.
    fn var_for(&self, path: &KeyPath) -> Option<&str> {
        self.vars
            .iter()
            .find(|(key, _)| key.as_slice() == path)
            .or_else(|| {
                self.vars
                    .iter()
                    .find(|(key, _)| key.starts_with(path) || path.starts_with(key))
            })
            .map(|(_, var)| var.as_str())
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// Inserts `value` at `path`; false if a non-table value is in the way.
fn insert_nested(dict: &mut Dict, path: &[String], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = dict;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        match entry {
            Value::Dict(_, inner) => current = inner,
            _ => return false,
        }
    }
    if matches!(current.get(last), Some(Value::Dict(..))) {
        return false;
    }
    current.insert(last.clone(), value);
    true
}

/// A parsed layer with its own metadata, so figment's tags tell which layer
/// a value came from.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Both layers, to build the figment and to say where a key came from.
pub(crate) struct Sources {
    pub file: Option<ConfigFile>,
    pub env: EnvLayer,
    /// Keys given as command-line options instead (`journal export --to`),
    /// each with its option: they beat both layers.
    pub arguments: Vec<(Vec<String>, String)>,
}

impl Sources {
    /// defaults (serde) → file → environment.
    pub(crate) fn figment(&self) -> figment::Figment {
        let mut figment = figment::Figment::new();
        if let Some(file) = &self.file {
            figment = figment.merge(file.provider());
        }
        figment.merge(self.env.provider())
    }

    /// Where the effective value of `path` came from: the environment beats
    /// the file, which beats the default.
    pub fn origin(&self, path: &KeyPath) -> ValueOrigin {
        if let Some((_, flag)) = self
            .arguments
            .iter()
            .find(|(key, _)| key.as_slice() == path)
        {
            return ValueOrigin::Argument { flag: flag.clone() };
        }
        if let Some(var) = self.env.var_for(path) {
            return ValueOrigin::Env {
                var: var.to_string(),
            };
        }
        match &self.file {
            Some(file) if file.sets(path) => file.origin(path),
            _ => ValueOrigin::Default,
        }
    }

    /// Where the value a figment error is about came from, using the error's
    /// own metadata when it has some.
    pub(crate) fn error_origin(&self, error: &figment::Error) -> ValueOrigin {
        let path = error.path.as_slice();
        match &error.metadata {
            Some(metadata) if metadata.name == ENV_LAYER_NAME => ValueOrigin::Env {
                var: self
                    .env
                    .var_for(path)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{ENV_PREFIX}{}", path.join("__").to_uppercase())),
            },
            Some(metadata) => match (&self.file, metadata.source.as_ref()) {
                (Some(file), Some(source)) if source.file_path() == Some(file.path.as_path()) => {
                    file.origin(path)
                }
                _ => self.origin(path),
            },
            None => self.origin(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Vec<String> {
        path.split('.').map(str::to_string).collect()
    }

    #[test]
    fn keys_display_with_array_indexes() {
        assert_eq!(display_key(&key("watch.1.include")), "watch[1].include");
        assert_eq!(display_key(&key("api.chunk_size")), "api.chunk_size");
    }

    #[test]
    fn lines_are_found_in_tables_arrays_and_dotted_keys() {
        let text = "\
# comment with chunk_size = 1
api.base_url = \"x\"

[api]
chunk_size = \"1MiB\"

[[watch]]
path = \"/a\"

[[watch]]
path = \"/b\"
include = [
  \"*.mp4\",
]
";
        assert_eq!(find_line(text, &key("api.base_url")), Some(2));
        assert_eq!(find_line(text, &key("api.chunk_size")), Some(5));
        assert_eq!(find_line(text, &key("watch.0.path")), Some(8));
        assert_eq!(find_line(text, &key("watch.1.path")), Some(11));
        assert_eq!(find_line(text, &key("watch.1.include.0")), Some(12));
        assert_eq!(find_line(text, &key("watch.1.settle")), Some(10));
        assert_eq!(find_line(text, &key("upload.concurrency")), None);
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_layer_nests_on_double_underscores_and_ignores_other_names() {
        let layer = EnvLayer::parse(&env(&[
            ("INGESTD_API__CHUNK_SIZE", "8MiB"),
            ("INGESTD_UPLOAD__CONCURRENCY", "4"),
            ("INGESTD_API__TOKEN", "007"),
            ("INGESTD_CONFIG", "/x.toml"),
            ("INGESTD_API_KEY", "k"),
            ("PATH", "/bin"),
        ]))
        .expect("valid");
        let api = layer.dict.get("api").and_then(Value::as_dict).expect("api");
        assert_eq!(api.get("chunk_size").and_then(Value::as_str), Some("8MiB"));
        assert_eq!(api.get("token").and_then(Value::as_str), Some("007"));
        let upload = layer
            .dict
            .get("upload")
            .and_then(Value::as_dict)
            .expect("upload");
        assert_eq!(upload.get("concurrency").and_then(Value::to_u128), Some(4));
        assert_eq!(layer.dict.len(), 2, "{:?}", layer.dict.keys());
        // Sizes with units stay strings for the size parser.
        for size in ["8 MiB", "1.5GiB", "1.5 GiB", "5MB"] {
            let value: Value = size.parse().unwrap_or_else(|never| match never {});
            assert_eq!(value.as_str(), Some(size));
        }
        assert_eq!(layer.var_for(&key("api.token")), Some("INGESTD_API__TOKEN"));
    }

    #[test]
    fn env_layer_rejects_watch_and_malformed_names() {
        for name in ["INGESTD_WATCH__PATH", "INGESTD___API", "INGESTD_API__"] {
            match EnvLayer::parse(&env(&[(name, "x")])) {
                Err(ConfigError::Env { var, .. }) => assert_eq!(var, name),
                other => panic!("{name}: {:?}", other.map(|_| ())),
            }
        }
    }
}
