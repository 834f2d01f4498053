//! `ingestd token create|list|show|delete`: the command line of upload-token
//! management, where the API key is read from, and what is printed. The
//! requests themselves are `apivideo::tokens`'.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use reqwest::Url;

pub use crate::apivideo::tokens::{
    ApiKey, Operation, TokenClient, TokenError, UploadTokenInfo, API_KEY_ENV, MAX_TTL,
};

/// The API key from `file` (trimmed) if given, else from `env` (the value
/// of [`API_KEY_ENV`], trimmed). Taking the variable's value as an argument
/// keeps this testable without touching the process environment.
pub fn api_key_from(file: Option<&Path>, env: Option<OsString>) -> Result<ApiKey, TokenError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        return check_key(text.trim(), format!("in {}", path.display()));
    }
    let from = format!("in the {API_KEY_ENV} environment variable");
    match env {
        None => Err(TokenError::MissingKey),
        Some(value) => match value.into_string() {
            Ok(value) => check_key(value.trim(), from),
            Err(_) => Err(TokenError::BadKey {
                from,
                problem: "is not valid UTF-8",
            }),
        },
    }
}

/// [`api_key_from`] with the process's own `INGESTD_API_KEY`.
pub(crate) fn load_api_key(file: Option<&Path>) -> Result<ApiKey, TokenError> {
    api_key_from(file, std::env::var_os(API_KEY_ENV))
}

fn check_key(key: &str, from: String) -> Result<ApiKey, TokenError> {
    let problem = if key.is_empty() {
        "is empty"
    } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains whitespace or control characters (a stray line or a pasted label?)"
    } else {
        return Ok(ApiKey::new(key));
    };
    Err(TokenError::BadKey { from, problem })
}

/// `ingestd token …`: manage upload tokens with the account's API key.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an upload token and print its id
    Create {
        /// Seconds until the token expires (0 or absent: never)
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_TTL))]
        ttl: Option<u64>,
    },
    /// List every active upload token
    List,
    /// Show one upload token
    Show {
        /// The token id (to…)
        id: String,
    },
    /// Delete an upload token: uploads with it are refused from then on
    Delete {
        /// The token id (to…)
        id: String,
    },
}

/// The arguments of `ingestd token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// File holding the API key [default: the INGESTD_API_KEY environment variable]
    #[arg(long, value_name = "FILE", global = true)]
    pub api_key_file: Option<PathBuf>,
}

/// Runs `ingestd token …` against `base_url`; returns the text to print
/// (no trailing newline). The API key comes from `--api-key-file` or else
/// `INGESTD_API_KEY`.
pub async fn run(args: TokenArgs, base_url: Url) -> Result<String, TokenError> {
    let key = load_api_key(args.api_key_file.as_deref())?;
    run_with_key(args.command, key, base_url).await
}

/// [`run`] with the API key given.
pub async fn run_with_key(
    cmd: TokenCommand,
    key: ApiKey,
    base_url: Url,
) -> Result<String, TokenError> {
    let client = TokenClient::new(base_url, key)?;
    match cmd {
        TokenCommand::Create { ttl } => Ok(client.create(ttl).await?.token),
        TokenCommand::List => Ok(format_list(&client.list().await?)),
        TokenCommand::Show { id } => Ok(format_show(&client.show(&id).await?)),
        TokenCommand::Delete { id } => {
            client.delete(&id).await?;
            Ok(format!("deleted upload token {}", id.trim()))
        }
    }
}

fn expires_text(t: &UploadTokenInfo) -> &str {
    match (&t.expires_at, t.ttl) {
        (Some(at), _) => at,
        (None, 0) => "never",
        (None, _) => "-",
    }
}

