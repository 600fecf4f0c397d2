//! A SOSL builder: `FIND {term} IN … RETURNING Object(fields), …`, the search term
//! escaped by SOSL's rules (a backslash before each of `? & | ! { } [ ] ( ) ^ ~ * : \ " '
//! + -`), every name checked.
//!
//! ```
//! use connector_salesforce::soql::{SearchScope, Sosl};
//! let q = Sosl::find("O'Brien & Sons")
//!     .in_scope(SearchScope::Name)
//!     .returning("Account", ["Id", "Name"])
//!     .returning("Contact", ["Id", "LastName"])
//!     .limit(20)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     q,
//!     "FIND {O\\'Brien \\& Sons} IN NAME FIELDS RETURNING Account(Id, Name), Contact(Id, LastName) LIMIT 20"
//! );
//! ```

use moodbridge_core::{Error, Result};

/// SOSL's reserved characters in a search term.
pub const SOSL_RESERVED: &str = "?&|!{}[]()^~*:\\\"'+-";

/// `term` with every reserved character escaped: it is searched for literally.
pub fn escape_sosl(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 8);
    for c in term.chars() {
        if SOSL_RESERVED.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Which fields a search looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    /// `ALL FIELDS` (the default).
    All,
    /// `NAME FIELDS`.
    Name,
    /// `EMAIL FIELDS`.
    Email,
    /// `PHONE FIELDS`.
    Phone,
}

/// A SOSL search being built.
#[derive(Debug, Clone, PartialEq)]
pub struct Sosl {
    term: String,
    scope: SearchScope,
    returning: Vec<(String, Vec<String>)>,
    limit: Option<u32>,
}

impl Sosl {
    /// Search for `term`, matched literally.
    pub fn find(term: &str) -> Sosl {
        Sosl {
            term: term.to_owned(),
            scope: SearchScope::All,
            returning: Vec::new(),
            limit: None,
        }
    }

    /// Look only in these fields.
    #[must_use]
    pub fn in_scope(mut self, scope: SearchScope) -> Sosl {
        self.scope = scope;
        self
    }

    /// Return records of `object` with `fields`.
    #[must_use]
    pub fn returning<S: Into<String>>(
        mut self,
        object: &str,
        fields: impl IntoIterator<Item = S>,
    ) -> Sosl {
        self.returning.push((
            object.to_owned(),
            fields.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// At most `n` records in all.
    #[must_use]
    pub fn limit(mut self, n: u32) -> Sosl {
        self.limit = Some(n);
        self
    }

    /// The search text, or an `InvalidInput` error (an empty or too short term, a bad name).
    pub fn build(&self) -> Result<String> {
        if self.term.trim().chars().count() < 2 {
            return Err(
                Error::invalid_input("a SOSL search term needs at least two characters")
                    .with_hint("search for a longer term"),
            );
        }
        let scope = match self.scope {
            SearchScope::All => "ALL",
            SearchScope::Name => "NAME",
            SearchScope::Email => "EMAIL",
            SearchScope::Phone => "PHONE",
        };
        let mut out = format!("FIND {{{}}} IN {scope} FIELDS", escape_sosl(&self.term));
        if !self.returning.is_empty() {
            out.push_str(" RETURNING ");
            let mut parts = Vec::with_capacity(self.returning.len());
            for (object, fields) in &self.returning {
                super::check_object(object)?;
                for f in fields {
                    super::check_field(f)?;
                }
                parts.push(if fields.is_empty() {
                    object.clone()
                } else {
                    format!("{object}({})", fields.join(", "))
                });
            }
            out.push_str(&parts.join(", "));
        }
        if let Some(n) = self.limit {
            out.push_str(&format!(" LIMIT {n}"));
        }
        Ok(out)
    }
}
