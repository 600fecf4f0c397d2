//! Validation that collects every problem, each with the path to the field, what is wrong
//! and how to fix it — so a user fixes a config file in one pass, not one error per run.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path to the field: `integration[0].policy.retry.max_attempts`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.path, self.problem, self.fix)
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(Vec<ConfigProblem>);

impl ConfigProblems {
    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.0.iter()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a `ConfigProblems` holds at least one problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

impl From<ConfigProblems> for Error {
    fn from(problems: ConfigProblems) -> Self {
        let summary = problems.to_string();
        Error::new(ErrorKind::Config, summary)
            .with_hint("fix each field listed above")
            .with_source(problems)
    }
}

/// Collects problems while walking a configuration.
///
/// ```
/// use moodbridge_core::config::Validator;
///
/// let mut v = Validator::new();
/// v.nested("retry", |v| v.problem("max_attempts", "is 0", "set it to 1 or more"));
/// let problems = v.finish().unwrap_err();
/// assert_eq!(problems.iter().next().unwrap().path, "retry.max_attempts");
/// ```
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl Validator {
    /// An empty validator at the root.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a problem with `field` (relative to the current path).
    pub fn problem(
        &mut self,
        field: impl AsRef<str>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let mut path = self.path.join(".");
        let field = field.as_ref();
        if !field.is_empty() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
        }
        self.problems.push(ConfigProblem {
            path,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Validate a nested part under `segment`.
    pub fn nested<R>(
        &mut self,
        segment: impl Into<String>,
        f: impl FnOnce(&mut Validator) -> R,
    ) -> R {
        self.path.push(segment.into());
        let r = f(self);
        self.path.pop();
        r
    }

    /// `Ok` when no problem was found.
    pub fn finish(self) -> Result<(), ConfigProblems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigProblems(self.problems))
        }
    }
}

/// A configuration that can check itself.
pub trait Validate {
    /// Add every problem of `self` to `v`.
    fn validate_into(&self, v: &mut Validator);

    /// Check `self`; `Err` lists every problem.
    fn validate(&self) -> Result<(), ConfigProblems> {
        let mut v = Validator::new();
        self.validate_into(&mut v);
        v.finish()
    }
}