/// A table: one line per token, with a header.
pub(crate) fn format_list(tokens: &[UploadTokenInfo]) -> String {
    if tokens.is_empty() {
        return "no active upload tokens".to_owned();
    }
    let rows: Vec<[String; 4]> = tokens
        .iter()
        .map(|t| {
            [
                t.token.clone(),
                t.ttl.to_string(),
                t.created_at.clone().unwrap_or_else(|| "-".to_owned()),
                expires_text(t).to_owned(),
            ]
        })
        .collect();
    let header = ["TOKEN", "TTL", "CREATED", "EXPIRES"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let line = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ");
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `key: value` line per field.
pub(crate) fn format_show(t: &UploadTokenInfo) -> String {
    let ttl = if t.ttl == 0 {
        "0 (never expires)".to_owned()
    } else {
        format!("{} s", t.ttl)
    };
    format!(
        "token:   {}\nttl:     {ttl}\ncreated: {}\nexpires: {}",
        t.token,
        t.created_at.as_deref().unwrap_or("-"),
        expires_text(t),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_sources() {
        assert!(matches!(
            api_key_from(None, None),
            Err(TokenError::MissingKey)
        ));
        let msg = TokenError::MissingKey.to_string();
        assert!(
            msg.contains(API_KEY_ENV) && msg.contains("--api-key-file"),
            "{msg}"
        );
        let k = api_key_from(None, Some(" k1 \n".into())).unwrap();
        assert_eq!(k.expose(), "k1");
        assert!(matches!(
            api_key_from(None, Some("  ".into())),
            Err(TokenError::BadKey { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "fromfile\n").unwrap();
        // The file wins over the variable.
        let k = api_key_from(Some(&path), Some("fromenv".into())).unwrap();
        assert_eq!(k.expose(), "fromfile");
        std::fs::write(&path, "two words\n").unwrap();
        let e = api_key_from(Some(&path), None).unwrap_err();
        assert!(!e.to_string().contains("two words"), "{e}");
        let e = api_key_from(Some(&dir.path().join("absent")), None).unwrap_err();
        assert!(matches!(e, TokenError::KeyFile { .. }), "{e:?}");
    }

    #[test]
    fn command_line_surface() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Top,
        }
        #[derive(clap::Subcommand)]
        enum Top {
            Token(TokenArgs),
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ingestd").chain(args.iter().copied())).map(|c| {
                match c.command {
                    Top::Token(t) => t,
                }
            })
        };
        let t = parse(&["token", "list", "--api-key-file", "k"]).unwrap();
        assert!(matches!(t.command, TokenCommand::List));
        assert_eq!(t.api_key_file, Some(PathBuf::from("k")));
        let t = parse(&["token", "--api-key-file", "k", "create", "--ttl", "5"]).unwrap();
        assert!(matches!(t.command, TokenCommand::Create { ttl: Some(5) }));
        let t = parse(&["token", "create"]).unwrap();
        assert!(matches!(t.command, TokenCommand::Create { ttl: None }));
        assert!(parse(&["token", "create", "--ttl", "2147483648"]).is_err());
        let t = parse(&["token", "delete", "toABC"]).unwrap();
        assert!(matches!(t.command, TokenCommand::Delete { ref id } if id == "toABC"));
        // There is no way to pass the key itself.
        assert!(parse(&["token", "list", "--api-key", "secret"]).is_err());
    }

    #[test]
    fn output_formats() {
        let never = UploadTokenInfo {
            token: "to1W3ZS9PdUBZWzzTEZr1B79".to_owned(),
            ttl: 0,
            created_at: Some("2020-12-02T10:26:28+00:00".to_owned()),
            expires_at: None,
        };
        let hour = UploadTokenInfo {
            token: "to37YfoPDRR2pcDKa6LsUE0M".to_owned(),
            ttl: 3600,
            created_at: Some("2020-12-02T10:26:46+00:00".to_owned()),
            expires_at: Some("2020-12-02T11:26:46+00:00".to_owned()),
        };
        assert_eq!(
            format_list(&[hour.clone(), never.clone()]),
            "TOKEN                     TTL   CREATED                    EXPIRES\n\
             to37YfoPDRR2pcDKa6LsUE0M  3600  2020-12-02T10:26:46+00:00  2020-12-02T11:26:46+00:00\n\
             to1W3ZS9PdUBZWzzTEZr1B79  0     2020-12-02T10:26:28+00:00  never"
        );
        assert_eq!(format_list(&[]), "no active upload tokens");
        assert_eq!(
            format_show(&never),
            "token:   to1W3ZS9PdUBZWzzTEZr1B79\nttl:     0 (never expires)\n\
             created: 2020-12-02T10:26:28+00:00\nexpires: never"
        );
        let parsed: UploadTokenInfo = serde_json::from_str(
            r#"{"token":"to1","ttl":0,"createdAt":"2020-12-02T10:26:28+00:00","expiresAt":null}"#,
        )
        .unwrap();
        assert_eq!(parsed.expires_at, None);
    }
}
