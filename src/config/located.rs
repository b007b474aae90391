//! Errors that name the file, the line and the key, and the value checks every section
//! uses, so that one rule is one function: an integer in a range, a clean absolute path,
//! a duration.

use crate::time;
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;

/// A configuration error, already phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The file being parsed, to turn byte spans into line numbers.
pub(crate) struct Located<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

impl Located<'_> {
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// `file:line: key: message`.
    pub(crate) fn error<T>(
        &self,
        span: &Range<usize>,
        key: &str,
        message: impl std::fmt::Display,
    ) -> Result<T, ConfigError> {
        Err(ConfigError(format!("{}:{}: {key}: {message}", self.file, self.line_of(span))))
    }

    /// An error about the file as a whole (two keys that go together, say).
    pub(crate) fn whole<T>(&self, message: impl std::fmt::Display) -> Result<T, ConfigError> {
        Err(ConfigError(format!("{}: {message}", self.file)))
    }

    /// An integer within `range`, as `T`.
    pub(crate) fn int<T>(
        &self,
        value: Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(v) = value else { return Ok(None) };
        match T::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => self.error(&v.span(), key, format!("must be between {} and {}", range.start(), range.end())),
        }
    }

    /// An absolute path without NUL bytes or `..` components.
    pub(crate) fn path(&self, value: Option<Spanned<String>>, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = value else { return Ok(None) };
        let text = p.get_ref();
        if !text.starts_with('/') || text.contains('\0') || text.split('/').any(|c| c == "..") {
            return self.error(&p.span(), key, "must be an absolute path without ..");
        }
        Ok(Some(PathBuf::from(p.into_inner())))
    }

    /// A duration such as `90s`, `10m`, `24h` or `7d`.
    pub(crate) fn duration(
        &self,
        value: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<std::time::Duration>, ConfigError> {
        let Some(v) = value else { return Ok(None) };
        time::parse_duration(v.get_ref()).map(Some).or_else(|e| self.error(&v.span(), key, e))
    }

    /// A name as `users.name_pattern`'s default allows it (group names).
    pub(crate) fn group(&self, value: Option<Spanned<String>>, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(g) = value else { return Ok(None) };
        if !super::users::is_default_name(g.get_ref()) {
            return self.error(&g.span(), key, "must be a group name");
        }
        Ok(Some(g.into_inner()))
    }
}
